/**
 * Lockout protection (`--confirm <duration>`, SPEC §12). After a host's steps and handlers, a
 * watchdog is left on the host: a POSIX sh process, outside every SSH session, that sleeps for the
 * duration and then rolls the run back there on its own. The controller opens a brand-new SSH
 * connection (new TCP connection, new authentication), runs the recipe's `verify:` commands, and
 * only if both work claims the watchdog and removes it (confirmed). Otherwise it rolls the host back
 * over the run's own connection when that still works; when that is gone too, it waits for the
 * watchdog to do it, connects again and reads what the watchdog did.
 *
 * The watchdog's rollback is each step type's hostRollback() — host scripts built from the same
 * undo data the controller's rollback uses (file, template and line steps run the very same
 * script) — newest first, then the handlers of what it put back. Claiming is `mkdir claim`: whoever
 * makes that folder first (the watchdog when its time is up, or the controller confirming or taking
 * over) owns the outcome, so the two can never both roll back.
 */
import { watchdogFiles, type Part } from './host-scripts.js';
export { watchdogFiles } from './host-scripts.js';
import { posix } from 'node:path';
import { ConnectError, errorMessage } from '../errors.js';
import { render } from '../render/template.js';
import type { StepSpec } from '../recipe/types.js';
import { tail, type HostEnv } from '../steps/step.js';
import type { ShellTransport } from '../transport/base.js';
import { quote } from '../shell/script.js';
import type { Completed } from './host-state.js';
import type { Recorder } from './recorder.js';

export type { ConfirmOptions } from './host-run.js';
import type { ConfirmOptions } from './host-run.js';

/** What the watchdog did, read back from the host. */
export interface Fired {
  result: 'rolled-back' | 'rollback-incomplete';
  /** Steps (names) its rollback put back, and those it could not. */
  ok: string[];
  failed: string[];
  log: string;
}

export type Protection =
  | { kind: 'confirmed' }
  | { kind: 'none' }
  /** Not confirmed: `why`; the controller rolls back itself (claimed), or the watchdog did (`fired`). */
  | { kind: 'failed'; why: string; fired?: Fired }
  /**
   * Not confirmed and the host cannot be reached again: the watchdog rolls back on its own (or
   * has). `armed: false`: the link went while the watchdog was being put on the host, so whether
   * there is one is not known.
   */
  | { kind: 'lost'; why: string; armed: boolean };

/** /var/lib/hostsmith/watchdog/<run-id>: beside the run's backups, root-only. */
export function watchdogDir(rootBackupDir: string, runId: string): string {
  return posix.join(posix.dirname(posix.dirname(rootBackupDir)), 'watchdog', runId);
}

/**
 * Writes the files and starts the watchdog in a session of its own (setsid), with no link to the
 * SSH channel and without the run's HOSTSMITH_RUN tag (recover stops what carries it). Resolves
 * once it runs.
 */
export async function armWatchdog(transport: ShellTransport, sudo: boolean, dir: string, files: Record<string, string>): Promise<void> {
  const d = quote(dir);
  const writes = Object.entries(files).map(([name, text]) => `printf %s ${quote(Buffer.from(text).toString('base64'))} | base64 -d > ${d}/${name} || exit 1`);
  const script = [
    'umask 077',
    `rm -rf -- ${d} && mkdir -p -- ${d} || exit 1`,
    ...writes,
    `(cd / && exec env -u HOSTSMITH_RUN setsid sh ${d}/watchdog.sh </dev/null >>${d}/log 2>&1) &`,
    `i=0; while [ ! -s ${d}/pid ]; do i=$((i+1)); [ $i -lt 100 ] || { echo 'the watchdog did not start' >&2; exit 1; }; sleep 0.05; done`,
  ].join('\n');
  const r = await transport.exec(script, { sudo });
  if (r.code !== 0) throw new Error(`could not start the watchdog in ${dir}: ${tail(r.stderr) || `exit ${r.code}`}`);
}

/**
 * Takes the watchdog's claim and removes it (process and files). 'fired': the watchdog's time ran
 * out and it is rolling back (or has); 'gone': there is no watchdog folder.
 */
export async function claimWatchdog(transport: ShellTransport, sudo: boolean, dir: string): Promise<'claimed' | 'fired' | 'gone'> {
  const d = quote(dir);
  const r = await transport.exec(
    [`[ -d ${d} ] || exit 4`, `mkdir ${d}/claim 2>/dev/null || exit 3`, `pid=$(cat ${d}/pid 2>/dev/null); if [ -n "$pid" ]; then kill -TERM -"$pid" 2>/dev/null; fi`, `rm -rf -- ${d}`].join('\n'),
    { sudo },
  );
  if (r.code === 0) return 'claimed';
  if (r.code === 3) return 'fired';
  if (r.code === 4) return 'gone';
  throw new Error(`could not reach the watchdog in ${dir}: ${tail(r.stderr) || `exit ${r.code}`}`);
}

/** The watchdog's outcome once it has one; 'running' while it sleeps or rolls back; 'gone' without a folder. */
export async function readWatchdog(transport: ShellTransport, sudo: boolean, dir: string, names: string[]): Promise<Fired | 'running' | 'gone'> {
  const d = quote(dir);
  const r = await transport.exec(`if [ -f ${d}/result ]; then cat ${d}/result; echo ---; cat ${d}/steps; echo ---; tail -c 3000 ${d}/log; elif [ -d ${d} ]; then echo running; else echo gone; fi`, {
    sudo,
  });
  if (r.code !== 0) throw new Error(`could not read the watchdog in ${dir}: ${tail(r.stderr) || `exit ${r.code}`}`);
  const out = r.stdout;
  if (out.trim() === 'running') return 'running';
  if (out.trim() === 'gone') return 'gone';
  const [result, steps = '', log = ''] = out.split('\n---\n');
  const ok: string[] = [];
  const failed: string[] = [];
  for (const line of steps.split('\n')) {
    const [status, i] = line.split(' ');
    const name = names[Number(i)];
    if (name === undefined) continue;
    (status === 'ok' ? ok : failed).push(name);
  }
  return { result: result?.trim() === 'rolled-back' ? 'rolled-back' : 'rollback-incomplete', ok, failed, log: log.trim() };
}

export async function removeWatchdog(transport: ShellTransport, sudo: boolean, dir: string): Promise<void> {
  await transport.exec(`rm -rf -- ${quote(dir)}`, { sudo });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long a fired watchdog is waited for: its rollback may be installing packages back. */
const WATCHDOG_WAIT_MS = 30 * 60_000;

/** Waits for the watchdog's outcome: polls, up to `ms`. */
export async function awaitWatchdog(transport: ShellTransport, sudo: boolean, dir: string, names: string[], ms = WATCHDOG_WAIT_MS): Promise<Fired | 'gone' | 'timeout'> {
  const until = Date.now() + ms;
  for (;;) {
    const r = await readWatchdog(transport, sudo, dir, names);
    if (r !== 'running') return r;
    if (Date.now() > until) return 'timeout';
    await sleep(1000);
  }
}

/** Handlers to run again after a rollback: those that ran, for steps now put back. The controller's rollback (run.ts) and the watchdog both pick them here. */
export function dueHandlers(completed: Completed[], handlers: StepSpec[]): Completed[] {
  const undone = completed.filter((step) => !handlers.includes(step.spec));
  return completed.filter((step) => handlers.includes(step.spec) && undone.some((u) => u.spec.notify.includes(step.spec.name)));
}

/** Which host and run the watchdog's scripts are for, and the host's init system (`facts.init`). */
export interface WatchdogHost {
  host: string;
  runId: string;
  init: string;
}

function envOf(at: WatchdogHost, step: Completed): HostEnv {
  return { host: at.host, runId: at.runId, step: step.spec.name, backupDir: step.ctx.backupDir, init: at.init === 'systemd' ? 'systemd' : 'sysvinit' };
}

/** The steps the watchdog rolls back, newest first, as (name, host script). */
export function watchdogParts(completed: Completed[], handlers: StepSpec[], at: WatchdogHost): { steps: Part[]; handlers: Part[] } {
  const steps = [...completed]
    .filter((step) => !handlers.includes(step.spec))
    .reverse()
    .map((step) => ({ name: step.spec.name, script: step.undo === null || !step.type.hostRollback ? null : step.type.hostRollback(step.params, step.undo, envOf(at, step)) }));
  const again = dueHandlers(completed, handlers).map((step) => ({ name: step.spec.name, script: step.type.hostRun ? step.type.hostRun(step.params, envOf(at, step)) : null }));
  return { steps, handlers: again };
}

const now = () => new Date().toISOString();

/** Journals (and reports) a step the watchdog put back, as any rollback is recorded, so undo and show see it taken back. */
export async function recordWatchdogRollback(rec: Recorder, runId: string, host: string, step: string, type: string): Promise<void> {
  const base = { time: now(), host, step, type };
  await rec.write({ kind: 'rollback-started', ...base });
  await rec.write({ kind: 'rollback-finished', ...base, status: 'rolled-back' });
  rec.emit({ event: 'rollback-finished', runId, ...base, status: 'rolled-back' });
}

/** What lockout protection is given, beside the completed steps it protects. */
export interface ProtectInputs extends WatchdogHost {
  /** The run's own connection. */
  transport: ShellTransport;
  rec: Recorder;
  handlers: StepSpec[];
  /** The host's sudo, for the verify commands. */
  sudo: boolean;
  /** The scope the verify commands render in. */
  scope(): Record<string, unknown>;
  /** Root's backup folder of the run: the watchdog's folder is beside it. */
  rootBackupDir: string;
  /** How long the run's own connection is tried again when it is lost. */
  reconnectMs: number;
}

/**
 * Arms the watchdog, checks the next login and the verify commands, and confirms or not (see the
 * file's comment). Journaled: `watchdog` entries armed (before the watchdog exists), confirmed,
 * disarmed (the controller rolls back itself), fired (what the watchdog did, read back).
 */
export async function protect(completed: Completed[], inputs: ProtectInputs, confirm: ConfirmOptions): Promise<Protection> {
  const { host, runId, rec } = inputs;
  if (!completed.length) return { kind: 'none' };
  const { transport } = inputs;
  const sudo = true;
  const dir = watchdogDir(inputs.rootBackupDir, runId);
  const parts = watchdogParts(completed, inputs.handlers, inputs);
  const names = parts.steps.map((s) => s.name);
  const seconds = Math.max(1, Math.ceil(confirm.ms / 1000));
  const deadline = Date.now() + seconds * 1000;
  const say = (what: 'armed' | 'confirmed' | 'disarmed' | 'fired' | 'waiting', message: string) => rec.emit({ event: 'watchdog', runId, time: now(), host, what, message });
  await rec.write({ kind: 'watchdog', event: 'armed', time: now(), host, dir, seconds, deadline: new Date(deadline).toISOString(), steps: names });
  // Fault injection: the run's own link goes just as the watchdog is armed (the arming fails).
  if (process.env.HOSTSMITH_FAULT_CUT_BEFORE_ARM === '1') (transport as { cutForTest?(): void }).cutForTest?.();
  await armWatchdog(transport, sudo, dir, watchdogFiles(dir, seconds, parts.steps, parts.handlers));
  say(
    'armed',
    `watchdog armed: the host rolls this run back by itself at ${new Date(deadline).toISOString()} unless confirmed; checking a new login${confirm.verify.length ? ` and ${confirm.verify.length} verify command(s)` : ''}`,
  );
  if (process.env.HOSTSMITH_FAULT_KILL_AFTER_ARM === '1') process.kill(process.pid, 'SIGKILL');
  // Fault injection: the run's own link goes, as a firewall rule the run added would take it.
  if (process.env.HOSTSMITH_FAULT_CUT_AFTER_ARM === '1') (transport as { cutForTest?(): void }).cutForTest?.();

  let failure: string | undefined;
  let fresh: ShellTransport | undefined;
  // The host's timer started after `deadline` was set, so it fires a little later; a login that
  // hangs until the deadline would still leave the controller racing it to disarm. It stops
  // waiting early enough to disarm first: a fifth of the window, at most 3 s.
  const giveUpAt = deadline - Math.min(3000, seconds * 200);
  try {
    fresh = await within(confirm.openFresh(), giveUpAt - Date.now(), 'connecting');
    fresh.identify(transport.loginUser);
    const scope = inputs.scope();
    for (const [i, text] of confirm.verify.entries()) {
      const cmd = render(text, scope, { field: `verify[${i}]` });
      const left = giveUpAt - Date.now();
      if (left <= 0) throw new Error('the confirmation time ran out while verifying');
      const r = await fresh.exec(cmd, { sudo: inputs.sudo, timeoutMs: left });
      if (r.code !== 0) {
        failure = `verify command "${cmd}" exited ${r.code}${tail(r.stderr) || tail(r.stdout) ? `: ${tail(r.stderr) || tail(r.stdout)}` : ''}`;
        break;
      }
    }
    if (!failure) {
      const claim = await claimWatchdog(fresh, sudo, dir);
      if (claim === 'claimed') {
        await rec.write({ kind: 'watchdog', event: 'confirmed', time: now(), host, dir });
        say('confirmed', 'confirmed over a new connection: the watchdog is removed');
        return { kind: 'confirmed' };
      }
      failure = claim === 'fired' ? 'the confirmation came too late: the watchdog had started rolling back' : 'the watchdog was gone before it could be confirmed';
    }
  } catch (e) {
    failure ??= `a new SSH connection to ${host} did not work (${errorMessage(e)})`;
  } finally {
    await fresh?.close().catch(() => undefined);
  }

  const why = `not confirmed: ${failure}`;
  try {
    const claim = await claimWatchdog(transport, sudo, dir);
    if (claim === 'claimed') {
      await rec.write({ kind: 'watchdog', event: 'disarmed', time: now(), host, dir, error: failure });
      say('disarmed', `${why}; rolling back over the run's own connection`);
      return { kind: 'failed', why };
    }
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    say('waiting', `${why}; the run's own connection is gone too: waiting for the watchdog (at ${new Date(deadline).toISOString()}), then connecting again`);
    // The watchdog needs a moment after its time to put sshd back: until the budget, a refused
    // login is tried again too (it is what the rollback fixes).
    await sleep(Math.max(0, deadline - Date.now()) + 1000);
    const until = Date.now() + inputs.reconnectMs;
    for (;;) {
      try {
        if (!transport.reconnect) throw e;
        await transport.reconnect(Math.min(10_000, Math.max(1000, until - Date.now())));
        break;
      } catch (e2) {
        if (!(e2 instanceof ConnectError)) throw e2;
        if (Date.now() >= until) return { kind: 'lost', armed: true, why: `${why}; the host could not be reached again after the watchdog's time (${errorMessage(e2)})` };
        await sleep(2000);
      }
    }
  }
  const fired = await awaitWatchdog(transport, sudo, dir, names);
  if (fired === 'gone' || fired === 'timeout') {
    return {
      kind: 'failed',
      why: `${why}; the watchdog ${fired === 'gone' ? 'left no outcome' : 'had not finished after 30 minutes'}`,
      fired: { result: 'rollback-incomplete', ok: [], failed: names, log: '' },
    };
  }
  await rec.write({ kind: 'watchdog', event: 'fired', time: now(), host, dir, result: fired.result, rolledBack: fired.ok, failed: fired.failed, ...(fired.log ? { log: fired.log } : {}) });
  await removeWatchdog(transport, sudo, dir);
  say('fired', `the watchdog rolled the host back by itself: ${fired.result}${fired.failed.length ? ` (not put back: ${fired.failed.join(', ')})` : ''}`);
  return { kind: 'failed', why, fired };
}

/** A connection that arrives after the time ran out is closed, not leaked. */
function within(pending: Promise<ShellTransport>, ms: number, what: string): Promise<ShellTransport> {
  return new Promise<ShellTransport>((res, rej) => {
    let late = false;
    const timer = setTimeout(
      () => {
        late = true;
        rej(new Error(`${what} took longer than the confirmation time`));
      },
      Math.max(0, ms),
    );
    pending.then(
      (v) => {
        clearTimeout(timer);
        if (late) v.close().catch(() => undefined);
        else res(v);
      },
      (e) => {
        clearTimeout(timer);
        rej(e);
      },
    );
  });
}
