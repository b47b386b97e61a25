import { hostname } from 'node:os';
import { acquireScript, releaseScript } from './host-scripts.js';
import { HostsmithError, LockedError, errorMessage } from '../errors.js';
import { quote } from '../shell/script.js';
import type { Transport } from '../transport/transport.js';
import { controllerState, localProbe, type ControllerProbe } from './controller.js';
import { readJournal, runsDir } from './journal.js';
import { replay, type ControllerState, type RunState } from './replay.js';

/**
 * A run holds a lock on each host: a directory made with mkdir (atomic), holding an `owner` file
 * that names the run (`run=<id> controller=<machine> pid=<pid> since=<time>`).
 *
 * Where it lives decides who can fake it, so it lives where only the run's own user can create it:
 * - a run with root (login root, or sudo for the run): `/run/hostsmith/lock`. /run is root's, so no
 *   other user can make that folder or anything in it; it is cleared at boot.
 * - a run without root: `<base>/lock` (`~/.local/state/hostsmith/lock` of the login user).
 *
 * Every folder the lock relies on (its parent and each folder above) must be owned by root or by
 * the user the lock is taken as, and writable by nobody else unless sticky: otherwise another
 * user could have made the lock, or could remove or replace ours, and the run refuses, naming the
 * folder and its owner. A lock folder owned by anyone else is likewise not ours, and said so.
 *
 * Root runs and runs without root: a run without root also honours a root run's lock (it can read
 * /run/hostsmith/lock, and only root can have made it). The other way round cannot be made safe —
 * anything a user's run can create on the host, that user can also create by hand — so a root run
 * never waits for a lock a non-root user could have made, and no user can block it.
 */

/** Where runs with root keep their lock folder. */
export const ROOT_LOCK_DIR = '/run/hostsmith';

/** The release of a held lock; `path` is where the lock is on the host. */
export interface HeldLock {
  (): Promise<void>;
  readonly path: string;
  /**
   * Who took a lock in that folder last before this one (the `last` file: the owner line of the
   * run before), '' when no run did since boot; undefined when the lock was adopted.
   */
  readonly before?: string;
}

export { LAST_FILE } from './host-scripts.js';

export interface LockOptions {
  /** Where a run with root keeps its lock (tests point it elsewhere). */
  rootLockDir?: string;
  /** This controller's state dir: the holder's journal there says whether its run finished. */
  stateDir?: string;
  /** How to tell whether a holder's controller runs (tests stand in for /proc). */
  probe?: ControllerProbe;
  /**
   * `recover`: a lock held by this run id (the crashed run being finished) is taken over as it is,
   * and released at the end like one's own. Any other holder is refused as usual.
   */
  adopt?: string;
}

/** The first line of the owner file, as the stale-lock check and the release read it. */
export function ownerLine(runId: string): string {
  return `run=${runId} controller=${hostname()} pid=${process.pid} since=${new Date().toISOString()}`;
}

/** Who may own a lock, in words, for messages. */
function rightful(asRoot: boolean, login: string | undefined): string {
  return asRoot ? 'root' : `root or ${login ?? 'the login user'}`;
}

/** Takes the run lock on a host, or throws LockedError saying why not and what to do. */
export async function acquireLock(t: Transport, baseDir: string, runId: string, sudo: boolean, o: LockOptions = {}): Promise<HeldLock> {
  const rootDir = o.rootLockDir ?? ROOT_LOCK_DIR;
  const r = await t.exec(acquireScript(baseDir, rootDir, ownerLine(runId)), { sudo });
  if (r.code !== 0) {
    const hint = sudo ? 'the login user may lack sudo rights on this host' : 'log in as root, or use sudo (--sudo, sudo: true)';
    throw new LockedError(t.name, `cannot take the run lock: ${r.stderr.trim() || `exit ${r.code}`} (${hint})`);
  }
  const [kind = '', path = '', ownerName = '', ...rest] = r.stdout.split('\0');
  const login = (t as { loginUser?: string }).loginUser;
  const asRoot = sudo || login === 'root';
  switch (kind) {
    case 'LOCKED': {
      const release = () => releaseLock(t, path, runId, sudo);
      return Object.assign(release, { path, before: ownerName });
    }
    case 'HELD': {
      const holder = rest.join('').replace(/\s+/g, ' ').trim() || 'an unknown run: its owner file is empty or missing';
      if (o.adopt && parseOwner(holder)?.runId === o.adopt) return Object.assign(() => releaseLock(t, path, o.adopt!, sudo), { path });
      const clear = `\`${sudo && login !== 'root' ? 'sudo ' : ''}rm -rf -- ${quote(path)}\`${asRoot ? '' : ' (as root if it is not yours)'}`;
      const verdict = await holderVerdict(holder, { host: t.name, path, clear, stateDir: o.stateDir, probe: o.probe ?? localProbe });
      throw new LockedError(t.name, `host is locked by another hostsmith run (${holder}; lock ${path}, owned by ${ownerName}). ${verdict}`);
    }
    case 'UNSAFE': {
      const [mode = '', why = ''] = rest;
      throw new LockedError(
        t.name,
        why === 'owner'
          ? `cannot take the run lock: ${path} is owned by ${ownerName}, not by ${rightful(asRoot, login)}, so hostsmith did not make it and ` +
              `a lock under it could be faked or removed by ${ownerName}. Check who made it and why, remove it (as root: rm -rf -- ${quote(path)}), and run again.`
          : `cannot take the run lock: ${path} is writable by other users (mode ${mode.padStart(4, '0')}), so a lock under it could be faked or removed ` +
              `by them. Make it writable by its owner only (chmod go-w ${quote(path)}) and run again.`,
      );
    }
    case 'FOREIGN': {
      const what = rest[0] === 'owner' ? `it is owned by ${ownerName}, not by ${rightful(asRoot, login)}` : `it is ${rest[0] ?? 'not a folder'}, owned by ${ownerName}`;
      throw new LockedError(
        t.name,
        `${path} is not a hostsmith lock (${what}): no hostsmith run made it, so it is not honoured, but it is in the way. ` +
          `Check who made it and why, remove it (as root: rm -rf -- ${quote(path)}), and run again.`,
      );
    }
    default:
      throw new LockedError(t.name, `cannot take the run lock: unexpected answer from the host (${r.stdout.slice(0, 200)})`);
  }
}

/** The owner line a run writes (ownerLine), taken apart; undefined for any other text. */
export function parseOwner(text: string): { runId: string; controller: string; pid: number; since: string } | undefined {
  const m = /^run=([A-Za-z0-9T_.-]+) controller=(\S+) pid=([1-9]\d{0,9}) since=(\S+)$/.exec(text.trim());
  return m ? { runId: m[1]!, controller: m[2]!, pid: Number(m[3]), since: m[4]! } : undefined;
}

/**
 * What to make of a lock another run holds, and what to do: wait for a run that is alive, or,
 * for a lock that is stale (its run finished, or its controller is gone), see what the run left
 * and clear the lock by hand. Nothing here removes it.
 */
async function holderVerdict(holder: string, o: { host: string; path: string; clear: string; stateDir?: string; probe: ControllerProbe }): Promise<string> {
  const clearIt = `remove ${o.path} on the host (on ${o.host}: ${o.clear})`;
  const owner = parseOwner(holder);
  if (!owner) return `Wait for it to finish. If no hostsmith run is active on ${o.host}, then ${clearIt}.`;
  const id = owner.runId;
  let run: RunState | undefined;
  let journalNote = '';
  if (o.stateDir) {
    try {
      run = replay((await readJournal(o.stateDir, id)).entries);
    } catch {
      journalNote = ` (its journal is not in ${runsDir(o.stateDir)}: add the --state-dir that run used)`;
    }
  }
  const show = `\`hostsmith show ${id}\`${journalNote}`;
  if (run && run.status !== 'open') {
    return (
      `The lock is STALE: it is left over from run ${id}, which finished (${run.status}${run.exitCode !== null ? `, exit ${run.exitCode}` : ''}, at ${run.finishedAt}) without releasing it. ` +
      `See what that run did: ${show}; then ${clearIt}.`
    );
  }
  const state: ControllerState =
    run && owner.controller === o.probe.here && run.pid !== owner.pid ? { kind: 'gone', why: `its journal names pid ${run.pid}, not the lock's pid ${owner.pid}` } : controllerState(owner, o.probe);
  switch (state.kind) {
    case 'running':
      return `Run ${id} is still running on this controller (pid ${owner.pid}): wait for it to finish (${show} shows how far it got).`;
    case 'gone':
      return (
        `The lock is STALE: run ${id} was started on this controller (${owner.controller}) and its controller is gone (${state.why}), so it will never release the lock. ` +
        (run
          ? `\`hostsmith recover ${id}\` finishes that run: it rolls back what the run left on the host and releases the lock (${show} shows what is left).`
          : `See what it left on the host: ${show}; then ${clearIt}.`)
      );
    case 'elsewhere':
      return (
        `Run ${id} belongs to another controller, ${owner.controller} (pid ${owner.pid}): check there whether it still runs (\`hostsmith show ${id}\` on ${owner.controller}). ` +
        `If that controller is gone, ${clearIt}.`
      );
  }
}

/**
 * Removes the lock at `path` only if its owner file still names `runId` (a lock someone else
 * took since, or that was replaced, is left alone and reported). A lock already gone is fine.
 * Its errors do not name the host: the caller adds them to the host's own error.
 */
export async function releaseLock(t: Transport, path: string, runId: string, sudo: boolean): Promise<void> {
  let r: Awaited<ReturnType<Transport['exec']>>;
  try {
    r = await t.exec(releaseScript(path, runId), { sudo });
  } catch (e) {
    throw new HostsmithError(`the run lock could not be released (${errorMessage(e)}): remove ${path} on the host once you have checked that no hostsmith run is active there`);
  }
  const [first = '', ...rest] = r.stdout.split('\n');
  if (r.code === 0 && (first === 'RELEASED' || first === 'GONE')) return;
  if (r.code === 0 && first === 'NOT-OURS') {
    const said = rest.join(' ').trim();
    throw new HostsmithError(
      `the run lock ${path} no longer names this run (${said ? `it says: ${said}` : 'its owner file is empty or missing'}), so it was left in place. ` +
        `Check which run holds it (\`hostsmith history --host ${t.name}\`); remove it by hand only if no run is active.`,
    );
  }
  throw new HostsmithError(`the run lock could not be released (${r.stderr.trim() || `exit ${r.code}`}): remove ${path} on the host once you have checked that no hostsmith run is active there`);
}
