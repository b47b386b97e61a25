import { describe, expect, it } from 'vitest';
import { editLines, lineSchema, lineStep, planLine } from '../../src/steps/line/line.js';
import { parseCheck, type PathState } from '../../src/steps/file-state.js';
import { StepError } from '../../src/errors.js';
import type { StepContext } from '../../src/steps/step.js';

const env = { runId: 'R1', step: 'Harden ssh', backupDir: '/var/lib/hostsmith/backups/R1' };
const P = '/etc/ssh/sshd_config';
const params = (o: Record<string, unknown>) => lineSchema.parse({ path: P, ...o });
const file = (content: string, mode = 0o640, owner = 'root', group = 'adm'): PathState => ({ kind: 'file', content: Buffer.from(content), mode, owner, group, missing: [] });

/** A host whose check finds `at` at every path; records commands and writes. */
function fakeHost(at: { kind: 'absent' } | { kind: 'file'; content: string }) {
  const cmds: string[] = [];
  const writes: Array<{ path: string; data: string }> = [];
  // What checkScript prints: six NUL-terminated fields, then a file's bytes.
  const header = at.kind === 'absent' ? 'absent\x00\x00\x00\x000\x00\x00' : `file\x00644\x00root\x00root\x000\x00\x00${at.content}`;
  const ctx = {
    backupDir: env.backupDir,
    exec: async (cmd: string, o: { stdin?: Buffer } = {}) => {
      cmds.push(cmd);
      // applyPath writes in its one script: the atomic write's rename names the path.
      // The write enters the folder (hs_cd, or hs_mkcd making it) and writes the bare name there.
      const mv = /hs_(?:mk)?cd '?([^'\s]+)'? .*\nhs_write '?([^'\s]+)'?/.exec(cmd);
      if (mv) writes.push({ path: `${mv[1] === '/' ? '' : mv[1]}/${mv[2]}`, data: (o.stdin ?? Buffer.alloc(0)).toString('utf8') });
      const out = cmds.length === 1 ? Buffer.from(header) : Buffer.alloc(0);
      return { code: 0, stdout: out.toString(), stderr: '', stdoutRaw: out };
    },
    writeFile: async (path: string, data: Buffer) => {
      writes.push({ path, data: data.toString('utf8') });
    },
  } as unknown as StepContext;
  return { ctx, cmds, writes };
}

const SSHD = '# sshd\nPort 22\n#PermitRootLogin prohibit-password\nPermitRootLogin yes\nUsePAM yes\n';

describe('editLines: (params, text) → text', () => {
  const cases: Array<[string, Record<string, unknown>, string, string | null, string | RegExp]> = [
    [
      'replaces the last matching line',
      { line: 'PermitRootLogin no', match: '^#?PermitRootLogin' },
      SSHD,
      SSHD.replace('PermitRootLogin yes', 'PermitRootLogin no'),
      'replace line 4 "PermitRootLogin yes" with "PermitRootLogin no"',
    ],
    ['leaves a matching line that already reads right', { line: 'PermitRootLogin yes', match: '^PermitRootLogin' }, SSHD, null, 'line 4 is "PermitRootLogin yes"'],
    ['without a match, a line already there is enough', { line: 'UsePAM yes', match: '^NoSuch' }, SSHD, null, 'line 5 is "UsePAM yes"'],
    ['adds at the end when nothing matches', { line: 'X11Forwarding no', match: '^X11Forwarding' }, SSHD, `${SSHD}X11Forwarding no\n`, 'add "X11Forwarding no" at the end'],
    ['adds a missing line at the end', { line: 'X11Forwarding no' }, SSHD, `${SSHD}X11Forwarding no\n`, /at the end$/],
    ['leaves an existing equal line', { line: 'Port 22' }, SSHD, null, 'line 2 is "Port 22"'],
    ['does not take a line that only contains it', { line: 'Port 2' }, SSHD, `${SSHD}Port 2\n`, /^add/],
    [
      'inserts after the last line matching after',
      { line: 'Port 2222', after: '^(#|Port)' },
      SSHD,
      SSHD.replace('#PermitRootLogin prohibit-password\n', '#PermitRootLogin prohibit-password\nPort 2222\n'),
      'add "Port 2222" after line 3',
    ],
    ['inserts at the end when after matches nothing', { line: 'A', after: '^Nope' }, 'x\n', 'x\nA\n', 'add "A" at the end (no line matches /^Nope/)'],
    ['ends the last line before appending to a file without final newline', { line: 'b' }, 'a', 'a\nb\n', /at the end/],
    ['keeps a missing final newline when replacing the last line', { line: 'k=2', match: '^k=' }, 'a\nk=1', 'a\nk=2', /replace line 2/],
    ['keeps CRLF line ends', { line: 'b', after: '^a' }, 'a\r\nc\r\n', 'a\r\nb\r\nc\r\n', /after line 1/],
    ['compares CRLF lines without their \\r', { line: 'a' }, 'a\r\n', null, /line 1 is/],
    ['adds to an empty file', { line: 'only' }, '', 'only\n', /at the end/],
    ['removes every equal line', { line: 'x', state: 'absent' }, 'x\ny\nx\nxx\n', 'y\nxx\n', 'remove 2 lines equal to "x"'],
    ['removes lines matching match', { match: '^#', state: 'absent' }, SSHD, 'Port 22\nPermitRootLogin yes\nUsePAM yes\n', 'remove 2 lines matching /^#/'],
    ['absent and nothing to remove', { line: 'nope', state: 'absent' }, SSHD, null, 'no line equal to "nope"'],
    ['removing the last unterminated line keeps the rest as it was', { line: 'b', state: 'absent' }, 'a\nb', 'a\n', /remove 1 line equal/],
  ];
  it.each(cases)('%s', (_n, o, text, next, what) => {
    const r = editLines(text, params(o));
    expect(r.text).toBe(next);
    if (typeof what === 'string') expect(r.what).toBe(what);
    else expect(r.what).toMatch(what);
  });
});

describe('line plan: (params, file state) → plan', () => {
  it('edits an existing file with a backup, no content in the undo', () => {
    const plan = lineStep.plan(params({ line: 'PermitRootLogin no', match: '^PermitRootLogin' }), file(SSHD), env);
    expect(plan).toMatchObject({ changed: true, summary: `${P}: replace line 4 "PermitRootLogin yes" with "PermitRootLogin no"` });
    expect(plan.undo).toEqual({ kind: 'file', path: P, mode: 0o640, owner: 'root', group: 'adm', backup: '/var/lib/hostsmith/backups/R1/Harden_ssh-80ee2432/etc/ssh/sshd_config' });
    expect(plan.diff).toContain('--- a/etc/ssh/sshd_config');
    expect(plan.diff).toContain('-PermitRootLogin yes');
    expect(plan.diff).toContain('+PermitRootLogin no');
  });
  it('is unchanged without undo when the line is there', () => {
    expect(lineStep.plan(params({ line: 'Port 22' }), file(SSHD), env)).toEqual({ changed: false, summary: `${P}: line 2 is "Port 22"`, undo: null });
  });
  it('plans a missing file (an earlier step may create it) instead of failing, unless create is set', () => {
    const absent: PathState = { kind: 'absent', missing: [] };
    const backup = '/var/lib/hostsmith/backups/R1/Harden_ssh-80ee2432/etc/ssh/sshd_config';
    expect(lineStep.plan(params({ line: 'a' }), absent, env)).toEqual({
      changed: true,
      summary: `${P} does not exist yet: will add "a" once an earlier step creates it (apply fails if none does)`,
      undo: { kind: 'file', path: P, backup },
    });
    expect(lineStep.plan(params({ line: '\trotate 30', match: '^\\s*rotate\\s' }), absent, env)).toMatchObject({
      changed: true,
      summary: `${P} does not exist yet: will set the line matching /^\\s*rotate\\s/ to "\\trotate 30" once an earlier step creates it (apply fails if none does)`,
    });
    expect(lineStep.plan(params({ line: 'a', state: 'absent' }), absent, env)).toEqual({ changed: false, summary: `${P} does not exist`, undo: null });
  });
  it('apply on a file still missing at its turn is the clear error, and nothing is written', async () => {
    const fake = fakeHost({ kind: 'absent' });
    const p = params({ line: 'a' });
    const absent: PathState = { kind: 'absent', missing: [] };
    const plan = lineStep.plan(p, absent, env);
    await expect(lineStep.apply(fake.ctx, p, plan, absent)).rejects.toThrow(new StepError(`${P} does not exist; set create: true to create it`));
    expect(fake.cmds).toEqual([]);
    expect(fake.writes).toEqual([]);
  });
  it('apply edits the file as checked at its turn (an earlier step created it), after backing it up where the undo says', async () => {
    const fake = fakeHost({ kind: 'file', content: 'x\n' });
    const p = params({ line: 'a' });
    const now: PathState = { kind: 'file', mode: 0o644, owner: 'root', group: 'root', content: Buffer.from('x\n'), missing: [] };
    const plan = lineStep.plan(p, now, env);
    await lineStep.apply(fake.ctx, p, plan, now);
    expect(fake.cmds[0]).toContain(`cp -a -- ${P.slice(P.lastIndexOf('/') + 1)} ${(plan.undo as { backup: string }).backup}`);
    expect(fake.writes).toEqual([{ path: P, data: 'x\na\n' }]);
  });
  it('creates the file (and parents) with create: true; rollback removes them', () => {
    const plan = lineStep.plan(lineSchema.parse({ path: '/opt/app/conf/x.conf', line: 'a=1', create: true }), { kind: 'absent', missing: ['/opt/app', '/opt/app/conf'] }, env);
    expect(plan).toMatchObject({ changed: true, summary: 'create /opt/app/conf/x.conf with "a=1"' });
    expect(plan.undo).toEqual({ kind: 'absent', path: '/opt/app/conf/x.conf', created: ['/opt/app', '/opt/app/conf'] });
    expect(plan.diff).toContain('+a=1');
  });
  it('refuses links, directories and binary files with a clear message', () => {
    expect(() => lineStep.plan(params({ line: 'a' }), { kind: 'link', target: '/etc/real', missing: [] }, env)).toThrow(/symlink to \/etc\/real; give the real file/);
    expect(() => lineStep.plan(params({ line: 'a' }), { kind: 'directory', missing: [] }, env)).toThrow(/is a directory/);
    expect(() => lineStep.plan(params({ line: 'a' }), file('a\0b'), env)).toThrow(/not a text file/);
  });
  it('plans from what the check script prints', () => {
    const raw = Buffer.concat([Buffer.from('file\x00600\x00www-data\x00www-data\x000\x00\x00'), Buffer.from('k=1\n')]);
    const plan = lineStep.plan(params({ line: 'k=2', match: '^k=' }), parseCheck(raw, P), env);
    expect(plan.undo).toMatchObject({ kind: 'file', mode: 0o600, owner: 'www-data', group: 'www-data' });
    expect(plan.summary).toBe(`${P}: replace line 1 "k=1" with "k=2"`);
  });
});

describe('line schema', () => {
  const issues = (o: Record<string, unknown>) => {
    const r = lineSchema.safeParse({ path: P, ...o });
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };
  it('needs line when present, line or match when absent', () => {
    expect(issues({})).toEqual(['line: line is required with state: present']);
    expect(issues({ state: 'absent' })).toEqual(['line: state: absent needs line or match (the lines to remove)']);
    expect(issues({ state: 'absent', match: '^x' })).toEqual([]);
  });
  it('checks regexes, single lines, paths and field combinations', () => {
    expect(issues({ line: 'a', match: '(' })).toEqual([expect.stringMatching(/^match: invalid regular expression/)]);
    expect(issues({ line: 'a', after: '[' })).toEqual([expect.stringMatching(/^after: invalid regular expression/)]);
    expect(issues({ line: 'a\nb' })).toEqual(['line: line must be a single line (no newline)']);
    expect(issues({ line: 'a', path: 'etc/x' })).toEqual(['path: must be an absolute path']);
    expect(issues({ state: 'absent', line: 'a', after: 'x', create: true })).toEqual(['after: after is only for state: present', 'create: create is only for state: present']);
    expect(issues({ line: 'a', insertafter: 'x' })).toEqual([expect.stringMatching(/insertafter/)]);
  });
});

describe('line metadata (mode, owner, group)', () => {
  const env = { runId: 'R', step: 'Sudoers', backupDir: '/var/lib/hostsmith/backups/R' };
  const st = (content: string, mode = 0o644): PathState => ({ kind: 'file', content: Buffer.from(content), mode, owner: 'root', group: 'root', missing: [] });
  it('changes only the mode when the line is already there', () => {
    const p = lineSchema.parse({ path: '/etc/sudoers.d/x', line: 'a ALL=(ALL) ALL', mode: '0440' });
    const plan = planLine(p, st('a ALL=(ALL) ALL\n'), env);
    expect(plan).toMatchObject({ changed: true, summary: '/etc/sudoers.d/x: mode 0644 → 0440', undo: { kind: 'file', mode: 0o644, owner: 'root', group: 'root' } });
    expect((plan.undo as { backup?: string }).backup).toBeUndefined();
  });
  it('is unchanged when line and mode are as wanted', () => {
    const p = lineSchema.parse({ path: '/etc/x', line: 'a', mode: 440 });
    expect(planLine(p, st('a\n', 0o440), env).changed).toBe(false);
  });
  it('names the metadata change next to the content change', () => {
    const p = lineSchema.parse({ path: '/etc/x', line: 'b', owner: 'www' });
    expect(planLine(p, st('a\n'), env).summary).toMatch(/; owner root → www$/);
  });
});

describe('a byte-order mark in a host file', () => {
  it('is kept: the edited text is written back with it', async () => {
    const { textOf } = await import('../../src/steps/text-edit.js');
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('a=1\n')]);
    const text = textOf('/etc/x.conf', bom, 'line');
    expect(text.charCodeAt(0)).toBe(0xfeff);
    expect(Buffer.from(editLines(text, params({ line: 'b=2' })).text!, 'utf8').subarray(0, 3)).toEqual(Buffer.from([0xef, 0xbb, 0xbf]));
  });
});
