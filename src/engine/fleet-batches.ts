/**
 * Fleet options at run time (SPEC §12; the arithmetic is batches.ts): hosts run batch after
 * batch, each batch finished — its rollbacks included — before the next starts; a batch with more
 * failed hosts than --max-fail allows stops the run, and the hosts left end `not-started`, never
 * contacted. Under --rollback-scope batch|fleet a host that finished ok is held — its connection,
 * completed steps and lock kept (HostResult.rollBackLater) — until no failure can ask for its
 * rollback any more: the end of its batch (batch) or of the run (fleet). Its host-finished waits
 * until then too, so a crash meanwhile leaves it open for `recover`.
 */
import { errorMessage } from '../errors.js';
import { failBudget, type Amount, type RollbackScope } from './batches.js';
import type { Cause, Emit } from './events.js';
import type { HostReport } from './fleet-report.js';
import type { HostResult } from './run.js';
import { isoNow, pool, zeroCounts } from './run-skeleton.js';

/** Rolls back what the run did on a held host (run.ts); at most once. */
export type RollBackLater = NonNullable<HostResult['rollBackLater']>;

/** Why no later batch starts, and whose failure it was. */
interface Stop {
  why: string;
  cause?: Cause;
}

export interface BatchRun<Target extends { name: string }> {
  runId: string;
  batches: Target[][];
  scope: RollbackScope;
  maxFail?: Amount;
  concurrency: number;
  interrupt?: AbortSignal;
  emit: Emit;
  /** Every host's report, filled in as each host ends. */
  reports: Record<string, HostReport>;
  /** One host's run; one that finished ok under a wider scope comes back with how to roll it back later. */
  runOne(target: Target): Promise<{ report: HostReport; rollBackLater?: RollBackLater }>;
  /** host-finished, in the journal and as an event. */
  finish(name: string, report: HostReport): Promise<void>;
  /** Releases a host the run still holds (its lock, its connection). */
  letGo(name: string, report: HostReport): Promise<void>;
}

/**
 * The hosts, batch after batch. After each batch: a failure there rolls back the held hosts its
 * scope covers; then the batch's held hosts are let go (scope batch); then, with more failed
 * hosts than the budget allows (or any, under scope fleet), no later batch starts.
 */
export async function runBatches<Target extends { name: string }>(run: BatchRun<Target>): Promise<void> {
  const held = new Map<string, RollBackLater>();
  const { batches, scope, reports, interrupt } = run;
  let stopped: Stop | undefined;
  for (const [index, batch] of batches.entries()) {
    const names = batch.map((target) => target.name);
    if (stopped) {
      await notStarted(run, names, stopped);
      continue;
    }
    if (batches.length > 1 && !interrupt?.aborted) run.emit({ event: 'batch-started', runId: run.runId, time: isoNow(), batch: index + 1, of: batches.length, hosts: names });
    await runBatch(run, batch, held);
    // Hosts that failed themselves; those rolled back only because of them do not count against --max-fail.
    const failed = names.filter((name) => reports[name]!.status !== 'ok');
    const cause = batchCause(reports, failed[0], interrupt?.aborted === true);
    if (cause && scope === 'batch') await settle(run, held, names, { cause, why: 'batch' });
    if (cause && scope === 'fleet') await settle(run, held, [...held.keys()].reverse(), { cause, why: 'fleet' });
    if (scope === 'batch') await settle(run, held, names);
    if (index === batches.length - 1 || interrupt?.aborted || !cause) continue;
    stopped = stopReason(run, { index, size: batch.length, failed, cause });
  }
  // The end of the run: nothing can ask for a rollback any more.
  await settle(run, held, [...held.keys()]);
}

async function runBatch<Target extends { name: string }>(run: BatchRun<Target>, batch: Target[], held: Map<string, RollBackLater>): Promise<void> {
  await pool(batch, run.concurrency, async (target) => {
    if (run.interrupt?.aborted) {
      run.reports[target.name] = { status: 'interrupted', ...zeroCounts(), error: 'not started: interrupted by the user', durationMs: 0 };
      await run.finish(target.name, run.reports[target.name]!);
      return;
    }
    const { report, rollBackLater } = await run.runOne(target);
    run.reports[target.name] = report;
    // A held host is finished once no failure can roll it back any more (settle).
    if (rollBackLater) held.set(target.name, rollBackLater);
    else await run.finish(target.name, report);
  });
}

/** A batch after the run stopped: its hosts end not-started (one a plan's first pass opened is let go). */
async function notStarted<Target extends { name: string }>(run: BatchRun<Target>, names: string[], stopped: Stop): Promise<void> {
  for (const name of names) {
    const report: HostReport = { status: 'not-started', ...zeroCounts(), error: `${name}: not started: ${stopped.why}`, ...(stopped.cause ? { cause: stopped.cause } : {}), durationMs: 0 };
    run.reports[name] = report;
    // Applying a plan read and locked every host first: let this one go.
    await run.letGo(name, report);
    await run.finish(name, report);
  }
}

/** Why the batch's held hosts roll back: Ctrl-C when it came (hosts it stopped end interrupted, not failed by themselves), else its first failed host. */
function batchCause(reports: Record<string, HostReport>, firstFailed: string | undefined, interrupted: boolean): Cause | undefined {
  if (interrupted) return { error: 'interrupted by the user' };
  if (!firstFailed) return undefined;
  const report = reports[firstFailed]!;
  return { host: firstFailed, ...(report.failedStep ? { step: report.failedStep } : {}), error: report.error ?? report.status };
}

/** Whether a batch's failures stop the run: always under scope fleet, else past the --max-fail budget. */
function stopReason<Target extends { name: string }>(run: BatchRun<Target>, batch: { index: number; size: number; failed: string[]; cause: Cause }): Stop | undefined {
  const { runId, batches, scope, maxFail } = run;
  const { index, size, failed, cause } = batch;
  const budget = failBudget(maxFail, size);
  const list = `${failed.length} of its ${size} host(s) failed (${failed.join(', ')})`;
  const fix = `nothing was done on this host. Fix the failure (hostsmith show ${runId}) and apply again`;
  if (scope === 'fleet') {
    return { why: `batch ${index + 1} of ${batches.length}: ${list}, and --rollback-scope fleet rolled back every host of the run, so no later batch started; ${fix}`, cause };
  }
  if (failed.length > budget) {
    return {
      why: `batch ${index + 1} of ${batches.length}: ${list}, more than --max-fail ${maxFail?.given ?? '∞'} allows (${budget} in a batch of ${size}), so no later batch started; ${fix}`,
      cause,
    };
  }
  return undefined;
}

/**
 * Lets held hosts go: with a cause, each is rolled back first (newest change first, every
 * rollback attempted), then its lock released, its connection closed and its host-finished written.
 */
async function settle<Target extends { name: string }>(run: BatchRun<Target>, held: Map<string, RollBackLater>, names: string[], because?: { cause: Cause; why: 'batch' | 'fleet' }): Promise<void> {
  const mine = names.filter((name) => held.has(name));
  await pool(mine, run.concurrency, async (name) => {
    const rollBackLater = held.get(name)!;
    held.delete(name);
    const report = run.reports[name]!;
    if (because) await rollBackHeld(name, report, rollBackLater, because.cause, because.why);
    await run.letGo(name, report);
    await run.finish(name, report);
  });
}

/** Rolls back a held host because of a failure elsewhere (or Ctrl-C); its report says so, and the time is added to its duration. */
async function rollBackHeld(name: string, report: HostReport, rollBackLater: RollBackLater, cause: Cause, why: 'batch' | 'fleet'): Promise<void> {
  const started = Date.now();
  const because = cause.host
    ? `rolled back because ${cause.host} failed${cause.step ? ` at step "${cause.step}"` : ''} and --rollback-scope is ${why}: ${bare(cause.host, cause.error)}`
    : `rolled back because the run was interrupted by the user and --rollback-scope is ${why}`;
  try {
    const result = await rollBackLater(because);
    Object.assign(report, { status: result.status, ...result.counts, error: `${name}: ${result.error ?? because}`, cause, ...(result.givenUp ? { givenUp: true } : {}) });
  } catch (e) {
    Object.assign(report, { status: 'rollback-incomplete', error: `${name}: ${because}; the rollback stopped: ${errorMessage(e)}`, cause });
  }
  report.durationMs += Date.now() - started;
}

/** An error without the host name in front. */
function bare(host: string, error: string): string {
  return error.startsWith(`${host}: `) ? error.slice(host.length + 2) : error;
}
