/**
 * What a run's journal entries mean together: one pure function, `replay`, that history, show,
 * undo and recover all read a run through. It decides nothing about processes or hosts; the
 * questions that need the world (is the controller alive?) take their answers as arguments.
 */
import { stepType } from '../steps/registry.js';
import { compact, type UndoData } from '../steps/undo-text.js';
import type { Cause, Counts, HostStatus, StepStatus } from './events.js';
import type { JournalEntry, Reach } from './journal.js';

type Of<K extends JournalEntry['kind']> = Extract<JournalEntry, { kind: K }>;

export interface RollbackState {
  /** `in-flight`: rollback-started without rollback-finished (stopped part-way). */
  status: 'in-flight' | 'rolled-back' | 'rollback-failed';
  startedAt: string;
  finishedAt?: string;
  error?: string;
  /** What a rollback that changed nothing said instead (a reboot). */
  note?: string;
}

export interface StepState {
  host: string;
  name: string;
  type: string;
  handler: boolean;
  /** A handler run again after a rollback (a reload of what was rolled back): never left to undo. */
  afterRollback?: boolean;
  summary: string;
  params: unknown;
  /** Undo data, journaled before the change; null: the step cannot be rolled back. */
  undo: unknown;
  irreversible: boolean;
  /** Fingerprint of the state the step saw before its change. */
  pre: string;
  /** Fingerprint of the state after its change (undo compares the host with it). */
  post?: string;
  /** The step's effective sudo; undefined in entries written before format 1. */
  sudo?: boolean;
  /** The user its command ran as, when not the login. */
  user?: string;
  /** Handlers it notifies when it changes. */
  notifies?: string[];
  startedAt: string;
  finishedAt?: string;
  durationMs?: number;
  /** As step-finished said, or `in-flight`: started, never finished (the controller stopped during it). */
  status: StepStatus | 'in-flight';
  /** Its change was made: finished `changed`, or rolled back by the run (only completed steps are). */
  completed: boolean;
  /** Order of completion (0 first): rollback goes newest first. */
  completedOrder?: number;
  /** Completed, and not rolled back: its change is still on the host. */
  left: boolean;
  error?: string;
  rollback?: RollbackState;
}

/** `open`: started, never finished; `pending`: named by the run, never started (nor finished). */
export type HostPhase = HostStatus | 'open' | 'pending';

export interface HostState {
  name: string;
  status: HostPhase;
  startedAt?: string;
  finishedAt?: string;
  /** How the run reached the host (no secrets). */
  target?: Reach;
  /** Where the run's backups are on the host. */
  backupDir?: string;
  /** The run lock the run took there (released when the host finished, unless its error says otherwise). */
  lock?: string;
  facts?: unknown;
  counts?: Counts;
  error?: string;
  /** Rolled back (--rollback-scope) or never started (--max-fail) because of this failure elsewhere. */
  cause?: Cause;
  /** Every step the run started on the host, in the order they started. */
  steps: StepState[];
  /** Started and never finished nor rolled back. */
  inFlight: StepState[];
  /** Rollback started and never finished. */
  rollingBack: StepState[];
  /** Completed and not rolled back, in the order they completed (undo them newest first). */
  left: StepState[];
  /** Lockout protection: the watchdog's folder on the host and where it stands as the journal says. */
  watchdog?: { dir: string; state: 'armed' | 'confirmed' | 'disarmed' | 'fired'; steps: string[]; deadline?: string };
}

export interface RunState {
  runId: string;
  recipe: string;
  recipeFile: string;
  mode: Of<'run-started'>['mode'];
  hostNames: string[];
  /** The run's fleet options and batches, when it was run with any (SPEC §12). */
  fleet?: Of<'run-started'>['fleet'];
  vars: Record<string, unknown>;
  pid: number;
  controller: string;
  startedAt: string;
  finishedAt?: string;
  /** How the run ended, or `open`: no run-finished entry (running, or left by a crash). */
  status: Of<'run-finished'>['status'] | 'open';
  exitCode: number | null;
  /** In the order the run named them, then any other host its entries mention. */
  hosts: HostState[];
  /** Every host's left steps, in the order they completed. */
  left: StepState[];
  /** Each `recover` that took the run over, oldest first: its controller decides whether one still runs. */
  recoverers: Array<{ pid: number; controller: string; since: string }>;
  /** Entries that do not fit the run (a finish without a start, entries after run-finished…). */
  anomalies: string[];
}

/**
 * A run's state from its entries (as read back, in file order). Undefined when they hold no
 * run-started entry: nothing of the run was recorded.
 */
export function replay(entries: readonly JournalEntry[]): RunState | undefined {
  const start = entries.find((e): e is Of<'run-started'> => e.kind === 'run-started');
  if (!start) return undefined;
  const replaying: Replaying = { run: startedRun(start), completions: 0, finished: false };
  let seenStart = false;
  entries.forEach((entry, index) => {
    const at = `entry ${index + 1} (${entry.kind})`;
    if (!seenStart) {
      if (entry === start) seenStart = true;
      else replaying.run.anomalies.push(`${at} comes before run-started`);
      return;
    }
    if (replaying.finished) replaying.run.anomalies.push(`${at} comes after run-finished`);
    readEntry(replaying, entry, at);
  });
  return settled(replaying.run);
}

/** A run as its entries are read: the state so far, how many steps completed, whether it finished. */
interface Replaying {
  run: RunState;
  /** Steps completed so far: the next one's completedOrder. */
  completions: number;
  finished: boolean;
}

function startedRun(start: Of<'run-started'>): RunState {
  return {
    runId: start.runId,
    recipe: start.recipe,
    recipeFile: start.recipeFile,
    mode: start.mode,
    hostNames: [...start.hosts],
    ...(start.fleet ? { fleet: start.fleet } : {}),
    vars: start.vars,
    pid: start.pid,
    controller: start.controller,
    startedAt: start.time,
    status: 'open',
    exitCode: null,
    hosts: start.hosts.map(newHost),
    left: [],
    recoverers: [],
    anomalies: [],
  };
}

/** The host an entry names; one the run did not name is added, and noted. */
function hostOf(run: RunState, name: string): HostState {
  let host = run.hosts.find((known) => known.name === name);
  if (!host) {
    host = newHost(name);
    run.hosts.push(host);
    run.anomalies.push(`host ${name} is not among the hosts the run named`);
  }
  return host;
}

/** One entry after run-started: what it changes in the run's state. `at` names it in anomalies. */
function readEntry(replaying: Replaying, entry: JournalEntry, at: string): void {
  const { run } = replaying;
  switch (entry.kind) {
    case 'run-started':
      run.anomalies.push(`${at}: a second run-started`);
      return;
    case 'host-started':
      return hostStarted(hostOf(run, entry.host), entry);
    case 'step-started':
      return stepStarted(hostOf(run, entry.host), entry);
    case 'step-finished':
      return stepFinished(replaying, entry, at);
    case 'rollback-started':
      return rollbackStarted(replaying, entry, at);
    case 'rollback-finished':
      return rollbackFinished(run, entry, at);
    case 'host-finished':
      return hostFinished(hostOf(run, entry.host), entry);
    case 'watchdog':
      return watchdog(hostOf(run, entry.host), entry);
    case 'recover-started':
      run.recoverers.push({ pid: entry.pid, controller: entry.controller, since: entry.time });
      return;
    case 'run-finished':
      replaying.finished = true;
      run.status = entry.status;
      run.exitCode = entry.exitCode;
      run.finishedAt = entry.time;
      return;
  }
}

function hostStarted(host: HostState, entry: Of<'host-started'>): void {
  host.status = host.status === 'pending' ? 'open' : host.status;
  // An apply writes a second one, naming the lock, when it takes it before its first change.
  host.startedAt ??= entry.time;
  host.facts = entry.facts;
  host.backupDir = entry.backupDir;
  if (entry.target) host.target = entry.target;
  if (entry.lock) host.lock = entry.lock;
}

function stepStarted(host: HostState, entry: Of<'step-started'>): void {
  if (host.status === 'pending') host.status = 'open';
  host.steps.push({
    host: entry.host,
    name: entry.step,
    type: entry.type,
    handler: entry.handler === true,
    ...(entry.afterRollback ? { afterRollback: true } : {}),
    summary: entry.summary,
    params: entry.params,
    undo: entry.undo === undefined ? null : entry.undo,
    irreversible: entry.irreversible,
    pre: entry.pre,
    ...(entry.sudo !== undefined ? { sudo: entry.sudo } : {}),
    ...(entry.user ? { user: entry.user } : {}),
    ...(entry.notifies?.length ? { notifies: [...entry.notifies] } : {}),
    startedAt: entry.time,
    status: 'in-flight',
    completed: false,
    left: false,
  });
}

/** The step counts as completed (its change made), in the order steps completed. */
function complete(replaying: Replaying, step: StepState): void {
  step.completed = true;
  step.completedOrder = replaying.completions++;
}

function stepFinished(replaying: Replaying, entry: Of<'step-finished'>, at: string): void {
  // The newest start of that step not yet finished (a step may run again, e.g. a handler).
  const step = findLast(hostOf(replaying.run, entry.host).steps, (s) => s.name === entry.step && s.status === 'in-flight' && !s.rollback);
  if (!step) {
    replaying.run.anomalies.push(`${at}: step "${entry.step}" on ${entry.host} finished without a step-started`);
    return;
  }
  step.status = entry.status;
  step.finishedAt = entry.time;
  step.durationMs = entry.durationMs;
  if (entry.post) step.post = entry.post;
  if (entry.error) step.error = entry.error;
  if (entry.undo !== undefined) step.undo = entry.undo;
  // What the step did, where its apply could say it better than its plan (a package installed with no dry run).
  if (entry.summary) step.summary = entry.summary;
  if (entry.status === 'changed') complete(replaying, step);
}

function rollbackStarted(replaying: Replaying, entry: Of<'rollback-started'>, at: string): void {
  const steps = hostOf(replaying.run, entry.host).steps;
  // Rollback is of a completed step; one whose step-finished could not be written
  // (a journal write that failed after the change) was completed too, as far as the run knew.
  // A rollback started again (by recover, after a crash stopped it, or after it failed) takes the same step.
  const step =
    findLast(steps, (s) => s.name === entry.step && s.completed && !s.rollback) ??
    findLast(steps, (s) => s.name === entry.step && s.completed && s.rollback !== undefined && s.rollback.status !== 'rolled-back') ??
    findLast(steps, (s) => s.name === entry.step && s.status === 'in-flight' && !s.rollback);
  if (!step) {
    replaying.run.anomalies.push(`${at}: rollback of step "${entry.step}" on ${entry.host}, which did not complete`);
    return;
  }
  if (!step.completed) complete(replaying, step);
  step.rollback = { status: 'in-flight', startedAt: entry.time };
}

function rollbackFinished(run: RunState, entry: Of<'rollback-finished'>, at: string): void {
  const step = findLast(hostOf(run, entry.host).steps, (s) => s.name === entry.step && s.rollback?.status === 'in-flight');
  if (!step?.rollback) {
    run.anomalies.push(`${at}: rollback of step "${entry.step}" on ${entry.host} finished without a rollback-started`);
    return;
  }
  step.rollback = { ...step.rollback, status: entry.status, finishedAt: entry.time, ...(entry.error ? { error: entry.error } : {}), ...(entry.note ? { note: entry.note } : {}) };
}

function hostFinished(host: HostState, entry: Of<'host-finished'>): void {
  host.status = entry.status;
  host.finishedAt = entry.time;
  host.counts = entry.counts;
  if (entry.error) host.error = entry.error;
  if (entry.cause) host.cause = entry.cause;
}

function watchdog(host: HostState, entry: Of<'watchdog'>): void {
  const deadline = entry.deadline ?? host.watchdog?.deadline;
  host.watchdog = { dir: entry.dir, state: entry.event, steps: entry.steps ?? host.watchdog?.steps ?? [], ...(deadline ? { deadline } : {}) };
}

/** Once every entry is read: what is in flight, being rolled back, and left, per host and for the run. */
function settled(run: RunState): RunState {
  for (const host of run.hosts) {
    for (const step of host.steps) step.left = step.completed && step.rollback?.status !== 'rolled-back' && !step.afterRollback;
    host.inFlight = host.steps.filter((step) => step.status === 'in-flight' && !step.completed);
    host.rollingBack = host.steps.filter((step) => step.rollback?.status === 'in-flight');
    host.left = byCompletion(host.steps.filter((step) => step.left));
  }
  run.left = byCompletion(run.hosts.flatMap((host) => host.left));
  return run;
}

function newHost(name: string): HostState {
  return { name, status: 'pending', steps: [], inFlight: [], rollingBack: [], left: [] };
}

function byCompletion(steps: StepState[]): StepState[] {
  return [...steps].sort((a, b) => (a.completedOrder ?? 0) - (b.completedOrder ?? 0));
}

function findLast<T>(xs: T[], f: (x: T) => boolean): T | undefined {
  for (let i = xs.length - 1; i >= 0; i--) if (f(xs[i]!)) return xs[i];
  return undefined;
}

/** What is known about the controller of an open run, from this machine. */
export type ControllerState =
  /** Its pid runs here and is a hostsmith process that started before the run. */
  | { kind: 'running' }
  /** It ran here, and its process is gone (or the pid now belongs to another process). */
  | { kind: 'gone'; why: string }
  /** It ran on another machine: nothing here can tell. */
  | { kind: 'elsewhere' };

/**
 * How `history` names a run: how it ended, or for an open run, `running` (its controller runs),
 * `crashed` (its controller is gone while hosts were still at work), `abandoned` (its controller
 * is gone after every host finished, before the run was closed: a second Ctrl-C stops the
 * rollback and leaves it so), or `open` (run from another controller: unknown here).
 */
export type RunPhase = RunState['status'] | 'running' | 'crashed' | 'abandoned';

export function runPhase(run: RunState, controller: ControllerState): RunPhase {
  if (run.status !== 'open') return run.status;
  if (controller.kind === 'running') return 'running';
  if (controller.kind === 'elsewhere') return 'open';
  return run.hosts.every((h) => h.finishedAt !== undefined) ? 'abandoned' : 'crashed';
}

/** One line of what a step's rollback would do, from its undo data (journal text: escape before printing). */
export function undoSummary(type: string, undo: unknown): string {
  if (undo === null || undo === undefined) return 'none: the step cannot be taken back (no rollback)';
  if (typeof undo !== 'object' || Array.isArray(undo)) return `undo data ${JSON.stringify(undo)}`;
  const t = stepType(type);
  try {
    if (t?.undoSummary) return t.undoSummary(undo as UndoData);
  } catch {
    // undo data of another shape: shown as it is
  }
  return compact(undo);
}
