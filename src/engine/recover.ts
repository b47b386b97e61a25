/**
 * `recover` (SPEC §9): finishes a run its controller left open (a crash, a kill, a host given up
 * after a lost link), from the journal alone.
 *
 * `openRuns` lists runs with no `run-finished` whose controller is gone. `loadRecover` says what
 * each host of one still needs; `runRecover` does it, appending to the run's own journal (so the
 * run's journal tells its whole story, and a recover that is itself killed is continued by the
 * next): `recover-started` (who), then per host, under the run's own host lock (taken over):
 * - the step in flight at the crash is decided by its state: equal to its journaled pre-state,
 *   nothing was changed (closed as `failed`, not rolled back); otherwise it is rolled back with
 *   the undo data journaled before its change;
 * - a rollback the crash stopped is started again (rollbacks restore from backups: doing one
 *   twice leaves the same host);
 * - every other completed step is rolled back, newest first;
 * - handlers the run ran that those steps notify run again (services load what was put back);
 * then `host-finished`, the lock released, and `run-finished` with status `recovered`.
 *
 * Hosts that had finished before the crash keep how they finished (an `ok` host keeps its changes,
 * as the run decided); a host the run stopped rolling back (a second Ctrl-C) is finished too.
 * An undo run is finished the same way: its interrupted rollback completes; what it had not yet
 * taken back stays (run `undo` again for it).
 */
import { hostname } from 'node:os';
import { ConnectError, HostsmithError, InputError, errorMessage } from '../errors.js';
import type { StepSpec } from '../recipe/types.js';
import type { ShellTransport } from '../transport/base.js';
import { rollbackOne } from './apply-step.js';
import { controllerState, localProbe, type ControllerProbe } from './controller.js';
import { type Counts, type Emit, type HostStatus, type RunEvent } from './events.js';
import { gatherFacts } from './facts.js';
import type { Completed, HostRun } from './host-run.js';
import { contextOf, handlersAgain, holdsMask, journaledStep, stateNow, stopLeftovers, type SecretDigests } from './journal-steps.js';
import { Journal, listRunIds, readJournal } from './journal.js';
import { ROOT_LOCK_DIR, acquireLock } from './lock.js';
import { Masker } from './mask.js';
import { Recorder } from './recorder.js';
import { stepType } from '../steps/registry.js';
import { awaitWatchdog, claimWatchdog, recordWatchdogRollback, removeWatchdog } from './watchdog.js';
import { replay, runPhase, type ControllerState, type HostState, type RunPhase, type RunState, type StepState } from './replay.js';

/** Whether an open run's controller (or the newest recover that took it over) still runs. */
export function openRunController(run: RunState, probe: ControllerProbe = localProbe): ControllerState {
  const last = run.recoverers.at(-1);
  const who = last ? { controller: last.controller, pid: last.pid, since: last.since } : { controller: run.controller, pid: run.pid, since: run.startedAt };
  // A recover is a hostsmith process too: its journal is the run's own.
  return controllerState({ ...who, runId: run.runId }, probe);
}

export interface OpenRun {
  run: RunState;
  controller: ControllerState;
  phase: RunPhase;
}

/** Runs with no end in the journal, oldest first, with what is known of their controllers. */
export async function openRuns(stateDir: string, probe: ControllerProbe = localProbe): Promise<OpenRun[]> {
  const out: OpenRun[] = [];
  for (const id of await listRunIds(stateDir)) {
    const j = await readJournal(stateDir, id).catch(() => undefined);
    const run = j && replay(j.entries);
    if (!run || run.status !== 'open') continue;
    const controller = openRunController(run, probe);
    out.push({ run, controller, phase: runPhase(run, controller) });
  }
  return out;
}

/** One host's part of a recovery: what the crash left, newest first. */
export interface RecoverHost {
  host: HostState;
  /** Started, never finished: decided by comparing the state with the journaled pre-state. */
  inFlight: StepState[];
  /** To roll back, newest first (an interrupted rollback among them). */
  rollBack: StepState[];
}

export interface RecoverTarget {
  stateDir: string;
  run: RunState;
  /** The run's secret vars and their digests (run-started). */
  secrets: SecretDigests;
  /** Hosts with work left; a host already finished keeps how it ended. */
  hosts: RecoverHost[];
  /** Hosts that finished before the crash, as they finished. */
  settled: Array<{ name: string; status: string }>;
  /** Secret vars whose values the steps need (their entries hold ***). */
  needsSecrets: string[];
}

/** What recovering `runId` means; refuses a run that finished, or whose controller still runs. */
export async function loadRecover(stateDir: string, runId: string, o: { force?: boolean; probe?: ControllerProbe } = {}): Promise<RecoverTarget> {
  const j = await readJournal(stateDir, runId);
  const run = replay(j.entries);
  if (!run) throw new InputError(`run ${runId} recorded nothing (its journal ${j.file} has no run-started entry): there is nothing to recover`);
  if (run.status !== 'open') {
    throw new InputError(
      `run ${runId} is not open: it finished (${run.status}${run.exitCode !== null ? `, exit ${run.exitCode}` : ''} at ${run.finishedAt}). ` +
        (run.left.length ? `To take back what it left: \`hostsmith undo ${runId}\`.` : 'Nothing of it is left to recover.'),
    );
  }
  const c = openRunController(run, o.probe);
  if (c.kind === 'running') {
    const who = run.recoverers.length ? 'a recover of it' : 'its controller';
    throw new HostsmithError(`run ${runId} is still running: ${who} (pid ${run.recoverers.at(-1)?.pid ?? run.pid}) is alive on this machine. Wait for it to finish; recover only finishes runs whose controller is gone.`, 2);
  }
  if (c.kind === 'elsewhere' && !o.force) {
    throw new HostsmithError(
      `run ${runId} was started on another controller, ${run.recoverers.at(-1)?.controller ?? run.controller}, so whether it still runs cannot be told from here. ` +
        `Check there first; if it is gone, \`hostsmith recover ${runId} --force\` finishes it from this machine.`,
      2,
    );
  }
  const extras = j.entries[0]?.kind === 'run-started' ? j.entries[0] : undefined;
  const secrets: SecretDigests = Object.fromEntries(Object.entries(extras?.secrets ?? {}).map(([n, v]) => [n, v.sha256]));
  const hosts: RecoverHost[] = [];
  const settled: RecoverTarget['settled'] = [];
  for (const h of run.hosts) {
    const work = workOf(run, h);
    if (work) hosts.push(work);
    else if (h.status !== 'pending') settled.push({ name: h.name, status: h.status });
  }
  const needs = hosts.some((h) => [...h.inFlight, ...h.rollBack].some((s) => s.undo !== null && (holdsMask(s.params) || holdsMask(s.undo))));
  return { stateDir, run, secrets, hosts, settled, needsSecrets: needs ? Object.keys(secrets).sort() : [] };
}

/** What a host still needs, or undefined when it finished before the crash (or never started). */
function workOf(run: RunState, h: HostState): RecoverHost | undefined {
  if (h.status === 'pending') return undefined;
  const open = h.status === 'open';
  // A host the run stopped rolling back (second Ctrl-C) finished, but its rollback did not.
  const stopped = h.status === 'interrupted' || h.rollingBack.length > 0;
  if (!open && !stopped) return undefined;
  const newestFirst = (xs: StepState[]) => [...xs].sort((a, b) => (b.completedOrder ?? 0) - (a.completedOrder ?? 0));
  // In an undo run, "completed" steps are its own rollbacks: only one that was stopped part-way is continued.
  const rollBack = run.mode === 'undo' ? newestFirst(h.rollingBack) : newestFirst(h.left);
  const inFlight = h.inFlight.filter((s) => !s.afterRollback && run.mode !== 'undo');
  // An undo run's step-started with no rollback yet, and a handler run again after a rollback, changed nothing to take back.
  const closeOnly = h.inFlight.filter((s) => !inFlight.includes(s));
  return { host: h, inFlight: [...inFlight, ...closeOnly], rollBack };
}

export interface RecoverHostReport extends Counts {
  status: HostStatus;
  /** Rolled back by the recover, newest first. */
  rolledBackSteps: string[];
  /** In flight at the crash, found unchanged: nothing to take back. */
  untouched: string[];
  /** Commands of the run still running on the host, stopped first ("pid command"). */
  stopped: string[];
  /** Not put back, with why. */
  problems: Array<{ step: string; why: string }>;
  /** Nothing could be done (not reached, or its lock is another run's): the host stays open for another recover. */
  leftOpen?: boolean;
  error?: string;
}

export interface RecoverReport {
  runId: string;
  /** Every host was finished and the run closed (`recovered`); else it stays open for another recover. */
  closed: boolean;
  exitCode: number;
  journalFile: string;
  hosts: Record<string, RecoverHostReport>;
}

/**
 * Finishes the run: see the top of this file. `connect` reaches a host as the journal says;
 * `secrets`: values of the run's secret vars, already checked against their digests.
 */
export async function runRecover(
  t: RecoverTarget,
  o: { connect(h: HostState): Promise<ShellTransport>; secrets?: Record<string, string>; emit?: Emit; concurrency?: number },
): Promise<RecoverReport> {
  const runId = t.run.runId;
  const given = o.secrets ?? {};
  const masker = new Masker(Object.values(given));
  const emit: Emit = (e: RunEvent) => o.emit?.(masker.value(e));
  const time = () => new Date().toISOString();
  const journal = await Journal.append(t.stateDir, runId, masker);
  const reports: Record<string, RecoverHostReport> = {};
  try {
    await journal.write({ kind: 'recover-started', time: time(), pid: process.pid, controller: hostname() });
    emit({ event: 'run-started', runId, time: time(), recipe: t.run.recipe, mode: 'recover', hosts: t.hosts.map((h) => h.host.name) });
    let next = 0;
    const worker = async () => {
      while (next < t.hosts.length) {
        const u = t.hosts[next++]!;
        const started = Date.now();
        const r = await recoverHost(u);
        reports[u.host.name] = r;
        // A host that could not be reached stays open in the journal: another recover finishes it.
        if (!r.leftOpen) {
          await journal
            .write({ kind: 'host-finished', time: time(), host: u.host.name, status: r.status, counts: counts(r), ...(r.error ? { error: r.error } : {}) })
            .catch((e: unknown) => {
              r.status = 'rollback-incomplete';
              r.error = `${r.error ?? u.host.name}; the journal could not record it: ${errorMessage(e)}`;
            });
        }
        emit({ event: 'host-finished', runId, time: time(), host: u.host.name, status: r.status, ...counts(r), ...(r.error ? { error: r.error } : {}), durationMs: Date.now() - started });
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(o.concurrency ?? 10, t.hosts.length)) }, worker));
    const statuses = Object.values(reports).map((r) => r.status);
    const exitCode = statuses.includes('rollback-incomplete') ? 3 : statuses.includes('unreachable') ? 4 : statuses.includes('failed') ? 1 : 0;
    const closed = !Object.values(reports).some((r) => r.leftOpen);
    if (closed) await journal.write({ kind: 'run-finished', time: time(), status: 'recovered', exitCode });
    return masker.value({ runId, closed, exitCode, journalFile: journal.file, hosts: reports });
  } finally {
    await journal.close().catch(() => {});
  }

  async function recoverHost(u: RecoverHost): Promise<RecoverHostReport> {
    const name = u.host.name;
    const r: RecoverHostReport = { status: 'rolled-back', changed: 0, unchanged: 0, skipped: 0, failed: 0, rolledBack: 0, rolledBackSteps: [], untouched: [], stopped: [], problems: [] };
    const problem = (step: string, why: string) => {
      r.failed++;
      r.problems.push({ step, why });
    };
    let transport: ShellTransport;
    try {
      transport = await o.connect(u.host);
    } catch (e) {
      return { ...r, status: 'unreachable', leftOpen: true, error: `${name}: ${errorMessage(e)}; nothing was done there: run \`hostsmith recover ${runId}\` again once it can be reached` };
    }
    const rec = new Recorder(journal, emit);
    let release: (() => Promise<void>) | undefined;
    try {
      const facts = await gatherFacts(transport);
      transport.loginUser = facts.user;
      transport.defaultSudo = false;
      emit({ event: 'host-connected', runId, time: time(), host: name, facts });
      // The run's own lock, taken over (or taken again where it is gone, e.g. a host that rebooted).
      const steps = [...u.inFlight, ...u.rollBack];
      const lockSudo =
        facts.user !== 'root' && (u.host.target?.sudo === true || (u.host.lock?.startsWith(`${ROOT_LOCK_DIR}/`) ?? false) || steps.some((s) => s.sudo === true));
      const backupDir = u.host.backupDir ?? '';
      const base = backupDir.endsWith(`/backups/${runId}`) ? backupDir.slice(0, -`/backups/${runId}`.length) : '/var/lib/hostsmith';
      try {
        release = await acquireLock(transport, base, runId, lockSudo, { stateDir: t.stateDir, adopt: runId });
      } catch (e) {
        if (e instanceof ConnectError) throw e;
        return { ...r, status: 'failed', leftOpen: true, error: `${errorMessage(e)}; nothing was done on ${name}: run \`hostsmith recover ${runId}\` again once the lock is free` };
      }

      // A command the run started may still be running there: stopped before its state is read.
      r.stopped = await stopLeftovers(transport, runId, lockSudo);

      // A lockout watchdog the run armed and never settled: taken over before anything else, or,
      // when its time ran out and it rolled back by itself, what it did is recorded and not done twice.
      const byWatchdog = await settleWatchdog(transport, facts.user !== 'root', u.host, rec, name, runId);

      const shim = { o: { host: name, runId }, rec } as unknown as HostRun;
      const undone: StepState[] = [];
      const rollBack = async (s: StepState, j: { type: Completed['type']; params: unknown; undo: unknown; sudo: boolean }) => {
        const ctx = contextOf(transport, facts, u.host, s, j.sudo, runId, 'recover');
        const done: Completed = { spec: { name: s.name, type: s.type } as StepSpec, type: j.type, params: j.params, undo: j.undo, summary: s.summary, ctx };
        if (await rollbackOne(shim, done)) {
          r.rolledBack++;
          r.rolledBackSteps.push(s.name);
          undone.push(s);
        } else problem(s.name, s.undo === null ? 'irreversible: the step has no rollback, so its change stays' : 'its rollback failed (see the journal)');
      };

      // The step in flight at the crash: changed or not, as its state says.
      for (const s of u.inFlight) {
        const closeUnchanged = async (why: string) => {
          await rec.write({ kind: 'step-finished', time: time(), host: name, step: s.name, type: s.type, status: 'failed', summary: s.summary, changed: false, durationMs: 0, error: why });
          r.untouched.push(s.name);
        };
        if (s.afterRollback || t.run.mode === 'undo') {
          await closeUnchanged(`interrupted: the controller stopped before it ${s.afterRollback ? 'ran' : 'took it back'}; closed by recover`);
          continue;
        }
        const j = journaledStep(u.host, s, t.secrets, given, 'recover');
        if (!('ready' in j)) {
          problem(s.name, `in flight at the crash, and cannot be checked: ${j.message}`);
          continue;
        }
        let now: string;
        try {
          now = await stateNow(contextOf(transport, facts, u.host, s, j.ready.sudo, runId, 'recover'), j.ready);
        } catch (e) {
          if (e instanceof ConnectError) throw e;
          problem(s.name, `in flight at the crash, and its state could not be read: ${errorMessage(e)}`);
          continue;
        }
        if (now === s.pre) await closeUnchanged('interrupted: the controller stopped during this step; recover found the host as it was before the step (nothing to take back)');
        else await rollBack(s, j.ready);
      }

      // Everything else the run completed, newest first (a rollback the crash stopped among them).
      for (const s of u.rollBack) {
        if (byWatchdog.has(s.name)) {
          r.rolledBack++;
          r.rolledBackSteps.push(s.name);
          continue;
        }
        const j = journaledStep(u.host, s, t.secrets, given, 'recover');
        if (!('ready' in j)) problem(s.name, j.message);
        else await rollBack(s, j.ready);
      }

      // Handlers are due for what this recover put back, and for what the run itself put back
      // before it stopped, unless the run had already run them again after that rollback.
      const before = u.host.steps.filter((s) => s.rollback?.status === 'rolled-back' && s.rollback.finishedAt && !undone.includes(s));
      const lastBefore = before.map((s) => s.rollback!.finishedAt!).sort().at(-1);
      const nowDue = new Set(undone.flatMap((s) => s.notifies ?? []));
      const skip = new Set(
        u.host.steps.filter((s) => s.afterRollback && s.status === 'changed' && lastBefore && (s.finishedAt ?? '') >= lastBefore && !nowDue.has(s.name)).map((s) => s.name),
      );
      const again = await handlersAgain({ host: u.host, rolledBack: [...undone, ...before], transport, facts, runId, secrets: t.secrets, given, rec, eventRunId: runId, command: 'recover', skip });
      for (const e of again.errors) problem('handlers', e);
    } catch (e) {
      if (e instanceof ConnectError) {
        r.status = 'unreachable';
        r.leftOpen = true;
        r.error = `${name}: ${errorMessage(e)}; run \`hostsmith recover ${runId}\` again once it can be reached (it continues where this one stopped)`;
        return r;
      }
      problem('', errorMessage(e));
    } finally {
      if (release && !r.leftOpen) {
        await release().catch((e: unknown) => problem('lock', errorMessage(e)));
      }
    }
    if (r.problems.length) {
      r.status = 'rollback-incomplete';
      r.error = `${name}: not everything was put back: ${r.problems.map((p) => (p.step ? `${p.step} (${p.why})` : p.why)).join('; ')}`;
    }
    return r;
  }
}

/**
 * The run's watchdog, if it armed one that no entry settled: claimed (stopped before it fires), or,
 * if it fired, waited for and read back. Returns the steps it rolled back in full (journaled as
 * rolled back here); a step type whose host script does only part (packages) is rolled back again
 * by recover as usual.
 */
async function settleWatchdog(t: ShellTransport, sudo: boolean, h: HostState, rec: Recorder, host: string, runId: string): Promise<Set<string>> {
  const done = new Set<string>();
  const wd = h.watchdog;
  if (!wd || wd.state !== 'armed') return done;
  const time = () => new Date().toISOString();
  const claim = await claimWatchdog(t, sudo, wd.dir);
  if (claim !== 'fired') {
    await rec.write({ kind: 'watchdog', event: 'disarmed', time: time(), host, dir: wd.dir, error: claim === 'claimed' ? 'taken over by recover before its time ran out' : 'gone when recover looked' });
    return done;
  }
  const fired = await awaitWatchdog(t, sudo, wd.dir, wd.steps);
  if (typeof fired !== 'object') return done;
  await rec.write({ kind: 'watchdog', event: 'fired', time: time(), host, dir: wd.dir, result: fired.result, rolledBack: fired.ok, failed: fired.failed, ...(fired.log ? { log: fired.log } : {}) });
  // Handlers it ran again after a full rollback are settled with it, as the run itself would.
  const handlers = fired.result === 'rolled-back' ? h.steps.filter((x) => x.handler && x.completed && !x.afterRollback).map((x) => x.name) : [];
  for (const name of [...fired.ok, ...handlers]) {
    const s = h.steps.find((x) => x.name === name && x.completed);
    if (!s || stepType(s.type)?.hostRollbackPartial) continue;
    await recordWatchdogRollback(rec, runId, host, name, s.type);
    done.add(name);
  }
  await removeWatchdog(t, sudo, wd.dir);
  return done;
}

function counts(r: Counts): Counts {
  return { changed: r.changed, unchanged: r.unchanged, skipped: r.skipped, failed: r.failed, rolledBack: r.rolledBack };
}
