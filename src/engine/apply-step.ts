/**
 * Making a planned change, and rolling completed ones back. Every change is journaled before it
 * is made (step-started carries the undo data) and after (step-finished); every rollback too.
 */
import { ConnectError, HostsmithError, JournalError, StepError, errorMessage } from '../errors.js';
import type { RetrySpec, StepSpec } from '../recipe/types.js';
import { changeWrites, isGuarded, stateFingerprint, sha256 } from '../steps/step.js';
import type { LockTaken } from './host-run.js';
import type { Completed, HostState } from './host-state.js';
import { runsAs, type JournalEntry } from './journal.js';
import type { PlannedStep } from './planned-step.js';
import type { Probes } from './probe.js';
import type { Recorder } from './recorder.js';

const now = () => new Date().toISOString();
const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Applied {
  stdout: string;
  stderr: string;
  /** What the step did, when the apply could say it better than its plan (ApplyResult). */
  summary?: string;
  diff?: string;
}

/** What applying a step on a host is given, beside the host's completed steps it adds to. */
export interface ApplyInputs {
  host: string;
  rec: Recorder;
  /** The host's batched reads: a change drops those of what it may write. */
  probes: Pick<Probes, 'drop'>;
  /** The recipe's handlers: a handler's journal entry says it is one. */
  handlers: StepSpec[];
  /** Takes the host lock before the run's first change (HostRunOptions.beforeChange). */
  beforeChange?: () => Promise<LockTaken>;
  defaultRetry?: RetrySpec;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Applies one planned step: journal (pre-state and undo) → apply → journal (result). Throws on
 * failure; `journaled` on the error's path tells the caller whether a step-started entry exists.
 */
export async function applyPlanned(
  state: Pick<HostState, 'completed'>,
  inputs: ApplyInputs,
  planned: PlannedStep,
  started: number,
  mark: { journaled: boolean },
  how: { afterRollback?: boolean } = {},
): Promise<Applied> {
  const { spec } = planned;
  const work = planned.work;
  if (!work) throw new HostsmithError(`step "${spec.name}": nothing planned to apply`);
  const handler = inputs.handlers.includes(spec);
  if (inputs.beforeChange) {
    const lock = await inputs.beforeChange();
    if (lock.at >= started) await recheckUnderLock(inputs.probes, planned, lock.quiet);
  }
  // The host is about to change: batched reads of what it may write are no longer to be trusted.
  inputs.probes.drop(changeWrites(work.type, work.params, work.plan.undo));
  await inputs.rec.write({
    kind: 'step-started',
    time: now(),
    host: inputs.host,
    step: spec.name,
    type: spec.type,
    ...(handler ? { handler: true } : {}),
    ...(how.afterRollback ? { afterRollback: true } : {}),
    params: forJournal(work.params),
    undo: work.plan.undo,
    irreversible: planned.irreversible,
    summary: planned.summary,
    pre: planned.pre ?? '',
    sudo: work.ctx.sudo,
    ...(runsAs(spec.type, work.params) ? { user: runsAs(spec.type, work.params) } : {}),
    ...(spec.notify.length ? { notifies: spec.notify } : {}),
  });
  mark.journaled = true;
  const out = await withRetry(spec.retry ?? inputs.defaultRetry, inputs.sleep ?? defaultSleep, () => work.type.apply(work.ctx, work.params, work.plan, work.state));
  // The apply may have worked out the exact undo data of what it did (package: from dpkg's before and after).
  const undo = out.undo !== undefined ? out.undo : work.plan.undo;
  state.completed.push({ spec, type: work.type, params: work.params, undo, summary: planned.summary, ctx: work.ctx });
  let post: string | undefined;
  try {
    const after = out.state !== undefined ? out.state : await work.type.check(work.ctx, work.params);
    post = stateFingerprint(work.type, work.params, after);
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    post = undefined;
  }
  await inputs.rec.write({
    kind: 'step-finished',
    time: now(),
    host: inputs.host,
    step: spec.name,
    type: spec.type,
    status: 'changed',
    summary: out.summary ?? planned.summary,
    changed: true,
    durationMs: Date.now() - started,
    ...(post ? { post } : {}),
    ...(out.undo !== undefined ? { undo: out.undo } : {}),
  });
  return { stdout: out.stdout ?? '', stderr: out.stderr ?? '', ...(out.summary ? { summary: out.summary } : {}), ...(out.diff ? { diff: out.diff } : {}) };
}

/**
 * The run's first change on the host has just taken the run lock. What was read before (the
 * batch, this step's read at its turn) was read unlocked. `quiet`: no other hostsmith run took the
 * lock since this run first read the host, so no run changed it meanwhile and those reads stand.
 * Otherwise every batched read is dropped, and this step is read again under the lock; if it
 * moved meanwhile, nothing is written for it.
 */
async function recheckUnderLock(probes: Pick<Probes, 'drop'>, planned: PlannedStep, quiet: boolean): Promise<void> {
  if (quiet) return;
  probes.drop();
  const work = planned.work!;
  // Its apply makes the same comparison, under the lock, in the exec that writes.
  if (isGuarded(work.type, work.params)) return;
  const current = await work.type.check(work.ctx, work.params);
  if (stateFingerprint(work.type, work.params, current) !== planned.pre) {
    throw new StepError(`its state changed between its read and the run lock (someone changed the host meanwhile): nothing was written for this step; run again`);
  }
}

/** What rolling back a step needs: its name and type, its type's rollback, and what that rollback gets. */
export type ToRollBack = Pick<Completed, 'type' | 'params' | 'undo' | 'summary' | 'ctx'> & { spec: Pick<StepSpec, 'name' | 'type'> };

/**
 * Rolls back one completed step from its undo data, journaled through `rec`; the event goes out
 * under `at.runId`. Never throws for the step's own failure (it is recorded and the next rollback
 * still runs); a lost connection is thrown.
 */
export async function rollBackStep(rec: Recorder, at: { host: string; runId: string }, step: ToRollBack): Promise<boolean> {
  const base = { time: now(), host: at.host, step: step.spec.name, type: step.spec.type };
  let journalProblem: string | undefined;
  const write = async (entry: JournalEntry) => {
    try {
      await rec.write(entry);
    } catch (e) {
      if (!(e instanceof JournalError)) throw e;
      // Rolling back matters more than recording it: go on, and say the record is incomplete.
      journalProblem = e.message;
    }
  };
  await write({ kind: 'rollback-started', ...base });
  let error: string | undefined;
  let note: string | undefined;
  if (step.undo === null) {
    error = `irreversible: the step has no rollback, so its change stays (${step.summary || step.spec.type})`;
  } else {
    try {
      // A type whose change needs no taking back (a reboot) says what stays instead.
      const said = await step.type.rollback(step.ctx, step.params, step.undo);
      if (said && typeof said.note === 'string') note = said.note;
    } catch (e) {
      if (e instanceof ConnectError) throw e;
      error = errorMessage(e);
    }
  }
  const status = error ? 'rollback-failed' : 'rolled-back';
  await write({ kind: 'rollback-finished', ...base, time: now(), status, ...(error ? { error } : {}), ...(note ? { note } : {}) });
  if (journalProblem) error = `${error ? `${error}; ` : 'rolled back on the host, but '}the journal could not record it (${journalProblem})`;
  rec.emit({ event: 'rollback-finished', runId: at.runId, ...base, time: now(), status, ...(error ? { error } : {}), ...(note ? { note } : {}) });
  return !error;
}

/**
 * Params as the journal keeps them: content a step resolved locally (a rendered template, a
 * copied file) is recorded by fingerprint only — it can be large, the recipe can make it again,
 * and rollback never needs it (backups live on the host).
 */
function forJournal(params: unknown): unknown {
  if (!params || typeof params !== 'object') return params;
  const out: Record<string, unknown> = { ...(params as Record<string, unknown>) };
  for (const k of ['rendered', 'resolvedContent']) {
    const v = out[k];
    if (typeof v === 'string') out[k] = `sha256:${sha256(v)} (${Buffer.byteLength(v)} bytes)`;
  }
  return out;
}

async function withRetry<T>(retry: RetrySpec | undefined, sleep: (ms: number) => Promise<void>, fn: () => Promise<T>): Promise<T> {
  const attempts = Math.max(1, retry?.attempts ?? 1);
  let delay = retry?.delayMs ?? 0;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || e instanceof ConnectError) {
        if (attempts > 1 && e instanceof Error) e.message = `${e.message} (after ${i} attempts)`;
        throw e;
      }
      if (delay > 0) await sleep(delay);
      delay = delay * (retry?.backoff ?? 1);
    }
  }
}
