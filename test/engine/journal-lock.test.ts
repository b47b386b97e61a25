/**
 * A lock another run holds, judged from this controller: a run that still runs is waited for; a
 * lock whose run finished, or whose controller is gone (its pid dead, or reused by another
 * process), is reported STALE with the run id, `hostsmith show <id>` and the command that clears
 * it — and is left in place. The lock script runs for real (local transport, as root, in /tmp);
 * processes are real ones this test starts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { controllerState, localProbe, processInfo } from '../../src/engine/controller.js';
import { Journal } from '../../src/engine/journal.js';
import { acquireLock, parseOwner } from '../../src/engine/lock.js';
import { Masker } from '../../src/engine/mask.js';
import { LocalTransport } from '../../src/transport/local.js';
import { quote } from '../../src/shell/script.js';
import { hostFinished, runFinished, runStarted } from './journal-entries.js';

const HERE = hostname();
const DEAD_PID = 4_000_000; // above Linux's pid_max limit (2^22): never a live process

function rootTransport(): LocalTransport {
  const t = new LocalTransport('local');
  t.identify('root');
  return t;
}

/** A process this test owns; its command line says `hostsmith` only if asked to. */
function startProcess(hostsmithLike: boolean): Promise<ChildProcess> {
  const child = hostsmithLike ? spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)', 'hostsmith-apply'], { stdio: 'ignore' }) : spawn('sleep', ['60'], { stdio: 'ignore' });
  const started = new Promise<void>((res, rej) => {
    child.once('spawn', () => res());
    child.once('error', rej);
  });
  // Spawned is not yet readable: on a loaded machine /proc showed an empty command line for a
  // moment (seen once in CI), which reads as a kernel thread. Wait until it shows the program.
  const program = hostsmithLike ? 'hostsmith-apply' : 'sleep';
  return started.then(async () => {
    for (let i = 0; i < 200; i++) {
      try {
        if (readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').includes(program)) return child;
      } catch {
        // not there yet
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`pid ${child.pid} never showed ${program} in /proc`);
  });
}

describe("processInfo and controllerState (this machine's /proc)", () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });

  it('reads this process: its command line and when it started', () => {
    const p = processInfo(process.pid)!;
    expect(p.cmdline).toBe(process.title); // vitest renames its workers; /proc shows that name
    expect(Math.abs(p.startedAtMs - (Date.now() - process.uptime() * 1000))).toBeLessThan(2500);
    expect(p.zombie).toBe(false);
    expect(p.files?.length).toBeGreaterThan(0);
    expect(processInfo(DEAD_PID)).toBeUndefined();
  });

  it('a hostsmith process that started before the run is running; dead, reused or later pids are gone; another machine cannot tell', async () => {
    const hs = await startProcess(true);
    const other = await startProcess(false);
    children.push(hs, other);
    const now = new Date().toISOString();
    expect(controllerState({ controller: HERE, pid: hs.pid!, since: now })).toEqual({ kind: 'running' });
    expect(controllerState({ controller: HERE, pid: DEAD_PID, since: now })).toEqual({ kind: 'gone', why: `pid ${DEAD_PID} is not running` });
    expect(controllerState({ controller: HERE, pid: other.pid!, since: now })).toEqual({ kind: 'gone', why: `pid ${other.pid} is now another program (sleep 60)` });
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString();
    expect(controllerState({ controller: HERE, pid: hs.pid!, since: hourAgo })).toMatchObject({ kind: 'gone', why: expect.stringContaining('a later hostsmith process') });
    expect(controllerState({ controller: 'elsewhere-box', pid: hs.pid!, since: now })).toEqual({ kind: 'elsewhere' });
    // A program using hostsmith as a library: its command line does not say so, but it holds the run's journal open.
    const dir = mkdtempSync(join(tmpdir(), 'lib-'));
    try {
      writeFileSync(join(dir, 'run-lib.ndjson'), '');
      const lib = spawn('sh', ['-c', `exec 3<${quote(join(dir, 'run-lib.ndjson'))}; exec sleep 61`], { stdio: 'ignore' });
      children.push(lib);
      await new Promise((r) => setTimeout(r, 300));
      expect(processInfo(lib.pid!)!.cmdline).toBe('sleep 61');
      const libRun = { controller: HERE, pid: lib.pid!, since: new Date().toISOString() };
      expect(controllerState({ ...libRun, runId: 'run-other' })).toMatchObject({ kind: 'gone' });
      // The journal lives in <state>/runs/: only that path counts.
      expect(controllerState({ ...libRun, runId: 'run-lib' })).toMatchObject({ kind: 'gone' });
      rmSync(dir, { recursive: true });
      const runs = mkdtempSync(join(tmpdir(), 'lib-'));
      mkdirSync(join(runs, 'runs'));
      writeFileSync(join(runs, 'runs', 'run-lib.ndjson'), '');
      const lib2 = spawn('sh', ['-c', `exec 3<${quote(join(runs, 'runs', 'run-lib.ndjson'))}; exec sleep 62`], { stdio: 'ignore' });
      children.push(lib2);
      await new Promise((r) => setTimeout(r, 300));
      expect(controllerState({ controller: HERE, pid: lib2.pid!, since: new Date().toISOString(), runId: 'run-lib' })).toEqual({ kind: 'running' });
      rmSync(runs, { recursive: true });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // A zombie (exited, not reaped) is gone too.
    expect(controllerState({ controller: HERE, pid: 1, since: now }, { here: HERE, info: () => ({ cmdline: '', startedAtMs: 0, zombie: true }) })).toEqual({ kind: 'gone', why: 'pid 1 has exited' });
    expect(localProbe.here).toBe(HERE);
  });

  it.each([
    ['run=20240501T030000Z-abc123 controller=vm pid=77 since=2024-05-01T03:00:00.000Z', { runId: '20240501T030000Z-abc123', controller: 'vm', pid: 77, since: '2024-05-01T03:00:00.000Z' }],
    ['run=../x controller=vm pid=77 since=t', undefined],
    ['run=a controller=vm pid=0 since=t', undefined],
    ['run=a controller=vm pid=7 since=t extra', undefined],
    ['garbage', undefined],
  ])('parseOwner(%j)', (text, owner) => {
    expect(parseOwner(text)).toEqual(owner);
  });
});

describe.runIf(process.getuid?.() === 0)('a lock held by another run: stale or not, said with the run and the way out', () => {
  let tmp: string;
  let rootDir: string;
  let state: string;
  const children: ChildProcess[] = [];
  beforeEach(() => {
    // In /tmp itself: the lock script checks every folder above the lock (the test's own TMPDIR is fine for root).
    tmp = mkdtempSync(join(tmpdir(), 'hostsmith-held-'));
    chmodSync(tmp, 0o755);
    rootDir = join(tmp, 'run-hostsmith');
    state = join(tmp, 'state');
  });
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  });

  /** Takes the lock for `holder`, writes `owner` into it as a crashed or living run would have, and tries a second run. */
  async function refusedBy(owner: string): Promise<string> {
    const held = await acquireLock(rootTransport(), join(tmp, 'base'), 'holder', false, { rootLockDir: rootDir });
    writeFileSync(join(held.path, 'owner'), `${owner}\n`);
    const e = await acquireLock(rootTransport(), join(tmp, 'base'), 'second', false, { rootLockDir: rootDir, stateDir: state }).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(e, 'the second run must be refused').toBeInstanceOf(Error);
    // Never broken silently: the holder's lock is still there, as it was.
    expect(existsSync(join(held.path, 'owner'))).toBe(true);
    return e!.message;
  }
  const lockPath = () => join(rootDir, 'lock');
  const clear = () => `remove ${lockPath()} on the host (on local: \`rm -rf -- ${quote(lockPath())}\`)`;

  it('its pid is dead on this controller: STALE, naming the run, `hostsmith show <id>` and the command that clears it', async () => {
    const since = new Date().toISOString();
    const m = await refusedBy(`run=run-crashed controller=${HERE} pid=${DEAD_PID} since=${since}`);
    expect(m).toContain(`locked by another hostsmith run (run=run-crashed controller=${HERE} pid=${DEAD_PID} since=${since}; lock ${lockPath()}, owned by root)`);
    expect(m).toContain(`The lock is STALE: run run-crashed was started on this controller (${HERE}) and its controller is gone (pid ${DEAD_PID} is not running)`);
    expect(m).toContain('`hostsmith show run-crashed` (its journal is not in');
    expect(m).toContain(clear());
    expect(m).not.toContain('<run>');
  });

  it('its pid now belongs to another program: STALE', async () => {
    const other = await startProcess(false);
    children.push(other);
    const m = await refusedBy(`run=run-x controller=${HERE} pid=${other.pid} since=${new Date().toISOString()}`);
    expect(m).toContain(`its controller is gone (pid ${other.pid} is now another program (sleep 60))`);
  });

  it('its journal here names another pid than the lock: STALE', async () => {
    const hs = await startProcess(true);
    children.push(hs);
    const j = await Journal.create(state, 'run-j', new Masker([]));
    await j.write(runStarted(['local'], { pid: 12345, controller: HERE, runId: 'run-j' }));
    await j.close();
    const m = await refusedBy(`run=run-j controller=${HERE} pid=${hs.pid} since=${new Date().toISOString()}`);
    expect(m).toContain(`its controller is gone (its journal names pid 12345, not the lock's pid ${hs.pid})`);
    expect(m).toContain('`hostsmith recover run-j` finishes that run: it rolls back what the run left on the host and releases the lock (`hostsmith show run-j` shows what is left).');
  });

  it('its run finished (its journal here has run-finished): a lock left over from a finished run', async () => {
    const j = await Journal.create(state, 'run-done', new Masker([]));
    for (const e of [runStarted(['local'], { controller: HERE, runId: 'run-done' }), hostFinished('local', 'ok'), runFinished('ok', 0)]) await j.write(e);
    await j.close();
    const m = await refusedBy(`run=run-done controller=${HERE} pid=${process.pid} since=${new Date().toISOString()}`);
    expect(m).toMatch(
      /The lock is STALE: it is left over from run run-done, which finished \(ok, exit 0, at \S+\) without releasing it\. See what that run did: `hostsmith show run-done`; then remove/,
    );
    expect(m).toContain(clear());
  });

  it('its controller still runs the run: wait, and nothing is called stale', async () => {
    const hs = await startProcess(true);
    children.push(hs);
    const m = await refusedBy(`run=run-live controller=${HERE} pid=${hs.pid} since=${new Date().toISOString()}`);
    expect(m).toContain(`Run run-live is still running on this controller (pid ${hs.pid}): wait for it to finish (\`hostsmith show run-live\``);
    expect(m).not.toMatch(/stale/i);
  });

  it('another controller holds it: named, with its run id', async () => {
    const m = await refusedBy(`run=run-far controller=build-box-7 pid=99 since=${new Date().toISOString()}`);
    expect(m).toContain(
      'Run run-far belongs to another controller, build-box-7 (pid 99): check there whether it still runs (`hostsmith show run-far` on build-box-7). If that controller is gone, remove',
    );
  });

  it("owner text that is not a run's: wait, or remove it if no run is active", async () => {
    const m = await refusedBy('someone wrote this');
    expect(m).toContain(`Wait for it to finish. If no hostsmith run is active on local, then ${clear()}.`);
  });
});
