import { describe, expect, it } from 'vitest';
import { planPath, parseCheck, type PathState, type Wanted } from '../../src/steps/file-state.js';

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

describe('planPath: (wanted, state) → plan', () => {
  const cases: Array<[string, Wanted, PathState, { changed: boolean; summary: RegExp; undo: unknown; diff?: boolean }]> = [
    ['creates a missing file', want({ content: Buffer.from('a\n'), mode: 0o600 }), absent(), { changed: true, summary: /^create \/etc\/app.conf \(2 bytes, 0600\)/, undo: { kind: 'absent', path: '/etc/app.conf', created: [] }, diff: true }],
    ['records parents it will create', want({ path: '/opt/x/y/f', content: Buffer.from('') }), absent(['/opt/x', '/opt/x/y']), { changed: true, summary: /create/, undo: { kind: 'absent', path: '/opt/x/y/f', created: ['/opt/x', '/opt/x/y'] } }],
    ['leaves an identical file alone', want({ content: Buffer.from('a\n') }), file('a\n'), { changed: false, summary: /up to date/, undo: null }],
    ['ignores metadata it was not asked about', want({ content: Buffer.from('a\n') }), file('a\n', 0o600, 'www', 'www'), { changed: false, summary: /up to date/, undo: null }],
    [
      'updates content with a backup',
      want({ content: Buffer.from('b\n') }),
      file('a\n'),
      { changed: true, summary: /update \/etc\/app.conf: content/, undo: { kind: 'file', path: '/etc/app.conf', mode: 0o644, owner: 'root', group: 'root', backup: '/var/lib/hostsmith/backups/R1/Site_config/etc/app.conf' }, diff: true },
    ],
    [
      'changes only the mode without a backup',
      want({ content: Buffer.from('a\n'), mode: 0o600 }),
      file('a\n'),
      { changed: true, summary: /mode 0644 → 0600/, undo: { kind: 'file', path: '/etc/app.conf', mode: 0o644, owner: 'root', group: 'root', backup: undefined } },
    ],
    ['changes the owner', want({ content: Buffer.from('a\n'), owner: 'www' }), file('a\n'), { changed: true, summary: /owner root → www/, undo: expect.objectContaining({ owner: 'root' }) }],
    ['absent and absent is unchanged', want({ state: 'absent' }), absent(), { changed: false, summary: /is absent/, undo: null }],
    ['removes a file, keeping a backup', want({ state: 'absent' }), file('x'), { changed: true, summary: /remove file/, undo: expect.objectContaining({ kind: 'file', backup: expect.stringContaining('/backups/R1/') }), diff: true }],
    ['creates a directory', want({ path: '/srv/d', state: 'directory', mode: 0o750 }), absent(), { changed: true, summary: /create directory \/srv\/d/, undo: { kind: 'absent', path: '/srv/d', created: [] } }],
    ['directory as wanted', want({ path: '/srv/d', state: 'directory', mode: 0o755 }), { kind: 'directory', mode: 0o755, owner: 'root', group: 'root', missing: [] }, { changed: false, summary: /as wanted/, undo: null }],
    ['creates a link', want({ path: '/l', state: 'link', target: '/t' }), absent(), { changed: true, summary: /link \/l → \/t/, undo: { kind: 'absent', path: '/l', created: [] } }],
    ['relinks and remembers the old target', want({ path: '/l', state: 'link', target: '/t2' }), { kind: 'link', target: '/t1', mode: 0o777, owner: 'root', group: 'root', missing: [] }, { changed: true, summary: /relink/, undo: expect.objectContaining({ kind: 'link', target: '/t1' }) }],
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

describe('parseCheck', () => {
  it('reads a file header and its bytes, binary included', () => {
    const raw = Buffer.concat([Buffer.from('file|640|root|adm||\n'), Buffer.from([0, 1, 2, 10, 255])]);
    const s = parseCheck(raw);
    expect(s).toMatchObject({ kind: 'file', mode: 0o640, owner: 'root', group: 'adm', missing: [] });
    expect(s.content).toEqual(Buffer.from([0, 1, 2, 10, 255]));
  });
  it('reads missing parents of an absent path', () => {
    expect(parseCheck(Buffer.from('absent||||/opt/a:/opt/a/b:|\n'))).toEqual({ kind: 'absent', missing: ['/opt/a', '/opt/a/b'] });
  });
  it('reads a link target containing a pipe', () => {
    expect(parseCheck(Buffer.from('link|777|root|root||/x|y\n'))).toMatchObject({ kind: 'link', target: '/x|y' });
  });
});
