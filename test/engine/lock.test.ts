/**
 * The run lock's script, run for real through the local transport: as root, and as an
 * unprivileged user (the same transport, its command run under `setpriv` as `nobody`).
 * Every lock here lives in a temporary folder, never in this machine's /run.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { acquireLock, releaseLock } from '../../src/engine/lock.js';
import { factsAndLocks } from '../../src/engine/facts.js';
import { LockedError } from '../../src/errors.js';
import { quote } from '../../src/shell/script.js';
import { LocalTransport } from '../../src/transport/local.js';
import type { ExecResult } from '../../src/transport/transport.js';

const NOBODY = 65534;
/** A uid with no name: another user, neither root nor the one taking the lock. */
const STRANGER = 65533;

/** The local transport, its commands run as `nobody`: a login without root. */
class NobodyTransport extends LocalTransport {
  constructor() {
    super('local-nobody');
    this.identify('nobody');
  }
  protected override raw(cmdline: string, o: { stdin?: string | Buffer; timeoutMs?: number; signal?: AbortSignal }): Promise<ExecResult> {
    return super.raw(`exec setpriv --reuid=${NOBODY} --regid=${NOBODY} --clear-groups /bin/sh -c ${quote(cmdline)}`, o);
  }
}

function rootTransport(): LocalTransport {
  const t = new LocalTransport('local');
  t.identify('root');
  return t;
}

async function refusal(p: Promise<unknown>): Promise<LockedError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(LockedError);
  return e as LockedError;
}

const asRoot = process.getuid?.() === 0;

describe.runIf(asRoot)('run lock (as root, through the local transport)', () => {
  let tmp: string;
  let rootDir: string;
  let base: string;
  beforeEach(() => {
    // In /tmp itself, not os.tmpdir(): the test run's private temp folder is root's alone, and
    // nobody must be able to reach its own folder below this one.
    tmp = mkdtempSync('/tmp/hostsmith-lock-');
    chmodSync(tmp, 0o755);
    rootDir = join(tmp, 'run-hostsmith');
    base = join(tmp, 'base');
  });
  afterEach(() => rmSync(tmp, { recursive: true, force: true }));

  it('a root run takes <root dir>/lock, in a folder it makes root-owned 0755, naming the run; release removes it', async () => {
    const release = await acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: rootDir });
    expect(release.path).toBe(join(rootDir, 'lock'));
    const st = statSync(rootDir);
    expect([st.uid, st.mode & 0o7777]).toEqual([0, 0o755]);
    expect(statSync(release.path).uid).toBe(0);
    expect(readFileSync(join(release.path, 'owner'), 'utf8')).toMatch(/^run=run-A controller=\S+ pid=\d+ since=\S+\n$/);
    expect(existsSync(base)).toBe(false); // a root run does not use the login's folder
    await release();
    expect(existsSync(release.path)).toBe(false);
    expect(existsSync(rootDir)).toBe(true);
  });

  it('each take says who locked there last before it, as the facts round trip reads it: a run locking in between shows', async () => {
    const t = rootTransport();
    const lockPaths = [quote(join(rootDir, 'lock')), quote(join(base, 'lock'))];
    const first = await factsAndLocks(t, lockPaths);
    expect(first.lasts).toEqual(['', '']);
    const a = await acquireLock(t, base, 'run-A', false, { rootLockDir: rootDir });
    expect(a.before).toBe(first.lasts[0]); // nobody locked since: quiet
    await a();
    const seen = await factsAndLocks(t, lockPaths);
    expect(seen.lasts[0]).toMatch(/^run=run-A controller=\S+ pid=\d+ since=\S+$/);
    // Another run locks and unlocks between this run's read and its lock: the line moved.
    const other = await acquireLock(t, base, 'run-B', false, { rootLockDir: rootDir });
    await other();
    const c = await acquireLock(t, base, 'run-C', false, { rootLockDir: rootDir });
    expect(c.before).toMatch(/^run=run-B /);
    expect(c.before).not.toBe(seen.lasts[0]);
    await c();
  });

  it('a second run is refused, naming the holder and the lock; the holder keeps its lock', async () => {
    const release = await acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: rootDir });
    const e = await refusal(acquireLock(rootTransport(), base, 'run-B', false, { rootLockDir: rootDir }));
    expect(e.exitCode).toBe(1);
    expect(e.message).toMatch(new RegExp(`^local: host is locked by another hostsmith run \\(run=run-A controller=\\S+ pid=\\d+ since=\\S+; lock ${rootDir}/lock, owned by root\\)`));
    expect(e.message).toContain(`remove ${rootDir}/lock on the host`);
    expect(readFileSync(join(release.path, 'owner'), 'utf8')).toMatch(/^run=run-A /);
    await release();
  });

  it('of runs starting at once exactly one gets the lock', async () => {
    const tries = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => acquireLock(rootTransport(), base, `run-${i}`, false, { rootLockDir: rootDir })));
    const won = tries.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of tries) if (r.status === 'rejected') expect(String(r.reason)).toContain('locked by another hostsmith run');
    await (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof acquireLock>>>).value();
  });

  it('release removes only a lock that still names this run', async () => {
    const release = await acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: rootDir });
    writeFileSync(join(release.path, 'owner'), 'run=run-AB controller=x pid=1 since=now\n');
    await expect(release()).rejects.toThrow(/the run lock .*\/lock no longer names this run \(it says: run=run-AB controller=x .*left in place/);
    expect(existsSync(join(release.path, 'owner'))).toBe(true);
    writeFileSync(join(release.path, 'owner'), 'run=run-A controller=x pid=1 since=now\n');
    await release();
    expect(existsSync(release.path)).toBe(false);
    // Already gone (removed by hand): nothing to do, no error.
    await releaseLock(rootTransport(), release.path, 'run-A', false);
  });

  it('a root folder owned by another user is not ours: refused, naming folder, owner and what to do', async () => {
    mkdirSync(rootDir, { mode: 0o755 });
    chownSync(rootDir, NOBODY, NOBODY);
    const e = await refusal(acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: rootDir }));
    expect(e.message).toBe(
      `local: cannot take the run lock: ${rootDir} is owned by nobody, not by root, so hostsmith did not make it and a lock under it could be faked or removed by nobody. ` +
        `Check who made it and why, remove it (as root: rm -rf -- ${rootDir}), and run again.`,
    );
    expect(existsSync(join(rootDir, 'lock'))).toBe(false);
  });

  it('a folder above the lock owned by another user is refused too', async () => {
    const evil = join(tmp, 'evil');
    mkdirSync(evil, { mode: 0o755 });
    chownSync(evil, STRANGER, STRANGER);
    const e = await refusal(acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: join(evil, 'hostsmith') }));
    expect(e.message).toContain(`${evil} is owned by UNKNOWN, not by root`);
  });

  it('a root folder writable by others is refused; a sticky one above it is fine', async () => {
    mkdirSync(rootDir);
    chmodSync(rootDir, 0o777);
    const e = await refusal(acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: rootDir }));
    expect(e.message).toContain(`${rootDir} is writable by other users (mode 0777)`);
    expect(e.message).toContain(`chmod go-w ${rootDir}`);
    chmodSync(rootDir, 0o1777); // like /tmp: others cannot remove or rename what is ours
    const inner = join(rootDir, 'hostsmith');
    const release = await acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: inner });
    expect(release.path).toBe(join(inner, 'lock'));
    await release();
  });

  it('a lock folder owned by another user, or a symlink, is not a hostsmith lock: said so', async () => {
    mkdirSync(join(rootDir, 'lock'), { recursive: true, mode: 0o755 });
    writeFileSync(join(rootDir, 'lock', 'owner'), 'run=fake\n');
    chownSync(join(rootDir, 'lock'), NOBODY, NOBODY);
    const e = await refusal(acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: rootDir }));
    expect(e.message).toBe(
      `local: ${rootDir}/lock is not a hostsmith lock (it is owned by nobody, not by root): no hostsmith run made it, so it is not honoured, but it is in the way. ` +
        `Check who made it and why, remove it (as root: rm -rf -- ${rootDir}/lock), and run again.`,
    );
    expect(e.message).not.toContain('run=fake');
    rmSync(join(rootDir, 'lock'), { recursive: true });
    symlinkSync('/tmp', join(rootDir, 'lock'));
    const s = await refusal(acquireLock(rootTransport(), base, 'run-A', false, { rootLockDir: rootDir }));
    expect(s.message).toContain(`${rootDir}/lock is not a hostsmith lock (it is not a folder, owned by root)`);
  });

  describe('a run without root (as nobody)', () => {
    beforeEach(() => {
      mkdirSync(base, { mode: 0o755 });
      chownSync(base, NOBODY, NOBODY);
    });

    it('takes <base>/lock as itself, makes <base> 0700, and releases it', async () => {
      const t = new NobodyTransport();
      const release = await acquireLock(t, base, 'run-N', false, { rootLockDir: rootDir });
      expect(release.path).toBe(join(base, 'lock'));
      expect(statSync(release.path).uid).toBe(NOBODY);
      expect(statSync(base).mode & 0o777).toBe(0o700);
      expect(existsSync(rootDir)).toBe(false);
      // A second run of the same user meets it.
      const e = await refusal(acquireLock(new NobodyTransport(), base, 'run-M', false, { rootLockDir: rootDir }));
      expect(e.message).toMatch(/locked by another hostsmith run \(run=run-N .*owned by nobody\)/);
      expect(e.message).toContain('(as root if it is not yours)');
      await release();
      expect(existsSync(release.path)).toBe(false);
    });

    it("is held off by a root run's lock, and leaves no lock of its own behind", async () => {
      const rootRun = await acquireLock(rootTransport(), base, 'run-R', false, { rootLockDir: rootDir });
      const e = await refusal(acquireLock(new NobodyTransport(), base, 'run-N', false, { rootLockDir: rootDir }));
      expect(e.message).toMatch(new RegExp(`locked by another hostsmith run \\(run=run-R .*lock ${rootDir}/lock, owned by root\\)`));
      expect(existsSync(join(base, 'lock'))).toBe(false);
      await rootRun();
      const release = await acquireLock(new NobodyTransport(), base, 'run-N', false, { rootLockDir: rootDir });
      await release();
    });

    it("ignores a 'root' lock that is not root's", async () => {
      mkdirSync(join(rootDir, 'lock'), { recursive: true, mode: 0o755 });
      chownSync(join(rootDir, 'lock'), STRANGER, STRANGER);
      const release = await acquireLock(new NobodyTransport(), base, 'run-N', false, { rootLockDir: rootDir });
      expect(release.path).toBe(join(base, 'lock'));
      await release();
    });

    it('refuses a base folder owned by another user, naming both', async () => {
      chownSync(base, STRANGER, STRANGER);
      const e = await refusal(acquireLock(new NobodyTransport(), base, 'run-N', false, { rootLockDir: rootDir }));
      expect(e.message).toContain(`${base} is owned by UNKNOWN, not by root or nobody`);
    });

    it('a lock folder of another user in its base is not a hostsmith lock', async () => {
      mkdirSync(join(base, 'lock'));
      chownSync(join(base, 'lock'), STRANGER, STRANGER);
      const e = await refusal(acquireLock(new NobodyTransport(), base, 'run-N', false, { rootLockDir: rootDir }));
      expect(e.message).toContain(`${base}/lock is not a hostsmith lock (it is owned by UNKNOWN, not by root or nobody)`);
    });

    it('a base it cannot create is reported with what the host said', async () => {
      const e = await refusal(acquireLock(new NobodyTransport(), join(tmp, 'not-yours', 'x'), 'run-N', false, { rootLockDir: rootDir }));
      expect(e.message).toMatch(/cannot take the run lock: .*Permission denied/);
    });
  });
});
