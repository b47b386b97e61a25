import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync, existsSync, lchownSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkEntries, listArchive, formatOf, type Member } from '../../src/steps/unarchive/archive.js';
import { planUnarchive, unarchiveSchema, unarchiveStep, type HostEntry, type UnarchiveParams, type UnarchiveState } from '../../src/steps/unarchive/unarchive.js';
import { sha256, type StepContext } from '../../src/steps/step.js';
import { tarOf, tgzOf, zipOf, type Entry } from './archive-fixtures.js';
import { localCtx } from './local-ctx.js';

const env = { runId: 'R1', step: 'Unpack', backupDir: '/var/lib/hostsmith/backups/R1' };
const params = (o: Record<string, unknown> = {}): UnarchiveParams => unarchiveSchema.parse({ src: 'files/app-1.2.tar.gz', dest: '/opt/app', ...o });
const APP: Entry[] = [
  { name: 'app-1.2/', type: 'dir' },
  { name: 'app-1.2/bin/', type: 'dir' },
  { name: 'app-1.2/bin/app', data: '#!/bin/sh\necho app 1.2\n', mode: 0o755 },
  { name: 'app-1.2/app.conf', data: 'port = 8080\n' },
  { name: 'app-1.2/current', type: 'symlink', link: 'bin/app' },
];
const list = (entries: Entry[], strip = 0, format: 'tar' | 'tar.gz' | 'zip' = 'tar.gz') =>
  listArchive(format === 'zip' ? zipOf(entries) : format === 'tar' ? tarOf(entries) : tgzOf(entries), format, strip, 'app-1.2.tar.gz');

describe('unarchive: params and footprint', () => {
  it.each([
    [{ remote_src: '/srv/app.tgz' }, /either src .* or remote_src/],
    [{ src: undefined }, /either src .* or remote_src/],
    [{ src: 'files/app.rar' }, /cannot tell the format .* give format/],
    [{ dest: '/' }, /cannot unpack into \/ itself/],
    [{ dest: 'opt/app' }, /absolute path/],
    [{ strip_components: -1 }, /greater than or equal to 0/],
    [{ mode: '0644' }, /Unrecognized key/],
  ])('%j is refused: %s', (o, why) => {
    const r = unarchiveSchema.safeParse({ src: 'files/app-1.2.tar.gz', dest: '/opt/app', ...o });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });

  it('an odd name is fine with format given', () => {
    expect(params({ src: 'files/app.bin', format: 'zip' }).format).toBe('zip');
  });

  it.each([
    ['a.tar', 'tar'],
    ['a.tar.gz', 'tar.gz'],
    ['A.TGZ', 'tar.gz'],
    ['a.tar.xz', 'tar.xz'],
    ['a.tar.zst', 'tar.zst'],
    ['a.zip', 'zip'],
    ['a.gz', undefined],
  ])('format of %s: %s', (name, want) => expect(formatOf(name)).toBe(want));

  it('reads dest (and creates, remote_src), writes dest and what is under it, and nothing else', () => {
    expect(unarchiveStep.footprint(params())).toEqual({ reads: ['path:/opt/app'], writes: ['path:/opt/app'] });
    expect(unarchiveStep.footprint(params({ src: undefined, remote_src: '/srv/app.tgz', creates: '/opt/app/bin/app' }))).toEqual({
      reads: ['path:/opt/app', 'path:/opt/app/bin/app', 'path:/srv/app.tgz'],
      writes: ['path:/opt/app'],
    });
    // Parents made on the way to a missing dest are named by wrote().
    expect(unarchiveStep.wrote?.(params(), { dest: '/opt/app', created: ['/opt/app/x'], dirs: ['/opt', '/opt/app'], replaced: [] })).toEqual(['path:/opt']);
  });
});

describe('unarchive: listing on the controller', () => {
  it('lists a tar.gz with its folders, files (hashed) and links, parents first', async () => {
    const { members, contents } = await list(APP);
    expect(members.map((m) => `${m.kind} ${m.path}`)).toEqual(['directory app-1.2', 'file app-1.2/app.conf', 'directory app-1.2/bin', 'file app-1.2/bin/app', 'link app-1.2/current']);
    const app = members.find((m) => m.path === 'app-1.2/bin/app')!;
    expect(app).toMatchObject({ mode: 0o755, size: 23, sha256: sha256('#!/bin/sh\necho app 1.2\n') });
    expect(contents.get('app-1.2/app.conf')?.toString()).toBe('port = 8080\n');
  });

  it('strip_components drops leading parts, and members left with nothing', async () => {
    const { members } = await list(APP, 1);
    expect(members.map((m) => m.path)).toEqual(['app.conf', 'bin', 'bin/app', 'current']);
  });

  it('lists a zip the same way (folders implied by names are made too)', async () => {
    const { members, contents } = await list(
      [
        { name: 'app/bin/app', data: 'x', mode: 0o755 },
        { name: 'app/l', type: 'symlink', link: 'bin/app' },
      ],
      0,
      'zip',
    );
    expect(members.map((m) => `${m.kind} ${m.path} ${m.mode.toString(8)}${m.target ? ` ${m.target}` : ''}`)).toEqual([
      'directory app 755',
      'directory app/bin 755',
      'file app/bin/app 755',
      'link app/l 777 bin/app',
    ]);
    expect(contents.get('app/bin/app')?.toString()).toBe('x');
  });

  it('a hard link becomes a copy of the file it names; setuid and the like are dropped', async () => {
    const { members, contents } = await list(
      [
        { name: 'a', data: 'same', mode: 0o4755 },
        { name: 'b', type: 'hardlink', link: 'a' },
      ],
      0,
      'tar',
    );
    expect(members.map((m) => [m.path, m.kind, m.mode.toString(8)])).toEqual([
      ['a', 'file', '755'],
      ['b', 'file', '755'],
    ]);
    expect(contents.get('b')?.toString()).toBe('same');
  });

  it('a tar made by the system tar lists as the system tar lists it', async () => {
    const { dir } = localCtx('hs-unarc-');
    mkdirSync(join(dir, 'src/sub'), { recursive: true });
    writeFileSync(join(dir, 'src/sub/f'), 'f\n');
    execFileSync('tar', ['-czf', join(dir, 'a.tgz'), '-C', join(dir, 'src'), '.']);
    const { members } = await listArchive(readFileSync(join(dir, 'a.tgz')), 'tar.gz', 0, 'a.tgz');
    expect(members.map((m) => m.path)).toEqual(['sub', 'sub/f']);
  });
});

describe('unarchive: hostile archives are refused before anything is written', () => {
  const refused = (entries: Entry[], why: RegExp, format: 'tar' | 'zip' = 'tar', strip = 0) => expect(list(entries, strip, format)).rejects.toThrow(why);

  it.each([
    ['tar-slip: ..', [{ name: '../../etc/cron.d/evil', data: 'x' }], /member "..\/..\/etc\/cron.d\/evil" has a ".." part: it could be written outside dest \(tar-slip\/zip-slip\)/],
    ['a .. in the middle', [{ name: 'app/../../x', data: 'x' }], /has a "\.\." part/],
    ['an absolute path', [{ name: '/etc/passwd', data: 'x' }], /member "\/etc\/passwd" has an absolute path: it would be written outside dest/],
    ['a link to an absolute path', [{ name: 'etc', type: 'symlink', link: '/etc' }], /member "etc" is a symbolic link to the absolute path "\/etc": it points outside dest/],
    ['a link out through ..', [{ name: 'a/up', type: 'symlink', link: '../../etc' }], /member "a\/up" is a symbolic link to "\.\.\/\.\.\/etc", which points outside dest/],
    [
      'a link out through another link',
      [
        { name: 'a/b/c', type: 'dir' },
        { name: 'l', type: 'symlink', link: 'a/b/c' },
        { name: 'm', type: 'symlink', link: 'l/../../../..' },
      ],
      /member "m" is a symbolic link to "l\/\.\.\/\.\.\/\.\.\/\.\.", which steps out through the link "l"/,
    ],
    [
      'a member written through a link of the archive',
      [
        { name: 'conf', type: 'symlink', link: 'sub' },
        { name: 'conf/x', data: 'x' },
      ],
      /member "conf\/x" lies under "conf", a symbolic link of the archive/,
    ],
    ['a fifo', [{ name: 'p', type: 'fifo' }], /member "p" is a FIFO: only files, folders and links are unpacked/],
    ['a hard link to a file outside', [{ name: 'h', type: 'hardlink', link: '/etc/shadow' }], /member "\/etc\/shadow" links to an absolute path/],
    ['a hard link to nothing earlier', [{ name: 'h', type: 'hardlink', link: 'later' }], /member "h" is a hard link to "later", which is not a file earlier/],
  ] as Array<[string, Entry[], RegExp]>)('tar: %s', (_what, entries, why) => refused(entries, why));

  it.each([
    ['zip-slip: ..', [{ name: '../evil.sh', data: 'x' }], /member "\.\.\/evil\.sh" has a "\.\." part: it could be written outside dest \(tar-slip\/zip-slip\)/],
    ['an absolute path', [{ name: '/root/.ssh/authorized_keys', data: 'x' }], /has an absolute path/],
    ['a backslash path', [{ name: '..\\..\\evil', data: 'x' }], /a Windows path/],
    ['a link out', [{ name: 'l', type: 'symlink', link: '../../../../etc' }], /points outside dest/],
  ] as Array<[string, Entry[], RegExp]>)('zip: %s', (_what, entries, why) => refused(entries, why, 'zip'));

  it('strip_components does not hide a .. (the whole name is checked)', () => refused([{ name: 'top/../../x', data: 'x' }], /"\.\." part/, 'tar', 1));

  it('a link that stays inside dest is fine, .. and all', async () => {
    const { members } = await list(
      [
        { name: 'lib/libfoo.so', type: 'symlink', link: '../lib64/libfoo.so.1' },
        { name: 'lib64/libfoo.so.1', data: 'elf' },
      ],
      0,
      'tar',
    );
    expect(members.find((m) => m.kind === 'link')?.target).toBe('../lib64/libfoo.so.1');
  });

  it('the same path as two kinds is refused', () => {
    expect(() =>
      checkEntries(
        [
          { name: 'x', type: 'file', mode: 0o644, data: Buffer.from('') },
          { name: 'x/', type: 'directory', mode: 0o755 },
        ],
        0,
        'a.tar',
      ),
    ).toThrow(/member "x\/" is a directory where the archive already has a file/);
  });
});

describe('unarchive: plan from the members and what the host has', () => {
  const file = (path: string, data: string, mode = 0o644): Member => ({ path, kind: 'file', mode, size: data.length, sha256: sha256(data) });
  const members: Member[] = [
    { path: 'bin', kind: 'directory', mode: 0o755 },
    file('bin/app', 'new app', 0o755),
    file('app.conf', 'new conf'),
    file('README', 'readme'),
    { path: 'current', kind: 'link', mode: 0o777, target: 'bin/app' },
  ];
  const withArchive = (o: Record<string, unknown> = {}): UnarchiveParams => ({ ...params(o), archive: { sha256: 'f'.repeat(64), members } });
  const state = (host: Record<string, HostEntry>, o: Partial<UnarchiveState> = {}): UnarchiveState => ({
    dest: 'directory',
    missing: [],
    host,
    ...o,
  });
  const absent: HostEntry = { kind: 'absent' };
  const hostFile = (data: string, mode = 0o644): HostEntry => ({ kind: 'file', mode, owner: 'root', group: 'root', size: data.length, sha256: sha256(data) });

  it('a fresh dest: every member new, dest and its missing parents made; undo lists exactly them', () => {
    const p = planUnarchive(withArchive(), state({}, { dest: 'absent', missing: ['/opt', '/opt/app'] }), env);
    expect(p).toMatchObject({ changed: true, action: 'create', summary: 'unpack app-1.2.tar.gz into /opt/app: 4 new files, 0 replaced, 2 new folders' });
    expect(p.undo).toEqual({ dest: '/opt/app', created: ['/opt/app/bin/app', '/opt/app/app.conf', '/opt/app/README', '/opt/app/current'], dirs: ['/opt', '/opt/app', '/opt/app/bin'], replaced: [] });
  });

  it('an existing dest: new, replaced (backed up first) and unchanged members counted', () => {
    const p = planUnarchive(
      withArchive(),
      state({ bin: { kind: 'directory', mode: 0o700 }, 'bin/app': absent, 'app.conf': hostFile('old conf'), README: hostFile('readme'), current: { kind: 'link', target: 'elsewhere' } }),
      env,
    );
    expect(p.summary).toBe('unpack app-1.2.tar.gz into /opt/app: 1 new file, 2 replaced, 1 unchanged');
    expect(p.undo).toEqual({
      dest: '/opt/app',
      created: ['/opt/app/bin/app'],
      dirs: [],
      replaced: [
        { path: '/opt/app/app.conf', backup: '/var/lib/hostsmith/backups/R1/Unpack-900689db/opt/app/app.conf' },
        { path: '/opt/app/current', backup: '/var/lib/hostsmith/backups/R1/Unpack-900689db/opt/app/current' },
      ],
    });
    expect(unarchiveStep.undoMismatch?.(params(), p.undo as never)).toBeUndefined();
  });

  it('every member already there with the same content: unchanged (an existing folder is never changed)', () => {
    const p = planUnarchive(
      withArchive(),
      state({
        bin: { kind: 'directory', mode: 0o700 },
        'bin/app': hostFile('new app', 0o755),
        'app.conf': hostFile('new conf'),
        README: hostFile('readme'),
        current: { kind: 'link', target: 'bin/app' },
      }),
      env,
    );
    expect(p).toMatchObject({ changed: false, summary: 'app-1.2.tar.gz is already unpacked in /opt/app (4 files as in the archive)', undo: null });
  });

  it('the same bytes with other permission bits, or another owner than asked for, is replaced', () => {
    const host = {
      bin: { kind: 'directory' as const },
      'bin/app': hostFile('new app', 0o644),
      'app.conf': hostFile('new conf'),
      README: hostFile('readme'),
      current: { kind: 'link' as const, target: 'bin/app', owner: 'root' },
    };
    expect(planUnarchive(withArchive(), state(host), env).summary).toBe('unpack app-1.2.tar.gz into /opt/app: 0 new files, 1 replaced, 3 unchanged');
    expect(planUnarchive(withArchive({ owner: 'app' }), state(host), env).summary).toBe('unpack app-1.2.tar.gz into /opt/app: 0 new files, 4 replaced');
  });

  it('creates exists: unchanged, whatever else', () => {
    expect(planUnarchive(withArchive({ creates: '/opt/app/bin/app' }), state({}, { created: true }), env)).toMatchObject({
      changed: false,
      summary: '/opt/app/bin/app exists (creates): app-1.2.tar.gz is not unpacked',
    });
  });

  it('a link on the host where the archive has a folder is refused (never unpacked through)', () => {
    expect(() => planUnarchive(withArchive(), state({ bin: { kind: 'link', target: '/etc' }, 'bin/app': { kind: 'blocked' } }), env)).toThrow(
      '/opt/app/bin is a symbolic link on the host where app-1.2.tar.gz has a folder; hostsmith does not unpack through or over it — remove it first',
    );
    expect(() => planUnarchive(withArchive(), state({}, { dest: 'other' }), env)).toThrow(/\/opt\/app is not a folder/);
    expect(() => planUnarchive(withArchive(), state({ bin: { kind: 'directory' }, 'app.conf': { kind: 'directory' } }), env)).toThrow(
      /\/opt\/app\/app\.conf is a folder on the host where app-1\.2\.tar\.gz has a file/,
    );
  });

  it('journaled undo data naming paths outside dest, or a backup elsewhere, is refused', () => {
    const ok = { dest: '/opt/app', created: ['/opt/app/x'], dirs: ['/opt', '/opt/app/d'], replaced: [{ path: '/opt/app/y', backup: '/var/lib/hostsmith/backups/R1/S/opt/app/y' }] };
    expect(unarchiveStep.undoMismatch?.(params(), ok)).toBeUndefined();
    expect(unarchiveStep.undoMismatch?.(params(), { ...ok, created: ['/etc/passwd'] })).toMatch(/would remove "\/etc\/passwd", which is not in \/opt\/app/);
    expect(unarchiveStep.undoMismatch?.(params(), { ...ok, created: ['/opt/app/../../etc/passwd'] })).toMatch(/not in \/opt\/app/);
    expect(unarchiveStep.undoMismatch?.(params(), { ...ok, dirs: ['/srv'] })).toMatch(/the folder "\/srv", which is neither in \/opt\/app nor above it/);
    expect(unarchiveStep.undoMismatch?.(params(), { ...ok, replaced: [{ path: '/opt/app/y', backup: '/tmp/y' }] })).toMatch(/not in a hostsmith backup folder/);
    expect(unarchiveStep.undoMismatch?.(params(), { ...ok, dest: '/srv' })).toMatch(/not the step's \/opt\/app/);
    expect(unarchiveStep.undoSummary?.(ok)).toBe('remove 1 file and 2 folders unpacked into /opt/app; put back 1 replaced file from the backups');
  });
});

describe('unarchive: check, apply and rollback on this machine (local transport)', () => {
  const setup = (entries: Entry[], o: { dest?: string } = {}) => {
    const local = localCtx('hs-unarc-');
    const archive = tgzOf(entries);
    const ctx: StepContext = { ...local.ctx, readSource: async () => ({ path: 'app.tgz', content: archive }) };
    const dest = o.dest ?? join(local.dir, 'opt/app');
    const p = params({ src: 'app.tgz', dest, strip_components: 1 });
    return { ...local, ctx, dest, p, prepared: () => unarchiveStep.prepare!(ctx, p) };
  };
  const tree = (d: string): string[] =>
    existsSync(d)
      ? readdirSync(d, { recursive: true, encoding: 'utf8' })
          .sort()
          .map((f) => {
            const st = lstatSync(join(d, f));
            return `${f} ${st.isSymbolicLink() ? `-> ${readlinkSync(join(d, f))}` : st.isDirectory() ? 'dir' : `${(st.mode & 0o777).toString(8)} ${readFileSync(join(d, f), 'utf8').trim()}`}`;
          })
      : [];

  it('unpacks into a fresh dest, is unchanged after, and rollback leaves nothing', async () => {
    const { ctx, dest, p: raw, dir } = setup(APP);
    const prepared = await unarchiveStep.prepare!(ctx, raw);
    expect(prepared.archive?.members.map((m) => m.path)).toEqual(['app.conf', 'bin', 'bin/app', 'current']);
    const s = await unarchiveStep.check(ctx, prepared);
    const plan = unarchiveStep.plan(prepared, s, { ...env, backupDir: ctx.backupDir });
    expect(plan.summary).toBe(`unpack app.tgz into ${dest}: 3 new files, 0 replaced, 2 new folders`);
    await unarchiveStep.apply(ctx, prepared, plan, s);
    expect(tree(dest)).toEqual(['app.conf 644 port = 8080', 'bin dir', 'bin/app 755 #!/bin/sh\necho app 1.2', 'current -> bin/app']);
    expect(unarchiveStep.plan(prepared, await unarchiveStep.check(ctx, prepared), env).changed).toBe(false);
    await unarchiveStep.rollback(ctx, prepared, plan.undo!);
    expect(readdirSync(dir).filter((f) => f !== 'backups')).toEqual([]);
  });

  it('replaces what it must (from a backup on rollback), leaves everything else in dest alone', async () => {
    const { ctx, dest, prepared } = setup(APP);
    const p = await prepared();
    mkdirSync(join(dest, 'bin'), { recursive: true });
    writeFileSync(join(dest, 'app.conf'), 'old\n', { mode: 0o600 });
    writeFileSync(join(dest, 'mine'), 'not the archive\n');
    const before = tree(dest);
    const s = await unarchiveStep.check(ctx, p);
    const plan = unarchiveStep.plan(p, s, { ...env, backupDir: ctx.backupDir });
    expect(plan.summary).toBe(`unpack app.tgz into ${dest}: 2 new files, 1 replaced`);
    await unarchiveStep.apply(ctx, p, plan, s);
    expect(tree(dest)).toContain('app.conf 644 port = 8080');
    expect(tree(dest)).toContain('mine 644 not the archive');
    await unarchiveStep.rollback(ctx, p, plan.undo!);
    expect(tree(dest)).toEqual(before);
    // Again: a rollback can be run twice (recover after a rollback cut short).
    await unarchiveStep.rollback(ctx, p, plan.undo!);
    expect(tree(dest)).toEqual(before);
  });

  it('a rollback of a change that never happened (killed before it) touches nothing', async () => {
    const { ctx, dest, prepared } = setup(APP);
    const p = await prepared();
    mkdirSync(dest, { recursive: true });
    writeFileSync(join(dest, 'app.conf'), 'old\n');
    const s = await unarchiveStep.check(ctx, p);
    const plan = unarchiveStep.plan(p, s, { ...env, backupDir: ctx.backupDir });
    await unarchiveStep.rollback(ctx, p, plan.undo!);
    expect(tree(dest)).toEqual(['app.conf 644 old']);
  });

  it('a link planted at a file member is replaced, not written through; one planted at a folder is refused', async () => {
    const { ctx, dest, prepared, dir } = setup(APP);
    const p = await prepared();
    mkdirSync(dest, { recursive: true });
    mkdirSync(join(dir, 'victim'));
    symlinkSync(join(dir, 'victim/conf'), join(dest, 'app.conf'));
    lchownSync(join(dest, 'app.conf'), 65534, 65534);
    const s = await unarchiveStep.check(ctx, p);
    const plan = unarchiveStep.plan(p, s, { ...env, backupDir: ctx.backupDir });
    expect(plan.summary).toBe(`unpack app.tgz into ${dest}: 2 new files, 1 replaced, 1 new folder`);
    await unarchiveStep.apply(ctx, p, plan, s);
    expect(readdirSync(join(dir, 'victim'))).toEqual([]);
    expect(lstatSync(join(dest, 'app.conf')).isFile()).toBe(true);
    await unarchiveStep.rollback(ctx, p, plan.undo!);
    expect(readlinkSync(join(dest, 'app.conf'))).toBe(join(dir, 'victim/conf'));

    symlinkSync(join(dir, 'victim'), join(dest, 'bin'));
    lchownSync(join(dest, 'bin'), 65534, 65534);
    const s2 = await unarchiveStep.check(ctx, p);
    expect(() => unarchiveStep.plan(p, s2, env)).toThrow(`${dest}/bin is a symbolic link on the host where app.tgz has a folder`);
  });

  it('undo and recover read the host from the journaled params alone (no recipe, no archive)', async () => {
    const { ctx, dest, prepared } = setup(APP);
    const p = await prepared();
    const s = await unarchiveStep.check(ctx, p);
    const plan = unarchiveStep.plan(p, s, { ...env, backupDir: ctx.backupDir });
    const done = await unarchiveStep.apply(ctx, p, plan, s);
    const journaled = JSON.parse(JSON.stringify(p)) as UnarchiveParams;
    const noSources: StepContext = {
      ...ctx,
      readSource: () => Promise.reject(new Error('undo works from the journal alone: it reads no recipe sources')),
    };
    const now = await unarchiveStep.check(noSources, journaled);
    // What undo compares: the state now and the state the apply left.
    expect(now).toEqual(done.state);
    await unarchiveStep.rollback(noSources, journaled, plan.undo!);
    expect(existsSync(dest)).toBe(false);
  });

  it.each([
    ['xz', 'app.tar.xz'],
    ['zstd', 'app.tar.zst'],
  ])('%s: the controller cannot decode it (Node 20), the host decompresses it as a read', async (tool, name) => {
    const local = localCtx('hs-unarc-');
    const archive = execFileSync(tool, ['-c'], { input: tarOf(APP) });
    const ctx: StepContext = { ...local.ctx, readSource: async () => ({ path: name, content: archive }) };
    const p = await unarchiveStep.prepare!(ctx, params({ src: name, dest: join(local.dir, 'app'), strip_components: 1 }));
    expect(p.archive?.members.map((m) => m.path)).toEqual(['app.conf', 'bin', 'bin/app', 'current']);
  });

  it('a host without xz: the step says what to install', async () => {
    const local = localCtx('hs-unarc-');
    const ctx: StepContext = {
      ...local.ctx,
      exec: (cmd: string, o?: Parameters<StepContext['exec']>[1]) => local.ctx.exec(cmd.replace('command -v xz', 'command -v hs-no-such-xz'), o),
      readSource: async () => ({ path: 'a.tar.xz', content: Buffer.from('not xz') }),
    };
    await expect(unarchiveStep.prepare!(ctx, params({ src: 'a.tar.xz', dest: '/opt/a' }))).rejects.toThrow(
      'cannot list a.tar.xz: this controller cannot decompress tar.xz itself, and the host has no xz to do it as a read; install xz-utils on the host first',
    );
  });

  it('a link planted between the plan and the apply: the apply refuses it (the guard, then hs_cd)', async () => {
    const { ctx, dest, prepared, dir } = setup(APP);
    const p = await prepared();
    mkdirSync(dest, { recursive: true });
    mkdirSync(join(dir, 'victim'));
    const s = await unarchiveStep.check(ctx, p);
    const plan = unarchiveStep.plan(p, s, { ...env, backupDir: ctx.backupDir });
    symlinkSync(join(dir, 'victim'), join(dest, 'bin'));
    lchownSync(join(dest, 'bin'), 65534, 65534);
    await expect(unarchiveStep.apply(ctx, p, plan, s)).rejects.toThrow(/state moved since the plan was made/);
    // Without the guard (a state not read from a host): the write itself will not make the folder over the link.
    await expect(unarchiveStep.apply(ctx, p, plan, { ...s })).rejects.toThrow(/unpacking app\.tgz into .* failed \(exit 1\): mkdir: cannot create directory ‘bin’: File exists/);
    expect(readdirSync(join(dir, 'victim'))).toEqual([]);
  });
});
