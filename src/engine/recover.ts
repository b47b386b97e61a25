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
 * - handlers the run ran that those steps notify run again (services load what was rolled back);
 * then `host-finished`, the lock released, and `run-finished` with status `recovered`.
 *
 * Hosts that had finished before the crash keep how they finished (an `ok` host keeps its changes,
 * as the run decided); a host the run stopped rolling back (a second Ctrl-C) is finished too.
 * An undo run is finished the same way: its interrupted rollback completes; what it had not yet
 * rolled back stays (run `undo` again for it).
 */
import { ConnectError, HostsmithError, InputError, errorMessage } from '../errors.js';
import type { ShellTransport } from '../transport/base.js';
import { controllerState, localProbe, type ControllerProbe } from './controller.js';
import type { Counts, Emit, HostStatus } from './events.js';
import { gatherFacts } from './facts.js';
import { contextOf, handlersAgain, holdsMask, journaledStep, rollBackJournaled, stateNow, stopLeftovers, type JournaledHost, type JournaledStep, type SecretDigests } from './journal-steps.js';
import { Journal, listRunIds, readJournal } from './journal.js';
import { ROOT_LOCK_DIR, acquireLock } from './lock.js';
import { Recorder } from './recorder.js';
import { driveRun, isoNow, pool, recoverStartedEntry, zeroCounts, type RunFrame } from './run-skeleton.js';
import { stepType, withStepTypes } from '../steps/registry.js';
import { journaledTypes, usedTypes, type CustomTypes } from '../recipe/custom-types.js';
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
    if (run?.status !== 'open') continue;
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
  /** The run's custom step types (run-started `types`), imported again and unchanged. */
  types?: CustomTypes;
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
    throw new HostsmithError(
      `run ${runId} is still running: ${who} (pid ${run.recoverers.at(-1)?.pid ?? run.pid}) is alive on this machine. Wait for it to finish; recover only finishes runs whose controller is gone.`,
      2,
    );
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
  // The run's custom step types, imported again (unchanged) before anything is contacted.
  const types = hosts.length ? await journaledTypes(usedTypes(extras?.types, run), runId, 'recover') : undefined;
  return { stateDir, run, secrets, hosts, settled, needsSecrets: needs ? Object.keys(secrets).sort() : [], ...(types ? { types } : {}) };
}

/** What a host still needs, or undefined when it finished before the crash (or never started). */
function workOf(run: RunState, h: HostState): RecoverHost | undefined {
  if (h.status === 'pending') return undefined;
  const open = h.status === 'open';
  // A host the run stopped rolling back (second Ctrl-C) finished, but its rollback did not: the
  // run had decided to roll it back, and an open run's incomplete rollback is recover's to finish.
  const stopped = h.status === 'interrupted' || h.status === 'rollback-incomplete' || h.rollingBack.length > 0;
  if (!open && !stopped) return undefined;
  const newestFirst = (xs: StepState[]) => [...xs].sort((a, b) => (b.completedOrder ?? 0) - (a.completedOrder ?? 0));
  // In an undo run, "completed" steps are its own rollbacks: only one that was stopped part-way is continued.
  const rollBack = run.mode === 'undo' ? newestFirst(h.rollingBack) : newestFirst(h.left);
  const inFlight = h.inFlight.filter((s) => !s.afterRollback && run.mode !== 'undo');
  // An undo run's step-started with no rollback yet, and a handler run again after a rollback, changed nothing to roll back.
  const closeOnly = h.inFlight.filter((s) => !inFlight.includes(s));
  return { host: h, inFlight: [...inFlight, ...closeOnly], rollBack };
}

export interface RecoverHostReport extends Counts {
  status: HostStatus;
  /** Rolled back by the recover, newest first. */
  rolledBackSteps: string[];
  /** In flight at the crash, found unchanged: nothing to roll back. */
  untouched: string[];
  /** Commands of the run still running on the host, stopped first ("pid command"). */
  stopped: string[];
  /** Not rolled back, with why. */
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

export interface RecoverOptions {
  /** Reaches a host as the journal says. */
  connect(host: HostState): Promise<ShellTransport>;
  /** Values of the run's secret vars, already checked against their digests. */
  secrets?: Record<string, string>;
  emit?: Emit;
  concurrency?: number;
}

/** Finishes the run: see the top of this file. */
export async function runRecover(target: RecoverTarget, options: RecoverOptions): Promise<RecoverReport> {
  const runId = target.run.runId;
  const given = options.secrets ?? {};
  const reports: Record<string, RecoverHostReport> = {};
  return withStepTypes(target.types?.types, () =>
    driveRun({
      runId,
      secrets: Object.values(given),
      emit: options.emit,
      // The run's own journal, appended to: it tells the run's whole story, and a recover that is
      // itself killed is continued by the next.
      openJournal: (masker) => Journal.append(target.stateDir, runId, masker),
      opening: () => ({
        entry: recoverStartedEntry(),
        event: { event: 'run-started', runId, time: isoNow(), recipe: target.run.recipe, mode: 'recover', hosts: target.hosts.map((work) => work.host.name) },
      }),
      work: (frame) =>
        pool(target.hosts, options.concurrency ?? 10, async (work) => {
          const name = work.host.name;
          const started = Date.now();
          const report = await recoverHost(work, { target, frame, connect: options.connect, given });
          reports[name] = report;
          await frame.hostFinished(name, report, {
            durationMs: Date.now() - started,
            // A host that could not be reached stays open in the journal: another recover finishes it.
            staysOpen: report.leftOpen,
            unrecorded: (e) => {
              report.status = 'rollback-incomplete';
              report.error = `${report.error ?? name}; the journal could not record it: ${errorMessage(e)}`;
            },
          });
        }),
      ending: (frame) => {
        const statuses = Object.values(reports).map((report) => report.status);
        const exitCode = statuses.includes('rollback-incomplete') ? 3 : statuses.includes('unreachable') ? 4 : statuses.includes('failed') ? 1 : 0;
        const closed = !Object.values(reports).some((report) => report.leftOpen);
        return {
          ...(closed ? { finished: { status: 'recovered' as const, exitCode } } : {}),
          mustRecordEnd: true,
          result: { runId, closed, exitCode, journalFile: frame.journal!.file, hosts: reports },
        };
      },
    }),
  );
}

/** What each host's recovery needs of the recover run. */
interface RecoverRun {
  target: RecoverTarget;
  frame: RunFrame;
  connect: RecoverOptions['connect'];
  /** Values of the run's secret vars. */
  given: Record<string, string>;
}

function problem(report: RecoverHostReport, step: string, why: string): void {
  report.failed++;
  report.problems.push({ step, why });
}

/** One host: under the run's own lock, what the crash left is decided, rolled back, and its handlers run again. */
async function recoverHost(work: RecoverHost, run: RecoverRun): Promise<RecoverHostReport> {
  const name = work.host.name;
  const runId = run.target.run.runId;
  const report: RecoverHostReport = { status: 'rolled-back', ...zeroCounts(), rolledBackSteps: [], untouched: [], stopped: [], problems: [] };
  let transport: ShellTransport;
  try {
    transport = await run.connect(work.host);
  } catch (e) {
    return { ...report, status: 'unreachable', leftOpen: true, error: `${name}: ${errorMessage(e)}; nothing was done there: run \`hostsmith recover ${runId}\` again once it can be reached` };
  }
  const rec = new Recorder(run.frame.journal, run.frame.emit);
  let release: (() => Promise<void>) | undefined;
  try {
    const facts = await gatherFacts(transport);
    transport.identify(facts.user);
    run.frame.emit({ event: 'host-connected', runId, time: isoNow(), host: name, facts });
    // The run's own lock, taken over (or taken again where it is gone, e.g. a host that rebooted).
    const steps = [...work.inFlight, ...work.rollBack];
    const lockSudo = facts.user !== 'root' && (work.host.target?.sudo === true || (work.host.lock?.startsWith(`${ROOT_LOCK_DIR}/`) ?? false) || steps.some((step) => step.sudo === true));
    const backupDir = work.host.backupDir ?? '';
    const base = backupDir.endsWith(`/backups/${runId}`) ? backupDir.slice(0, -`/backups/${runId}`.length) : '/var/lib/hostsmith';
    try {
      release = await acquireLock(transport, base, runId, lockSudo, { stateDir: run.target.stateDir, adopt: runId });
    } catch (e) {
      if (e instanceof ConnectError) throw e;
      return { ...report, status: 'failed', leftOpen: true, error: `${errorMessage(e)}; nothing was done on ${name}: run \`hostsmith recover ${runId}\` again once the lock is free` };
    }

    // A command the run started may still be running there: stopped before its state is read.
    report.stopped = await stopLeftovers(transport, runId, lockSudo);

    // A lockout watchdog the run armed and never settled: taken over before anything else, or,
    // when its time ran out and it rolled back by itself, what it did is recorded and not done twice.
    const on: JournaledHost = { host: work.host, transport, facts, runId, command: 'recover' };
    const byWatchdog = await settleWatchdog(on, facts.user !== 'root', rec);
    await rollBackLeft(on, work, { byWatchdog, rec, run, report });
  } catch (e) {
    if (e instanceof ConnectError) {
      report.status = 'unreachable';
      report.leftOpen = true;
      report.error = `${name}: ${errorMessage(e)}; run \`hostsmith recover ${runId}\` again once it can be reached (it continues where this one stopped)`;
      return report;
    }
    problem(report, '', errorMessage(e));
  } finally {
    if (release && !report.leftOpen) {
      await release().catch((e: unknown) => problem(report, 'lock', errorMessage(e)));
    }
  }
  if (report.problems.length) {
    report.status = 'rollback-incomplete';
    report.error = `${name}: not everything was put back: ${report.problems.map((found) => (found.step ? `${found.step} (${found.why})` : found.why)).join('; ')}`;
  }
  return report;
}

/** What rolling back one host's left steps works with. */
interface LeftOnHost {
  /** Steps the watchdog already rolled back (recorded as such). */
  byWatchdog: Set<string>;
  rec: Recorder;
  run: RecoverRun;
  report: RecoverHostReport;
}

/**
 * Under the lock: the steps in flight at the crash decided by their state, everything else the
 * run completed rolled back newest first, then the handlers due for what was rolled back.
 */
async function rollBackLeft(on: JournaledHost, work: RecoverHost, left: LeftOnHost): Promise<void> {
  const { rec, run, report } = left;
  const rolledBack: StepState[] = [];
  const rollBack = async (ready: JournaledStep) => {
    const { step } = ready;
    if (await rollBackJournaled(on, ready, rec, on.runId)) {
      report.rolledBack++;
      report.rolledBackSteps.push(step.name);
      rolledBack.push(step);
    } else problem(report, step.name, step.undo === null ? 'irreversible: the step has no rollback, so its change stays' : 'its rollback failed (see the journal)');
  };

  // The step in flight at the crash: changed or not, as its state says.
  for (const step of work.inFlight) {
    const ready = await inFlightChanged(on, step, left);
    if (ready) await rollBack(ready);
  }

  // Everything else the run completed, newest first (a rollback the crash stopped among them).
  for (const step of work.rollBack) {
    if (left.byWatchdog.has(step.name)) {
      report.rolledBack++;
      report.rolledBackSteps.push(step.name);
      continue;
    }
    const journaled = journaledStep(on.host, step, run.target.secrets, run.given, 'recover');
    if (!('ready' in journaled)) problem(report, step.name, journaled.message);
    else await rollBack(journaled.ready);
  }

  const again = await handlersAgain(on, {
    rolledBack: [...rolledBack, ...rolledBackBefore(on.host, rolledBack)],
    skip: handlersRunAgain(on.host, rolledBack),
    secrets: run.target.secrets,
    given: run.given,
    rec,
    eventRunId: on.runId,
  });
  for (const error of again.errors) problem(report, 'handlers', error);
}

/**
 * A step in flight at the crash: closed as failed when its state is still its journaled pre-state
 * (nothing to roll back), else ready to roll back. Undefined when it is closed, or is a problem.
 */
async function inFlightChanged(on: JournaledHost, step: StepState, left: LeftOnHost): Promise<JournaledStep | undefined> {
  const { rec, run, report } = left;
  const closeUnchanged = async (why: string) => {
    await rec.write({
      kind: 'step-finished',
      time: isoNow(),
      host: on.host.name,
      step: step.name,
      type: step.type,
      status: 'failed',
      summary: step.summary,
      changed: false,
      durationMs: 0,
      error: why,
    });
    report.untouched.push(step.name);
  };
  if (step.afterRollback || run.target.run.mode === 'undo') {
    await closeUnchanged(`interrupted: the controller stopped before it ${step.afterRollback ? 'ran' : 'took it back'}; closed by recover`);
    return undefined;
  }
  const ready = readyOrProblem(on, step, left);
  if (!ready) return undefined;
  let now: string;
  try {
    now = await stateNow(contextOf(on, step, ready.sudo), ready);
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    problem(report, step.name, `in flight at the crash, and its state could not be read: ${errorMessage(e)}`);
    return undefined;
  }
  if (now !== step.pre) return ready;
  await closeUnchanged('interrupted: the controller stopped during this step; recover found the host as it was before the step (nothing to take back)');
  return undefined;
}

/** The in-flight step ready to check, or a problem said for it. */
function readyOrProblem(on: JournaledHost, step: StepState, left: LeftOnHost): JournaledStep | undefined {
  const journaled = journaledStep(on.host, step, left.run.target.secrets, left.run.given, 'recover');
  if ('ready' in journaled) return journaled.ready;
  problem(left.report, step.name, `in flight at the crash, and cannot be checked: ${journaled.message}`);
  return undefined;
}

/** What the run itself rolled back before it stopped: its handlers are due too. */
function rolledBackBefore(host: HostState, now: StepState[]): StepState[] {
  return host.steps.filter((step) => step.rollback?.status === 'rolled-back' && step.rollback.finishedAt && !now.includes(step));
}

/**
 * Handlers due for what the run rolled back before it stopped, which the run had already run
 * again after that rollback (and that nothing rolled back now notifies): not run a second time.
 */
function handlersRunAgain(host: HostState, now: StepState[]): Set<string> {
  const lastBefore = rolledBackBefore(host, now)
    .map((step) => step.rollback!.finishedAt!)
    .sort()
    .at(-1);
  const nowDue = new Set(now.flatMap((step) => step.notifies ?? []));
  return new Set(
    host.steps.filter((step) => step.afterRollback && step.status === 'changed' && lastBefore && (step.finishedAt ?? '') >= lastBefore && !nowDue.has(step.name)).map((step) => step.name),
  );
}

/**
 * The run's watchdog, if it armed one that no entry settled: claimed (stopped before it fires), or,
 * if it fired, waited for and read back. Returns the steps it rolled back in full (journaled as
 * rolled back here); a step type whose host script does only part (packages) is rolled back again
 * by recover as usual.
 */
async function settleWatchdog(on: Pick<JournaledHost, 'host' | 'transport' | 'runId'>, sudo: boolean, rec: Recorder): Promise<Set<string>> {
  const { host, transport, runId } = on;
  const done = new Set<string>();
  const watchdog = host.watchdog;
  if (watchdog?.state !== 'armed') return done;
  const claim = await claimWatchdog(transport, sudo, watchdog.dir);
  if (claim !== 'fired') {
    await rec.write({
      kind: 'watchdog',
      event: 'disarmed',
      time: isoNow(),
      host: host.name,
      dir: watchdog.dir,
      error: claim === 'claimed' ? 'taken over by recover before its time ran out' : 'gone when recover looked',
    });
    return done;
  }
  const fired = await awaitWatchdog(transport, sudo, watchdog.dir, watchdog.steps);
  if (typeof fired !== 'object') return done;
  await rec.write({
    kind: 'watchdog',
    event: 'fired',
    time: isoNow(),
    host: host.name,
    dir: watchdog.dir,
    result: fired.result,
    rolledBack: fired.ok,
    failed: fired.failed,
    ...(fired.log ? { log: fired.log } : {}),
  });
  // Handlers it ran again after a full rollback are settled with it, as the run itself would.
  const handlers = fired.result === 'rolled-back' ? host.steps.filter((step) => step.handler && step.completed && !step.afterRollback).map((step) => step.name) : [];
  for (const name of [...fired.ok, ...handlers]) {
    const step = host.steps.find((known) => known.name === name && known.completed);
    if (!step || stepType(step.type)?.hostRollbackPartial) continue;
    await recordWatchdogRollback(rec, runId, host.name, name, step.type);
    done.add(name);
  }
  await removeWatchdog(transport, sudo, watchdog.dir);
  return done;
}
