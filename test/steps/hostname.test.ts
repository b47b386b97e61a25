/**
 * `hostname`: params → footprint, and params + what the host shows → plan (each of /etc/hostname,
 * /etc/hosts and the live name on its own), with the /etc/hosts edits Debian's convention needs.
 */
import { describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import type { PathState } from '../../src/steps/file-state.js';
import { editHosts, hostnameSchema, hostnameStep, parseHostnameCheck, planHostname, type HostnameState } from '../../src/steps/hostname/hostname.js';

const env = { runId: 'R1', step: 'Name it', backupDir: '/var/lib/hostsmith/backups/R1' };
const params = (o: Record<string, unknown> = {}) => hostnameSchema.parse({ name: 'web1', fqdn: 'web1.example.org', ...o });
const file = (content: string, mode = 0o644): PathState => ({ kind: 'file', content: Buffer.from(content), mode, owner: 'root', group: 'root', missing: [] });
const absent: PathState = { kind: 'absent', missing: [] };
const HOSTS = '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n';
const state = (o: Partial<HostnameState> = {}): HostnameState => ({
  live: 'web1',
  systemd: false,
  hostname: file('web1\n'),
  hosts: file('127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.org web1\n'),
  ...o,
});

describe('hostname: params', () => {
  it.each([
    [{ name: 'web1.example.org', fqdn: undefined }, /without dots; give the full name as fqdn/],
    [{ name: '-web' }, /letters, digits and hyphens/],
    [{ name: 'a'.repeat(64) }, /1 to 63/],
    [{ name: 'web 1' }, /letters, digits and hyphens/],
    [{ fqdn: 'web2.example.org' }, /fqdn must start with the name/],
    [{ fqdn: 'web1' }, /dotted labels/],
    [{ fqdn: 'web1..org' }, /dotted labels/],
    [{ hosts_entry: false }, /needs hosts_entry: true/],
    [{ domain: 'x' }, /Unrecognized key/],
  ])('%j is refused: %s', (o, why) => {
    const r = hostnameSchema.safeParse({ name: 'web1', fqdn: 'web1.example.org', ...o });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });

  it('hosts_entry defaults to true; fqdn is optional', () => {
    expect(hostnameSchema.parse({ name: 'web1' })).toEqual({ name: 'web1', hosts_entry: true });
    expect(hostnameSchema.parse({ name: 'web1', hosts_entry: 'false' })).toEqual({ name: 'web1', hosts_entry: false });
  });
});

describe('hostname: footprint (params → what it reads and writes)', () => {
  it.each([
    [
      { name: 'web1' },
      {
        reads: ['path:/etc/hostname', 'path:/etc/hosts', 'path:/proc/sys/kernel/hostname', 'path:/run/systemd/system'],
        writes: ['path:/etc/hostname', 'path:/etc/hosts', 'path:/proc/sys/kernel/hostname'],
      },
    ],
    [
      { name: 'web1', hosts_entry: false },
      {
        reads: ['path:/etc/hostname', 'path:/proc/sys/kernel/hostname', 'path:/run/systemd/system'],
        writes: ['path:/etc/hostname', 'path:/proc/sys/kernel/hostname'],
      },
    ],
  ])('%j', (p, want) => {
    expect(hostnameStep.footprint(hostnameSchema.parse(p))).toEqual(want);
  });
});

describe('editHosts: /etc/hosts text → text with 127.0.1.1 mapped', () => {
  const cases: Array<[string, Record<string, unknown>, string | null, string, RegExp]> = [
    ['no 127.0.1.1 line: added after the 127.0.0.1 line', {}, HOSTS, '127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.org web1\n::1\tlocalhost ip6-localhost ip6-loopback\n', /add .* after line 1/],
    [
      'a 127.0.1.1 line with other names: replaced in place',
      {},
      `127.0.0.1\tlocalhost\n127.0.1.1\told.example.org old # installer\n${HOSTS.split('\n')[1]}\n`,
      `127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.org web1\n${HOSTS.split('\n')[1]}\n`,
      /127\.0\.1\.1 old\.example\.org old → web1\.example\.org web1/,
    ],
    [
      'already right (other blanks): the same text',
      {},
      '127.0.0.1 localhost\n127.0.1.1   web1.example.org\tweb1\n',
      '127.0.0.1 localhost\n127.0.1.1   web1.example.org\tweb1\n',
      /maps 127\.0\.1\.1 to web1\.example\.org web1/,
    ],
    ['without fqdn: only the short name', { fqdn: undefined }, '127.0.0.1 localhost\n127.0.1.1 web1.example.org web1\n', '127.0.0.1 localhost\n127.0.1.1\tweb1\n', /→ web1$/],
    ['no loopback line: added at the end', {}, '10.0.0.5 db\n', '10.0.0.5 db\n127.0.1.1\tweb1.example.org web1\n', /at the end/],
    ['no final newline: one is added before ours', {}, '127.0.0.1 localhost', '127.0.0.1 localhost\n127.0.1.1\tweb1.example.org web1\n', /at the end/],
    ['a commented-out 127.0.1.1 is not a mapping', {}, '#127.0.1.1 web1\n', '#127.0.1.1 web1\n127.0.1.1\tweb1.example.org web1\n', /at the end/],
    ['no file: made with localhost and ours', {}, null, '127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.org web1\n', /create \/etc\/hosts/],
    ['only the first 127.0.1.1 line is ours to change', {}, '127.0.1.1 a\n127.0.1.1 b\n', '127.0.1.1\tweb1.example.org web1\n127.0.1.1 b\n', /a → web1/],
  ];
  it.each(cases)('%s', (_t, o, before, after, what) => {
    const r = editHosts(before, params(o));
    expect(r.text).toBe(after);
    expect(r.what).toMatch(what);
  });

  it('CRLF lines keep their ends', () => {
    expect(editHosts('127.0.0.1 localhost\r\n::1 localhost\r\n', params()).text).toBe('127.0.0.1 localhost\r\n127.0.1.1\tweb1.example.org web1\r\n::1 localhost\r\n');
  });
});

describe('hostname: plan (params + host state → what changes)', () => {
  it('everything right: unchanged, no undo', () => {
    const plan = planHostname(params(), state(), env);
    expect(plan).toMatchObject({ changed: false, undo: null });
    expect(plan.summary).toBe('host name is web1 in /etc/hostname, /etc/hosts (127.0.1.1 web1.example.org web1), the running system');
  });

  it('/etc/hostname without its final newline is still right', () => {
    expect(planHostname(params(), state({ hostname: file('web1') }), env).changed).toBe(false);
  });

  it('a fresh host: all three parts change; the diffs of both files; each file backed up; the live name kept for rollback', () => {
    const plan = planHostname(params(), state({ live: 'h1', hostname: file('h1\n', 0o755), hosts: file(HOSTS) }), env);
    expect(plan.changed).toBe(true);
    expect(plan.summary).toBe('set host name web1 (/etc/hostname: "h1" → "web1"; /etc/hosts: add "127.0.1.1\\tweb1.example.org web1" after line 1; live: h1 → web1)');
    expect(plan.diff).toContain('--- a/etc/hostname\n+++ b/etc/hostname');
    expect(plan.diff).toContain('-h1\n+web1');
    expect(plan.diff).toContain('+127.0.1.1\tweb1.example.org web1');
    expect(plan.undo).toEqual({
      name: 'web1',
      hostname: {
        kind: 'file',
        path: '/etc/hostname',
        mode: 0o755,
        owner: 'root',
        group: 'root',
        backup: expect.stringMatching(/^\/var\/lib\/hostsmith\/backups\/R1\/Name_it-[0-9a-f]{8}\/etc\/hostname$/),
      },
      hosts: expect.objectContaining({ kind: 'file', path: '/etc/hosts', backup: expect.stringMatching(/^\/var\/lib\/hostsmith\/backups\/R1\/Name_it-[0-9a-f]{8}\/etc\/hosts$/) }),
      live: 'h1',
    });
  });

  it('only the live name drifted: no file is touched, no diff', () => {
    const plan = planHostname(params(), state({ live: 'other' }), env);
    expect(plan).toMatchObject({ changed: true, undo: { hostname: null, hosts: null, live: 'other' } });
    expect(plan.summary).toBe('set host name web1 (live: other → web1)');
    expect(plan.diff).toBeUndefined();
  });

  it('only /etc/hosts: a 127.0.1.1 line with other names is replaced', () => {
    const plan = planHostname(params(), state({ hosts: file('127.0.0.1 localhost\n127.0.1.1 debian\n') }), env);
    expect(plan.summary).toBe('set host name web1 (/etc/hosts: 127.0.1.1 debian → web1.example.org web1)');
    expect(plan.diff).toContain('-127.0.1.1 debian\n+127.0.1.1\tweb1.example.org web1');
    expect(plan.undo).toMatchObject({ hostname: null, live: null, hosts: { kind: 'file', path: '/etc/hosts' } });
  });

  it('hosts_entry: false leaves /etc/hosts unread and alone', () => {
    const plan = planHostname(params({ fqdn: undefined, hosts_entry: false }), state({ hosts: undefined, live: 'x' }), env);
    expect(plan.undo).toMatchObject({ hosts: null, live: 'x' });
  });

  it('no /etc/hostname: created (undo removes it)', () => {
    const plan = planHostname(params(), state({ hostname: absent }), env);
    expect(plan.summary).toBe('set host name web1 (create /etc/hostname)');
    expect(plan.undo).toMatchObject({ hostname: { kind: 'absent', path: '/etc/hostname', created: [] } });
  });

  it('/etc/hostname or /etc/hosts as a link is refused, never written through', () => {
    const link: PathState = { kind: 'link', target: '/home/eve/x', owner: 'root', group: 'root', missing: [] };
    expect(() => planHostname(params(), state({ hostname: link, live: 'x' }), env)).toThrow(StepError);
    expect(() => planHostname(params(), state({ hosts: link }), env)).toThrow(/symbolic link \(to \/home\/eve\/x\)/);
  });
});

describe('hostname: reading the host', () => {
  it('the live name, whether systemd runs, then /etc/hostname', () => {
    const raw = Buffer.concat([Buffer.from('h1\0systemd\0file\x00644\0root\0root\x000\0\0'), Buffer.from('h1\n')]);
    const s = parseHostnameCheck(raw);
    expect(s).toMatchObject({ live: 'h1', systemd: true, hostname: { kind: 'file', mode: 0o644 } });
    expect(s.hostname.content?.toString()).toBe('h1\n');
  });
});

describe('hostname: undo data', () => {
  const undo = { name: 'web1', hostname: { kind: 'file', path: '/etc/hostname', backup: '/var/lib/hostsmith/backups/R1/x/etc/hostname' }, hosts: null, live: 'h1' };
  it('says what rollback puts back', () => {
    expect(hostnameStep.undoSummary!(undo)).toBe('set the running host name back to h1; put back file /etc/hostname from the backup /var/lib/hostsmith/backups/R1/x/etc/hostname');
  });
  it.each([
    [{ ...undo, name: 'web2' }, /for host name "web2"/],
    [{ ...undo, live: '-rf' }, /cannot take/],
    [{ ...undo, live: 'a b' }, /cannot take/],
    [{ ...undo, hostname: { kind: 'file', path: '/etc/shadow' } }, /not the step's \/etc\/hostname/],
    [{ ...undo, hosts: { kind: 'file', path: '/etc/hosts', backup: '/tmp/evil' } }, /not in a hostsmith backup folder/],
  ])('refuses journaled data that is not its own: %j', (u, why) => {
    expect(hostnameStep.undoMismatch!(params(), u)).toMatch(why);
  });
  it('accepts its own', () => {
    expect(hostnameStep.undoMismatch!(params(), undo)).toBeUndefined();
  });
  it('the watchdog script sets the name back and restores the file, trying each', () => {
    const script = hostnameStep.hostRollback!(params(), undo as never, { host: 'h', runId: 'R1', step: 's', backupDir: '/b', init: 'sysvinit' });
    expect(script).toMatch(/hostname h1/);
    expect(script).toMatch(/hostname\.bak|\/var\/lib\/hostsmith\/backups\/R1\/x\/etc\/hostname/);
    expect(script).toMatch(/\|\| hs_rc=1/);
  });
});
