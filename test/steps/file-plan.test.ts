import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupFolder, backupPath } from '../../src/steps/backup.js';
import { applyPath, checkScript, planPath, parseCheck, type PathState, type Wanted } from '../../src/steps/file-state.js';
import { fileSchema, fileStep } from '../../src/steps/file/file.js';
import type { StepContext } from '../../src/steps/step.js';

const env = { runId: 'R1', step: 'Site config', backupDir: '/var/lib/hostsmith/backups/R1' };
const file = (content: string, mode = 0o644, owner = 'root', group = 'root'): PathState => ({
  kind: 'file',
  content: Buffer.from(content),
  mode,
  owner,
  group,
  missing: [],
});
const absent = (missing: string[] = []): PathState => ({ kind: 'absent', missing });
const want = (w: Partial<Wanted>): Wanted => ({ path: '/etc/app.conf', state: 'present', ...w });

/** A host that records what it is asked to run and write, and says yes to all of it. */
function fakeCtx() {
  const cmds: string[] = [];
  const writes: Array<{ path: string; data: string }> = [];
  const ctx = {
    exec: async (cmd: string, o: { stdin?: Buffer } = {}) => {
      cmds.push(cmd);
      // applyPath writes in its one script: the atomic write's rename names the path.
      // The write enters the folder (hs_cd, or hs_mkcd making it) and writes the bare name there.
      const mv = /hs_(?:mk)?cd '?([^'\s]+)'? .*\nhs_write '?([^'\s]+)'?/.exec(cmd);
      if (mv) writes.push({ path: `${mv[1] === '/' ? '' : mv[1]}/${mv[2]}`, data: (o.stdin ?? Buffer.alloc(0)).toString('utf8') });
      return { code: 0, stdout: '', stderr: '', stdoutRaw: Buffer.alloc(0) };
    },
    writeFile: async (path: string, data: Buffer) => {
      writes.push({ path, data: data.toString('utf8') });
    },
  } as unknown as StepContext;
  return { ctx, cmds, writes };
}

describe('planPath: (wanted, state) → plan', () => {
  const cases: Array<[string, Wanted, PathState, { changed: boolean; summary: RegExp; undo: unknown; diff?: boolean }]> = [
    [
      'creates a missing file',
      want({ content: Buffer.from('a\n'), mode: 0o600 }),
      absent(),
      { changed: true, summary: /^create \/etc\/app.conf \(2 bytes, 0600\)/, undo: { kind: 'absent', path: '/etc/app.conf', created: [] }, diff: true },
    ],
    [
      'records parents it will create',
      want({ path: '/opt/x/y/f', content: Buffer.from('') }),
      absent(['/opt/x', '/opt/x/y']),
      { changed: true, summary: /create/, undo: { kind: 'absent', path: '/opt/x/y/f', created: ['/opt/x', '/opt/x/y'] } },
    ],
    ['leaves an identical file alone', want({ content: Buffer.from('a\n') }), file('a\n'), { changed: false, summary: /up to date/, undo: null }],
    ['ignores metadata it was not asked about', want({ content: Buffer.from('a\n') }), file('a\n', 0o600, 'www', 'www'), { changed: false, summary: /up to date/, undo: null }],
    [
      'updates content with a backup',
      want({ content: Buffer.from('b\n') }),
      file('a\n'),
      {
        changed: true,
        summary: /update \/etc\/app.conf: content/,
        undo: { kind: 'file', path: '/etc/app.conf', mode: 0o644, owner: 'root', group: 'root', backup: '/var/lib/hostsmith/backups/R1/Site_config-22b0d78b/etc/app.conf' },
        diff: true,
      },
    ],
    [
      'changes only the mode without a backup',
      want({ content: Buffer.from('a\n'), mode: 0o600 }),
      file('a\n'),
      { changed: true, summary: /mode 0644 → 0600/, undo: { kind: 'file', path: '/etc/app.conf', mode: 0o644, owner: 'root', group: 'root', backup: undefined } },
    ],
    ['changes the owner', want({ content: Buffer.from('a\n'), owner: 'www' }), file('a\n'), { changed: true, summary: /owner root → www/, undo: expect.objectContaining({ owner: 'root' }) }],
    ['absent and absent is unchanged', want({ state: 'absent' }), absent(), { changed: false, summary: /is absent/, undo: null }],
    [
      'removes a file, keeping a backup',
      want({ state: 'absent' }),
      file('x'),
      { changed: true, summary: /remove file/, undo: expect.objectContaining({ kind: 'file', backup: expect.stringContaining('/backups/R1/') }), diff: true },
    ],
    [
      'creates a directory',
      want({ path: '/srv/d', state: 'directory', mode: 0o750 }),
      absent(),
      { changed: true, summary: /create directory \/srv\/d/, undo: { kind: 'absent', path: '/srv/d', created: [] } },
    ],
    [
      'directory as wanted',
      want({ path: '/srv/d', state: 'directory', mode: 0o755 }),
      { kind: 'directory', mode: 0o755, owner: 'root', group: 'root', missing: [] },
      { changed: false, summary: /as wanted/, undo: null },
    ],
    ['creates a link', want({ path: '/l', state: 'link', target: '/t' }), absent(), { changed: true, summary: /link \/l → \/t/, undo: { kind: 'absent', path: '/l', created: [] } }],
    [
      'relinks and remembers the old target',
      want({ path: '/l', state: 'link', target: '/t2' }),
      { kind: 'link', target: '/t1', mode: 0o777, owner: 'root', group: 'root', missing: [] },
      { changed: true, summary: /relink/, undo: expect.objectContaining({ kind: 'link', target: '/t1' }) },
    ],
  ];
  it.each(cases)('%s', (_name, w, s, expected) => {
    const p = planPath(w, s, env);
    expect(p.changed).toBe(expected.changed);
    expect(p.summary).toMatch(expected.summary);
    expect(p.undo).toEqual(expected.undo);
    if (expected.diff) expect(p.diff).toMatch(/^[-+]/m);
  });

  it('refuses to replace a directory with a file', () => {
    expect(() => planPath(want({ content: Buffer.from('x') }), { kind: 'directory', missing: [] }, env)).toThrow(/is a directory, not a regular file/);
  });

  it('shows a unified diff of the content change', () => {
    const p = planPath(want({ content: Buffer.from('one\ntwo\n') }), file('one\nthree\n'), env);
    expect(p.diff).toContain('--- a/etc/app.conf');
    expect(p.diff).toContain('-three');
    expect(p.diff).toContain('+two');
  });
});

/** What checkScript prints: six NUL-terminated fields, then a file's bytes. */
const answer = (fields: string[], body: Buffer = Buffer.alloc(0)) => Buffer.concat([Buffer.from(fields.map((f) => `${f}\0`).join('')), body]);

describe('parseCheck', () => {
  const cases: Array<[string, string, Buffer, Partial<PathState>]> = [
    [
      'a file header and its bytes, binary included',
      '/etc/app.conf',
      answer(['file', '640', 'root', 'adm', '0', ''], Buffer.from([0, 1, 2, 10, 255])),
      { kind: 'file', mode: 0o640, owner: 'root', group: 'adm', missing: [], content: Buffer.from([0, 1, 2, 10, 255]) },
    ],
    ['missing parents derive from the path, outermost first', '/opt/a/b/f', answer(['absent', '', '', '', '2', '']), { kind: 'absent', missing: ['/opt/a', '/opt/a/b'] }],
    ['a ":" in a missing folder is part of its name, never a separator', '/tmp/pre/x:y/z/f', answer(['absent', '', '', '', '2', '']), { kind: 'absent', missing: ['/tmp/pre/x:y', '/tmp/pre/x:y/z'] }],
    ['a newline and a "|" in a missing folder too', '/tmp/a|b\nc/f', answer(['absent', '', '', '', '1', '']), { kind: 'absent', missing: ['/tmp/a|b\nc'] }],
    ['the count never reaches past the root', '/a/f', answer(['absent', '', '', '', '5', '']), { kind: 'absent', missing: ['/a'] }],
    ['a link target holding "|" and a newline', '/l', answer(['link', '777', 'root', 'root', '0', '/x|y\nz']), { kind: 'link', target: '/x|y\nz', owner: 'root' }],
    [
      'owner and group names holding "|" or a newline do not shift the fields',
      '/f',
      answer(['file', '600', 'we|ird', 'gr\noup', '0', ''], Buffer.from('a|b\0c\n')),
      { kind: 'file', mode: 0o600, owner: 'we|ird', group: 'gr\noup', content: Buffer.from('a|b\0c\n') },
    ],
    ['a directory whose parents all exist', '/srv/d', answer(['directory', '2755', 'www', 'www', '0', '']), { kind: 'directory', mode: 0o2755, owner: 'www', group: 'www', missing: [] }],
  ];
  it.each(cases)('%s', (_name, path, raw, expected) => {
    expect(parseCheck(raw, path)).toMatchObject(expected);
  });
  it('an answer cut short or not in the format is an error, not a guess', () => {
    expect(() => parseCheck(Buffer.from('file\x00644\x00root\x00'), '/f')).toThrow(/cannot read \/f: the host's answer was cut short/);
    expect(() => parseCheck(Buffer.from('absent||||/opt/a:|\n'), '/f')).toThrow(/cut short/);
    expect(() => parseCheck(answer(['fiel', '', '', '', '0', '']), '/f')).toThrow(/unexpected answer/);
    expect(() => parseCheck(answer(['absent', '', '', '', 'x', '']), '/f')).toThrow(/unexpected answer/);
  });
});

/** checkScript run by this machine's /bin/sh against a real folder, read back by parseCheck. */
describe('checkScript → parseCheck on a real filesystem', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'hostsmith-check-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const check = (path: string) => parseCheck(execFileSync('/bin/sh', ['-c', checkScript(path)]), path);

  it('a ":" folder that does not exist yet is missing; the existing folders named by its parts are not', () => {
    mkdirSync(join(root, 'pre/x'), { recursive: true });
    const s = check(`${root}/pre/x:y/z/f`);
    expect(s).toEqual({ kind: 'absent', missing: [`${root}/pre/x:y`, `${root}/pre/x:y/z`] });
  });
  it('names with "|", ":" and newlines, and a link target holding them, come back whole', () => {
    const dir = join(root, 'we|ird:\nname\n');
    mkdirSync(dir);
    writeFileSync(join(dir, 'f'), Buffer.from([0x61, 0x7c, 0, 0x0a]));
    chmodSync(join(dir, 'f'), 0o640);
    const target = '../t|a:r\nget\n';
    symlinkSync(target, join(dir, 'l'));
    expect(check(join(dir, 'f'))).toMatchObject({ kind: 'file', mode: 0o640, missing: [], content: Buffer.from([0x61, 0x7c, 0, 0x0a]) });
    expect(check(join(dir, 'l'))).toMatchObject({ kind: 'link', target, missing: [] });
    expect(check(dir)).toMatchObject({ kind: 'directory', missing: [] });
    expect(check(`${dir}/new\n/g`)).toEqual({ kind: 'absent', missing: [`${dir}/new\n`] });
  });
  it('the owner and group are the names stat reports', () => {
    writeFileSync(join(root, 'o'), '');
    const s = check(join(root, 'o'));
    const [owner, group] = execFileSync('stat', ['-c', '%U %G', join(root, 'o')])
      .toString()
      .trim()
      .split(' ');
    expect(s).toMatchObject({ kind: 'file', owner, group, content: Buffer.alloc(0) });
  });
});

describe('file with state: present and neither content nor src', () => {
  const plan = (o: Record<string, unknown>, s: PathState) => fileStep.plan(fileSchema.parse({ path: '/etc/app.conf', ...o }), s, env);
  const cases: Array<[string, Record<string, unknown>, PathState, { changed: boolean; summary: string; undo: unknown }]> = [
    ['creates an empty file when none is there', {}, absent(), { changed: true, summary: 'create empty /etc/app.conf', undo: { kind: 'absent', path: '/etc/app.conf', created: [] } }],
    [
      'says which metadata a new empty file gets',
      { mode: '0600', owner: 'www' },
      absent(['/etc']),
      { changed: true, summary: 'create empty /etc/app.conf (0600 www)', undo: { kind: 'absent', path: '/etc/app.conf', created: ['/etc'] } },
    ],
    ['leaves the content of an existing file alone', {}, file('keep me\n'), { changed: false, summary: '/etc/app.conf exists; content not managed', undo: null }],
    ['leaves a file whose metadata is as wanted', { mode: '0644', owner: 'root' }, file('keep me\n'), { changed: false, summary: '/etc/app.conf exists (0644 root); content not managed', undo: null }],
    [
      'changes only the metadata of an existing file, without a backup',
      { mode: '0600', group: 'adm' },
      file('keep me\n'),
      { changed: true, summary: '/etc/app.conf: mode 0644 → 0600, group root → adm', undo: { kind: 'file', path: '/etc/app.conf', mode: 0o644, owner: 'root', group: 'root' } },
    ],
    [
      'content: "" still empties the file',
      { content: '' },
      file('x\n'),
      { changed: true, summary: 'update /etc/app.conf: content', undo: expect.objectContaining({ backup: '/var/lib/hostsmith/backups/R1/Site_config-22b0d78b/etc/app.conf' }) },
    ],
  ];
  it.each(cases)('%s', (_name, o, s, expected) => {
    const p = plan(o, s);
    expect(p).toMatchObject({ changed: expected.changed, summary: expected.summary });
    expect(p.undo).toEqual(expected.undo);
    if (o.content === undefined) expect(p.diff).toBeUndefined();
  });

  it('apply sets only the metadata of an existing file and never writes it', async () => {
    const fake = fakeCtx();
    const p = fileSchema.parse({ path: '/etc/app.conf', mode: '0600' });
    await fileStep.apply(fake.ctx, p, plan({ mode: '0600' }, file('keep me\n')), file('keep me\n'));
    expect(fake.writes).toEqual([]);
    expect(fake.cmds).toHaveLength(1);
    expect(fake.cmds[0]).toContain("hs_cd '/etc' ");
    expect(fake.cmds[0]).toContain("hs_meta app.conf 0600 ''\n");
    expect(fake.cmds[0]).not.toContain('mktemp');
  });

  it('apply creates a missing file empty', async () => {
    const fake = fakeCtx();
    const p = fileSchema.parse({ path: '/etc/app.conf' });
    await fileStep.apply(fake.ctx, p, plan({}, absent()), absent());
    expect(fake.writes).toEqual([{ path: '/etc/app.conf', data: '' }]);
  });
});

describe('links: owner and group', () => {
  const link = (owner = 'root', group = 'root', target = '/t'): PathState => ({ kind: 'link', target, mode: 0o777, owner, group, missing: [] });
  const cases: Array<[string, Wanted, PathState, { changed: boolean; summary: string; undo: unknown }]> = [
    [
      'creates a link with its owner',
      want({ path: '/l', state: 'link', target: '/t', owner: 'www', group: 'adm' }),
      absent(),
      { changed: true, summary: 'link /l → /t (www:adm)', undo: { kind: 'absent', path: '/l', created: [] } },
    ],
    ['a link as wanted', want({ path: '/l', state: 'link', target: '/t', owner: 'www' }), link('www'), { changed: false, summary: '/l already links to /t', undo: null }],
    [
      'changes the owner of a link to the right target',
      want({ path: '/l', state: 'link', target: '/t', owner: 'www' }),
      link(),
      { changed: true, summary: '/l: owner root → www', undo: { kind: 'link', path: '/l', mode: 0o777, owner: 'root', group: 'root', target: '/t' } },
    ],
    [
      'relinks and changes the group',
      want({ path: '/l', state: 'link', target: '/t2', group: 'adm' }),
      link(),
      { changed: true, summary: 'relink /l: /t → /t2, group root → adm', undo: { kind: 'link', path: '/l', mode: 0o777, owner: 'root', group: 'root', target: '/t' } },
    ],
  ];
  it.each(cases)('%s', (_name, w, s, expected) => {
    const p = planPath(w, s, env);
    expect(p).toMatchObject({ changed: expected.changed, summary: expected.summary });
    expect(p.undo).toEqual(expected.undo);
  });

  it('apply chowns the link itself (chown -h) when no mode is given', async () => {
    const fake = fakeCtx();
    const w = want({ path: '/l', state: 'link', target: '/t', owner: 'www', group: 'adm' });
    await applyPath(fake.ctx, w, planPath(w, absent(), env));
    expect(fake.cmds).toHaveLength(1);
    expect(fake.cmds[0]).toContain("hs_mkcd '/' ");
    expect(fake.cmds[0]).toContain('ln -sfT -- /t l\nchown -h www:adm -- l\n');
  });

  it('a link cannot have a mode', () => {
    const r = fileSchema.safeParse({ path: '/l', state: 'link', target: '/t', mode: '0644' });
    expect(r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual(['mode: mode does not apply to state: link (a symlink has no mode of its own)']);
  });
});

describe('backup folders', () => {
  const bp = (step: string) => backupPath({ ...env, step }, '/etc/x');
  it('are readable, and unique per step name even when the names slug alike', () => {
    expect(bp('Write conf (1)')).toMatch(/^\/var\/lib\/hostsmith\/backups\/R1\/Write_conf_1_-[0-9a-f]{8}\/etc\/x$/);
    expect(bp('Write conf (1)')).not.toBe(bp('Write conf [1]'));
    const long = 'x'.repeat(100);
    expect(bp(`${long} one`)).not.toBe(bp(`${long} two`));
    expect(backupFolder(`${long} one`).length).toBeLessThanOrEqual(69);
  });
  it('stay inside the run folder whatever the name', () => {
    for (const name of ['..', '.', '/', '../../etc']) expect(bp(name).startsWith('/var/lib/hostsmith/backups/R1/')).toBe(true);
    expect(backupFolder('..')).toMatch(/^\.\.-[0-9a-f]{8}$/);
  });
});
