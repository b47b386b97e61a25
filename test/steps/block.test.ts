import { describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import type { PathState } from '../../src/steps/file-state.js';
import { blockSchema, blockStep, editBlock, markersOf } from '../../src/steps/block/block.js';
import { stepTypes } from '../../src/steps/registry.js';
import { HIDDEN_OLD } from '../../src/steps/step.js';
import { brief, loadIssues, yaml } from '../recipe/fixtures.js';

const env = { runId: 'R1', step: 'NTP servers', backupDir: '/var/lib/hostsmith/backups/R1' };
const P = '/etc/ntp.conf';
const BACKUP = '/var/lib/hostsmith/backups/R1/NTP_servers-';
const params = (o: Record<string, unknown>) => blockSchema.parse({ path: P, ...o });
const named = (o: Record<string, unknown>) => ({ ...params(o), step: env.step });
const file = (content: string, mode = 0o644, owner = 'root', group = 'root'): PathState => ({ kind: 'file', content: Buffer.from(content), mode, owner, group, missing: [] });

const B = '# BEGIN MANAGED BY hostsmith: NTP servers';
const E = '# END MANAGED BY hostsmith: NTP servers';
const CONF = 'driftfile /var/lib/ntp/drift\n# servers\nrestrict default\n';
const WITH = (body: string, before = 'driftfile /var/lib/ntp/drift\n', after = '# servers\nrestrict default\n') => `${before}${B}\n${body}${E}\n${after}`;

describe('block markers', () => {
  it('default to the step name, or an explicit name; a marker of its own holds {mark}', () => {
    expect(markersOf(named({ block: 'x' }))).toEqual({ begin: B, end: E });
    expect(markersOf(named({ block: 'x', name: 'ntp' }))).toEqual({ begin: '# BEGIN MANAGED BY hostsmith: ntp', end: '# END MANAGED BY hostsmith: ntp' });
    expect(markersOf(named({ block: 'x', marker: '<!-- {mark} app -->' }))).toEqual({ begin: '<!-- BEGIN app -->', end: '<!-- END app -->' });
  });
  it('refuse a step name of more than one line (the markers would never be found again)', () => {
    expect(() => markersOf({ ...params({ block: 'x' }), step: 'a\nb' })).toThrow(/more than one line/);
  });
});

describe('editBlock: (params, text) → text and summary', () => {
  const cases: Array<[string, Record<string, unknown>, string, string | null, string | RegExp]> = [
    ['adds at the end', { block: 'server a\nserver b\n' }, CONF, `${CONF}${B}\nserver a\nserver b\n${E}\n`, `add block "${B}" (2 lines) at the end`],
    ['already there is unchanged', { block: 'server a\nserver b\n' }, WITH('server a\nserver b\n'), null, `block "${B}" at lines 2–5 is as wanted`],
    ['a block without a final newline is the same block', { block: 'server a\nserver b' }, WITH('server a\nserver b\n'), null, /is as wanted/],
    ['markers with other text between: replaced in place', { block: 'server c\n' }, WITH('server a\nserver b\n'), WITH('server c\n'), `replace block "${B}" at lines 2–5 (2 lines → 1 line)`],
    ['markers with nothing between: filled in place', { block: 'server a\n' }, WITH(''), WITH('server a\n'), `replace block "${B}" at lines 2–3 (0 lines → 1 line)`],
    [
      'insertafter: after the last matching line',
      { block: 'server a', insertafter: '^(driftfile|# servers)' },
      CONF,
      WITH('server a\n', 'driftfile /var/lib/ntp/drift\n# servers\n', 'restrict default\n'),
      `add block "${B}" (1 line) after line 2`,
    ],
    [
      'insertbefore: before the last matching line',
      { block: 'server a', insertbefore: '^restrict' },
      CONF,
      WITH('server a\n', 'driftfile /var/lib/ntp/drift\n# servers\n', 'restrict default\n'),
      /before line 3$/,
    ],
    ['insertbefore: BOF', { block: 'server a', insertbefore: 'BOF' }, CONF, WITH('server a\n', '', CONF), /at the beginning$/],
    ['insertafter: EOF', { block: 'server a', insertafter: 'EOF' }, CONF, `${CONF}${B}\nserver a\n${E}\n`, /\(1 line\) at the end$/],
    ['insertafter matching nothing: at the end, and says so', { block: 'server a', insertafter: '^nope' }, CONF, `${CONF}${B}\nserver a\n${E}\n`, /at the end \(no line matches \/\^nope\/\)$/],
    ['insertafter is not used when the markers are there', { block: 'server c', insertafter: '^restrict' }, WITH('server a\n'), WITH('server c\n'), /^replace block .* at lines 2–4/],
    ['CRLF file: new lines get CRLF', { block: 'server a\n' }, 'a\r\nb\r\n', `a\r\nb\r\n${B}\r\nserver a\r\n${E}\r\n`, /at the end$/],
    ['CRLF file: an existing block compares without its \\r', { block: 'server a' }, `a\r\n${B}\r\nserver a\r\n${E}\r\n`, null, /is as wanted/],
    ['CRLF file: replaced in place keeps CRLF', { block: 'x' }, `a\r\n${B}\r\nold\r\n${E}\r\nz\r\n`, `a\r\n${B}\r\nx\r\n${E}\r\nz\r\n`, /^replace block/],
    ['no trailing newline: the last line is ended before the block', { block: 'server a' }, 'a', `a\n${B}\nserver a\n${E}\n`, /at the end$/],
    ['no trailing newline after the END marker: still none after the replaced block', { block: 'new' }, `a\n${B}\nold\n${E}`, `a\n${B}\nnew\n${E}`, /^replace block/],
    ['an empty file', { block: 'x' }, '', `${B}\nx\n${E}\n`, /at the end$/],
    ['absent: removes the markers and the block', { state: 'absent' }, WITH('server a\nserver b\n'), CONF, `remove block "${B}" at lines 2–5 (2 lines and its markers)`],
    ['absent: nothing to remove', { state: 'absent' }, CONF, null, `no block "${B}"`],
    ['absent: a block at the end of a file without final newline', { state: 'absent' }, `a\n${B}\nx\n${E}`, 'a\n', /^remove block/],
    ['another marker is another block', { block: 'x', marker: '; {mark} php' }, WITH('server a\n'), `${WITH('server a\n')}; BEGIN php\nx\n; END php\n`, /^add block "; BEGIN php"/],
  ];
  it.each(cases)('%s', (_n, o, text, next, what) => {
    const r = editBlock(text, named(o));
    expect(r.text).toBe(next);
    if (typeof what === 'string') expect(r.what).toBe(what);
    else expect(r.what).toMatch(what);
  });

  it('half a block (a BEGIN without END, or an END alone) is refused, naming the line', () => {
    expect(() => editBlock(`a\n${B}\nx\n`, named({ block: 'x' }))).toThrow(new StepError(`${P}: line 2 is the block's BEGIN marker "${B}" with no END marker after it; fix the file by hand`));
    expect(() => editBlock(`a\n${E}\n`, named({ state: 'absent' }))).toThrow(/line 2 is the block's END marker .* with no BEGIN marker before it/);
  });
  it('a block that holds its own marker line is refused', () => {
    expect(() => editBlock('', named({ block: `x\n${E}\ny` }))).toThrow(/holds its own marker line/);
  });
});

describe('block plan: (params, file state) → plan', () => {
  it('edits an existing file with a backup and a diff, no content in the undo', () => {
    const plan = blockStep.plan(params({ block: 'server a\n' }), file(CONF, 0o640, 'root', 'ntp'), env);
    expect(plan).toMatchObject({ changed: true, action: 'change', summary: `${P}: add block "${B}" (1 line) at the end` });
    expect(plan.undo).toMatchObject({ kind: 'file', path: P, mode: 0o640, owner: 'root', group: 'ntp' });
    expect((plan.undo as { backup: string }).backup.startsWith(BACKUP)).toBe(true);
    expect(plan.diff).toContain('--- a/etc/ntp.conf');
    expect(plan.diff).toContain(`+${B}\n+server a\n+${E}`);
  });
  it('is unchanged, with no undo, when the block is there', () => {
    expect(blockStep.plan(params({ block: 'server a' }), file(WITH('server a\n')), env)).toEqual({ changed: false, summary: `${P}: block "${B}" at lines 2–4 is as wanted`, undo: null });
  });
  it('the name in the marker is the step name the plan is for (or name:)', () => {
    const plan = blockStep.plan(params({ block: 'x' }), file(''), { ...env, step: 'Other' });
    expect(plan.summary).toContain('"# BEGIN MANAGED BY hostsmith: Other"');
  });
  it('only metadata when the block is there and the mode is not', () => {
    const plan = blockStep.plan(params({ block: 'server a', mode: '0600' }), file(WITH('server a\n')), env);
    expect(plan).toMatchObject({ changed: true, summary: `${P}: mode 0644 → 0600`, undo: { kind: 'file', mode: 0o644 } });
    expect((plan.undo as { backup?: string }).backup).toBeUndefined();
  });
  it('a missing file: created with create: true (rollback removes it and its folders)', () => {
    const plan = blockStep.plan(params({ path: '/opt/app/x.conf', block: 'a=1', create: true }), { kind: 'absent', missing: ['/opt/app'] }, env);
    expect(plan).toMatchObject({ changed: true, action: 'create', summary: `create /opt/app/x.conf with block "${B}" (1 line)` });
    expect(plan.undo).toEqual({ kind: 'absent', path: '/opt/app/x.conf', created: ['/opt/app'] });
    expect(plan.diff).toContain(`+${B}\n+a=1\n+${E}`);
  });
  it('a missing file without create: a change once an earlier step makes it; absent: nothing to do', () => {
    const absent: PathState = { kind: 'absent', missing: [] };
    expect(blockStep.plan(params({ block: 'a' }), absent, env)).toMatchObject({
      changed: true,
      summary: `${P} does not exist yet: will add block "${B}" (1 line) once an earlier step creates it (apply fails if none does)`,
      undo: { kind: 'file', path: P },
    });
    expect(blockStep.plan(params({ state: 'absent' }), absent, env)).toEqual({ changed: false, summary: `${P} does not exist`, undo: null });
  });
  it('refuses links, directories and binary files', () => {
    expect(() => blockStep.plan(params({ block: 'a' }), { kind: 'link', target: '/etc/real', missing: [] }, env)).toThrow(/symlink to \/etc\/real/);
    expect(() => blockStep.plan(params({ block: 'a' }), { kind: 'directory', missing: [] }, env)).toThrow(/is a directory/);
    expect(() => blockStep.plan(params({ block: 'a' }), file('a\0b'), env)).toThrow(/not a text file .*block edits only text files/);
  });
  it('summaries quote no old content (a secret may be in it), even when replacing', () => {
    const plan = blockStep.plan(params({ block: 'password=new' }), file(WITH('password=old-s3cret\n')), { ...env, sensitive: true });
    expect(plan.summary).not.toContain('old-s3cret');
    expect(plan.summary).not.toContain(HIDDEN_OLD);
  });
});

describe('block: params → footprint and undo checks (as line)', () => {
  it('reads and writes its path', () => {
    expect(blockStep.footprint(params({ block: 'x' }))).toEqual({ reads: [`path:${P}`], writes: [`path:${P}`] });
    expect(stepTypes.block).toBe(blockStep);
  });
  it('refuses undo data for another path or backup', () => {
    expect(blockStep.undoMismatch!(params({ block: 'x' }), { kind: 'file', path: '/etc/shadow' })).toMatch(/not the step's/);
    expect(blockStep.undoMismatch!(params({ block: 'x' }), { kind: 'file', path: P, backup: `${BACKUP}1/etc/passwd` })).toMatch(/not the backup of/);
    expect(blockStep.undoMismatch!(params({ block: 'x' }), { kind: 'file', path: P, backup: `${BACKUP}1${P}` })).toBeUndefined();
  });
  it('says what its rollback does', () => {
    expect(blockStep.undoSummary!({ kind: 'file', path: P, backup: `/b/hostsmith/backups/x${P}` })).toBe(`put back file ${P} from the backup /b/hostsmith/backups/x${P}`);
  });
});

describe('block schema', () => {
  const issues = (o: Record<string, unknown>) => {
    const r = blockSchema.safeParse({ path: P, ...o });
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };
  it('checks fields and their combinations', () => {
    expect(issues({})).toEqual(['block: block is required with state: present']);
    expect(issues({ state: 'absent' })).toEqual([]);
    expect(issues({ block: 'x', insertafter: '(' })).toEqual([expect.stringMatching(/^insertafter: invalid regular expression/)]);
    expect(issues({ block: 'x', insertafter: 'a', insertbefore: 'b' })).toEqual(['insertbefore: give insertafter or insertbefore, not both']);
    expect(issues({ block: 'x', marker: '# managed' })).toEqual(['marker: marker must hold {mark} (it becomes BEGIN and END, so the two markers differ)']);
    expect(issues({ block: 'x', marker: '# {mark}\nx' })).toEqual(['marker: marker must be a single line (no newline)']);
    expect(issues({ block: 'x', marker: '# {mark}', name: 'n' })).toEqual(['name: name only goes into the default marker: give marker or name, not both']);
    expect(issues({ state: 'absent', block: 'x', create: true })).toEqual([expect.stringMatching(/^block: block is only for state: present/), 'create: create is only for state: present']);
    expect(issues({ block: 'x', after: 'y' })).toEqual([expect.stringMatching(/unrecognized key.*after/i)]);
  });
  it('a bad regex is reported by the loader at its file:line', async () => {
    const got = await loadIssues({ 'recipe.yml': yaml('name: r', 'steps:', '  - name: A', '    block: { path: /etc/x, block: y, insertafter: "(" }') });
    expect(got.map(brief)).toEqual([expect.stringMatching(/^4:\d+ steps\[0\]\.block\.insertafter: invalid regular expression/)]);
  });
});
