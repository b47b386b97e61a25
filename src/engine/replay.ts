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
}

export interface StepState {
  host: string;
  name: string;
  type: string;
  handler: boolean;
  /** A handler run again after a rollback (a reload of what was put back): never left to undo. */
  afterRollback?: boolean;
  summary: string;
  params: unknown;
  /** Undo data, journaled before the change; null: the step cannot be taken back. */
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
  const run: RunState = {
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
  const hostOf = (name: string): HostState => {
    let h = run.hosts.find((x) => x.name === name);
    if (!h) {
      h = newHost(name);
      run.hosts.push(h);
      run.anomalies.push(`host ${name} is not among the hosts the run named`);
    }
    return h;
  };
  let completions = 0;
  let seenStart = false;
  let finished = false;

  entries.forEach((e, i) => {
    const at = `entry ${i + 1} (${e.kind})`;
    if (!seenStart) {
      if (e === start) seenStart = true;
      else run.anomalies.push(`${at} comes before run-started`);
      return;
    }
    if (finished) run.anomalies.push(`${at} comes after run-finished`);
    switch (e.kind) {
      case 'run-started':
        run.anomalies.push(`${at}: a second run-started`);
        return;
      case 'host-started': {
        const h = hostOf(e.host);
        h.status = h.status === 'pending' ? 'open' : h.status;
        // An apply writes a second one, naming the lock, when it takes it before its first change.
        h.startedAt ??= e.time;
        h.facts = e.facts;
        h.backupDir = e.backupDir;
        if (e.target) h.target = e.target;
        if (e.lock) h.lock = e.lock;
        return;
      }
      case 'step-started': {
        const h = hostOf(e.host);
        if (h.status === 'pending') h.status = 'open';
        h.steps.push({
          host: e.host,
          name: e.step,
          type: e.type,
          handler: e.handler === true,
          ...(e.afterRollback ? { afterRollback: true } : {}),
          summary: e.summary,
          params: e.params,
          undo: e.undo === undefined ? null : e.undo,
          irreversible: e.irreversible,
          pre: e.pre,
          ...(e.sudo !== undefined ? { sudo: e.sudo } : {}),
          ...(e.user ? { user: e.user } : {}),
          ...(e.notifies?.length ? { notifies: [...e.notifies] } : {}),
          startedAt: e.time,
          status: 'in-flight',
          completed: false,
          left: false,
        });
        return;
      }
      case 'step-finished': {
        // The newest start of that step not yet finished (a step may run again, e.g. a handler).
        const s = findLast(hostOf(e.host).steps, (x) => x.name === e.step && x.status === 'in-flight' && !x.rollback);
        if (!s) {
          run.anomalies.push(`${at}: step "${e.step}" on ${e.host} finished without a step-started`);
          return;
        }
        s.status = e.status;
        s.finishedAt = e.time;
        s.durationMs = e.durationMs;
        if (e.post) s.post = e.post;
        if (e.error) s.error = e.error;
        if (e.undo !== undefined) s.undo = e.undo;
        // What the step did, where its apply could say it better than its plan (a package installed with no dry run).
        if (e.summary) s.summary = e.summary;
        if (e.status === 'changed') {
          s.completed = true;
          s.completedOrder = completions++;
        }
        return;
      }
      case 'rollback-started': {
        const steps = hostOf(e.host).steps;
        // Rollback takes back a completed step; one whose step-finished could not be written
        // (a journal write that failed after the change) was completed too, as far as the run knew.
        // A rollback started again (by recover, after a crash stopped it, or after it failed) takes the same step.
        const s =
          findLast(steps, (x) => x.name === e.step && x.completed && !x.rollback) ??
          findLast(steps, (x) => x.name === e.step && x.completed && x.rollback !== undefined && x.rollback.status !== 'rolled-back') ??
          findLast(steps, (x) => x.name === e.step && x.status === 'in-flight' && !x.rollback);
        if (!s) {
          run.anomalies.push(`${at}: rollback of step "${e.step}" on ${e.host}, which did not complete`);
          return;
        }
        if (!s.completed) {
          s.completed = true;
          s.completedOrder = completions++;
        }
        s.rollback = { status: 'in-flight', startedAt: e.time };
        return;
      }
      case 'rollback-finished': {
        const s = findLast(hostOf(e.host).steps, (x) => x.name === e.step && x.rollback?.status === 'in-flight');
        if (!s || !s.rollback) {
          run.anomalies.push(`${at}: rollback of step "${e.step}" on ${e.host} finished without a rollback-started`);
          return;
        }
        s.rollback = { ...s.rollback, status: e.status, finishedAt: e.time, ...(e.error ? { error: e.error } : {}) };
        return;
      }
      case 'host-finished': {
        const h = hostOf(e.host);
        h.status = e.status;
        h.finishedAt = e.time;
        h.counts = e.counts;
        if (e.error) h.error = e.error;
        if (e.cause) h.cause = e.cause;
        return;
      }
      case 'watchdog': {
        const h = hostOf(e.host);
        h.watchdog = { dir: e.dir, state: e.event, steps: e.steps ?? h.watchdog?.steps ?? [], ...(e.deadline ?? h.watchdog?.deadline ? { deadline: e.deadline ?? h.watchdog?.deadline } : {}) };
        return;
      }
      case 'recover-started':
        run.recoverers.push({ pid: e.pid, controller: e.controller, since: e.time });
        return;
      case 'run-finished':
        finished = true;
        run.status = e.status;
        run.exitCode = e.exitCode;
        run.finishedAt = e.time;
        return;
    }
  });

  for (const h of run.hosts) {
    for (const s of h.steps) s.left = s.completed && s.rollback?.status !== 'rolled-back' && !s.afterRollback;
    h.inFlight = h.steps.filter((s) => s.status === 'in-flight' && !s.completed);
    h.rollingBack = h.steps.filter((s) => s.rollback?.status === 'in-flight');
    h.left = byCompletion(h.steps.filter((s) => s.left));
  }
  run.left = byCompletion(run.hosts.flatMap((h) => h.left));
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
