import { describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import type { PathState } from '../../src/steps/file-state.js';
import { stepTypes } from '../../src/steps/registry.js';
import { editReplace, expand, replaceSchema, replaceStep } from '../../src/steps/replace/replace.js';
import type { StepContext } from '../../src/steps/step.js';
import { brief, loadIssues, yaml } from '../recipe/fixtures.js';

const env = { runId: 'R1', step: 'Mirror', backupDir: '/var/lib/hostsmith/backups/R1' };
const P = '/etc/apt/sources.list';
const params = (o: Record<string, unknown>) => replaceSchema.parse({ path: P, ...o });
const file = (content: string, mode = 0o644, owner = 'root', group = 'root'): PathState => ({ kind: 'file', content: Buffer.from(content), mode, owner, group, missing: [] });

const SRC = [
  'deb http://deb.debian.org/debian bookworm main',
  'deb http://deb.debian.org/debian bookworm-updates main',
  '# deb http://deb.debian.org/debian bookworm-backports main',
  'deb http://security.debian.org/debian-security bookworm-security main',
  '',
].join('\n');
const CONF = '[main]\nport=80\nhost=a\n[admin]\nport=81\nhost=b\n[other]\nport=82\n';

describe('editReplace: (params, text) → text and summary', () => {
  const cases: Array<[string, Record<string, unknown>, string, string | null, string | RegExp]> = [
    [
      'every match, with its line numbers',
      { regexp: 'deb\\.debian\\.org', replace: 'mirror.example.net' },
      SRC,
      SRC.replaceAll('deb.debian.org', 'mirror.example.net'),
      `replace 3 matches of /deb\\.debian\\.org/ (lines 1, 2, 3)`,
    ],
    ['nothing matches', { regexp: 'nope', replace: 'x' }, SRC, null, 'nothing matches /nope/'],
    ['the result is the same', { regexp: 'bookworm', replace: 'bookworm' }, SRC, null, '4 matches of /bookworm/ already read as wanted'],
    [
      'only matches that change are counted',
      { regexp: 'port=8\\d', replace: 'port=80' },
      CONF,
      CONF.replace('port=81', 'port=80').replace('port=82', 'port=80'),
      'replace 2 matches of /port=8\\d/ (lines 5, 8)',
    ],
    [
      'groups: $1, $2 and $<name>',
      { regexp: '^(\\w+)=(?<v>\\d+)$', replace: '$1 = $<v> ($2)' },
      'a=1\nb=x\nc=2\n',
      'a = 1 (1)\nb=x\nc = 2 (2)\n',
      'replace 2 matches of /^(\\w+)=(?<v>\\d+)$/ (lines 1, 3)',
    ],
    ['$& and $$', { regexp: 'cost', replace: '$$$&' }, 'cost 5\n', '$cost 5\n', /^replace 1 match of/],
    ['^ and $ are per line (the m flag)', { regexp: '^#\\s*(deb .*)$', replace: '$1' }, SRC, SRC.replace('# deb', 'deb'), /1 match .*\(line 3\)$/],
    ['an empty replacement removes', { regexp: '^#.*\\n' }, SRC, SRC.replace(/^#.*\n/m, ''), /^replace 1 match/],
    [
      'after: only the region after its first match',
      { regexp: '^port=\\d+', replace: 'port=8080', after: '^\\[admin\\]' },
      CONF,
      CONF.replace('port=81', 'port=8080').replace('port=82', 'port=8080'),
      'replace 2 matches of /^port=\\d+/ after line 4 (lines 5, 8)',
    ],
    [
      'before: only the region before its first match',
      { regexp: '^port=\\d+', replace: 'port=8080', before: '^\\[admin\\]' },
      CONF,
      CONF.replace('port=80', 'port=8080'),
      'replace 1 match of /^port=\\d+/ before line 4 (line 2)',
    ],
    [
      'after and before: between them',
      { regexp: '^(port|host)=.*$', replace: '$1=x', after: '^\\[admin\\]', before: '^\\[' },
      CONF,
      CONF.replace('port=81', 'port=x').replace('host=b', 'host=x'),
      'replace 2 matches of /^(port|host)=.*$/ after line 4 and before line 7 (lines 5, 6)',
    ],
    ['the match of before is not in the region', { regexp: 'x', replace: 'y', before: 'x' }, 'ax\nx\n', null, 'nothing matches /x/ before line 1'],
    ['the match of after is not in the region', { regexp: 'a', replace: 'b', after: 'a' }, 'aa\n', 'ab\n', 'replace 1 match of /a/ after line 1 (line 1)'],
    ['a bound that matches nothing: unchanged, and says so', { regexp: 'port', replace: 'p', after: '^\\[nope\\]' }, CONF, null, 'no region to replace in: after /^\\[nope\\]/ matches nothing'],
    ['nothing matches inside the bounds', { regexp: 'port=82', replace: 'p', before: '^\\[other\\]' }, CONF, null, 'nothing matches /port=82/ before line 7'],
    ['CRLF file: $ matches before the \\r, which stays', { regexp: '^(port)=\\d+$', replace: '$1=90' }, 'port=80\r\nhost=a\r\n', 'port=90\r\nhost=a\r\n', /\(line 1\)$/],
    ['no trailing newline stays so', { regexp: 'b$', replace: 'c' }, 'a\nb', 'a\nc', /\(line 2\)$/],
    ['many lines: the first eight, then a count', { regexp: 'x', replace: 'y' }, 'x\n'.repeat(10), 'y\n'.repeat(10), 'replace 10 matches of /x/ (lines 1, 2, 3, 4, 5, 6, 7, 8 and 2 more)'],
    ['two matches on a line name it once', { regexp: 'a', replace: 'b' }, 'aa\n', 'bb\n', 'replace 2 matches of /a/ (line 1)'],
  ];
  it.each(cases)('%s', (_n, o, text, next, what) => {
    const r = editReplace(text, params(o));
    expect(r.text).toBe(next);
    if (typeof what === 'string') expect(r.what).toBe(what);
    else expect(r.what).toMatch(what);
  });

  it('expands a replacement exactly as String.replace does', () => {
    const text = 'key=value; k2=v2';
    const re = /(\w)(\w*)=(?<v>\w+)/g;
    for (const t of ['$1', '$2$1', '$&!', '$$', '$`|', "$'|", '$<v>', '$<nope>', '$3', '$9', '$10', '$01', '$0', '$', 'plain', '$<v']) {
      const mine = text.replace(re, (...a: unknown[]) => {
        const named = a.pop() as Record<string, string>;
        const whole = a.pop() as string;
        const offset = a.pop() as number;
        const [m, ...caps] = a as string[];
        return expand(t, m!, caps, offset, whole, named);
      });
      expect(mine, t).toBe(text.replace(re, t));
    }
    // Without named groups, $<…> is text.
    expect(expand('$<v>', 'x', [], 0, 'x')).toBe('$<v>');
  });
});

describe('replace plan: (params, file state) → plan', () => {
  it('edits an existing file with a backup and a diff, no content in the undo', () => {
    const plan = replaceStep.plan(params({ regexp: 'deb\\.debian\\.org', replace: 'mirror' }), file(SRC, 0o640, 'root', 'adm'), env);
    expect(plan).toMatchObject({ changed: true, action: 'change', summary: `${P}: replace 3 matches of /deb\\.debian\\.org/ (lines 1, 2, 3)` });
    expect(plan.undo).toMatchObject({ kind: 'file', path: P, mode: 0o640, owner: 'root', group: 'adm' });
    expect((plan.undo as { backup: string }).backup).toMatch(/^\/var\/lib\/hostsmith\/backups\/R1\/Mirror-[0-9a-f]+\/etc\/apt\/sources\.list$/);
    expect(plan.diff).toContain('-deb http://deb.debian.org/debian bookworm main\n');
    expect(plan.diff).toContain('+deb http://mirror/debian bookworm main\n');
  });
  it('is unchanged, with no undo, when nothing matches', () => {
    expect(replaceStep.plan(params({ regexp: 'nope', replace: 'x' }), file(SRC), env)).toEqual({ changed: false, summary: `${P}: nothing matches /nope/`, undo: null });
  });
  it('metadata alone when nothing matches but the mode differs', () => {
    expect(replaceStep.plan(params({ regexp: 'nope', mode: '0600' }), file(SRC), env)).toMatchObject({ changed: true, summary: `${P}: mode 0644 → 0600` });
  });
  it('a missing file: a change once an earlier step creates it; apply fails if it is still missing', async () => {
    const absent: PathState = { kind: 'absent', missing: [] };
    const p = params({ regexp: 'a', replace: 'b' });
    const plan = replaceStep.plan(p, absent, env);
    expect(plan).toMatchObject({
      changed: true,
      summary: `${P} does not exist yet: will replace what matches /a/ once an earlier step creates it (apply fails if none does)`,
      undo: { kind: 'file', path: P },
    });
    const cmds: string[] = [];
    const exec = async (c: string) => {
      cmds.push(c);
      return { code: 0, stdout: '', stderr: '', stdoutRaw: Buffer.alloc(0) };
    };
    const ctx = { exec } as unknown as StepContext;
    await expect(replaceStep.apply(ctx, p, plan, absent)).rejects.toThrow(new StepError(`${P} does not exist; replace edits an existing file`));
    expect(cmds).toEqual([]);
  });
  it('refuses links, directories and binary files', () => {
    const p = params({ regexp: 'a' });
    expect(() => replaceStep.plan(p, { kind: 'link', target: '/etc/real', missing: [] }, env)).toThrow(/symlink to \/etc\/real/);
    expect(() => replaceStep.plan(p, { kind: 'directory', missing: [] }, env)).toThrow(/is a directory/);
    expect(() => replaceStep.plan(p, file('a\0b'), env)).toThrow(/replace edits only text files/);
  });
  it('quotes no old content in its summary (a secret may be in it)', () => {
    const plan = replaceStep.plan(params({ regexp: 'password=.*', replace: 'password=new' }), file('password=old-s3cret\n'), { ...env, sensitive: true });
    expect(plan.summary).not.toContain('old-s3cret');
  });
});

describe('replace: params → footprint and undo checks (as line)', () => {
  it('reads and writes its path', () => {
    expect(replaceStep.footprint(params({ regexp: 'x' }))).toEqual({ reads: [`path:${P}`], writes: [`path:${P}`] });
    expect(stepTypes.replace).toBe(replaceStep);
  });
  it('refuses undo data for another path', () => {
    expect(replaceStep.undoMismatch!(params({ regexp: 'x' }), { kind: 'file', path: '/etc/shadow' })).toMatch(/not the step's/);
    expect(replaceStep.undoMismatch!(params({ regexp: 'x' }), { kind: 'absent', path: P, created: ['/etc'] })).toBeUndefined();
  });
});

describe('replace schema', () => {
  const issues = (o: Record<string, unknown>) => {
    const r = replaceSchema.safeParse({ path: P, ...o });
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };
  it('needs a valid regexp; after and before are regexes too', () => {
    expect(issues({})).toEqual(['regexp: Required']);
    expect(issues({ regexp: '(' })).toEqual([expect.stringMatching(/^regexp: invalid regular expression/)]);
    expect(issues({ regexp: 'a', after: '[' })).toEqual([expect.stringMatching(/^after: invalid regular expression/)]);
    expect(issues({ regexp: 'a', before: '*' })).toEqual([expect.stringMatching(/^before: invalid regular expression/)]);
    expect(issues({ regexp: 'a', create: true })).toEqual([expect.stringMatching(/unrecognized key.*create/i)]);
    expect(issues({ regexp: 'a', path: 'etc/x' })).toEqual(['path: must be an absolute path']);
  });
  it('a bad regex is reported by the loader at its file:line', async () => {
    const got = await loadIssues({ 'recipe.yml': yaml('name: r', 'steps:', '  - name: A', '    replace:', '      path: /etc/x', '      regexp: "a(b"', '      replace: c') });
    expect(got.map(brief)).toEqual([expect.stringMatching(/^6:\d+ steps\[0\]\.replace\.regexp: invalid regular expression: .*Unterminated group/)]);
  });
});
