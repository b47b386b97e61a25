/**
 * One host, one recipe: each step's turn is planStep (reads) → compare with the plan being
 * followed → applyPlanned (journaled), in the order `needs` allows; handlers last; on a fatal
 * failure every completed step is rolled back, newest first.
 */
import { ConnectError, HostsmithError, JournalError, errorMessage } from '../errors.js';
import type { StepSpec } from '../recipe/types.js';
import { applyPlanned, rollbackOne } from './apply-step.js';
import type { Counts, HostStatus, StepStatus } from './events.js';
import { newHostRun, plannedResult, type HostRun, type HostRunOptions } from './host-run.js';
import { planStep, type PlannedStep } from './plan-step.js';
import { stepDifference } from './plan-value.js';

export type { HostRunOptions } from './host-run.js';

export interface HostResult {
  status: HostStatus;
  counts: Counts;
  error?: string;
  /** Every step's plan, in the order the steps took their turn (plan mode: the plan value's steps). */
  planned: PlannedStep[];
}

const now = () => new Date().toISOString();

export async function runHost(o: HostRunOptions): Promise<HostResult> {
  const h = newHostRun(o);
  const stop = () => (o.mode === 'apply' && h.fatal !== undefined) || o.interrupt?.aborted === true;
  try {
    // A plan goes on past a failing step, so one dry run shows every problem; apply stops.
    await schedule(o.recipe.steps, Math.max(1, o.recipe.defaults.parallel || 1), (spec) => stepTurn(h, spec), stop);
    for (const handler of o.recipe.handlers) {
      if (stop()) break;
      if (h.notified.has(handler.name)) await stepTurn(h, handler);
    }
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    // The connection is gone: nothing can be rolled back from here; the journal keeps what is left.
    const left = h.completed.map((c) => c.spec.name);
    const applied = left.length > 0 && o.mode === 'apply';
    return {
      status: applied ? 'rollback-incomplete' : 'unreachable',
      counts: h.counts,
      planned: h.planned,
      error: `${e.message}${applied ? `; not rolled back: ${left.join(', ')} — see \`hostsmith show ${o.runId}\` and undo them by hand once the host is reachable` : ''}`,
    };
  }

  const interrupted = o.interrupt?.aborted === true;
  if (!h.fatal && !interrupted) return { status: 'ok', counts: h.counts, planned: h.planned };
  if (o.mode === 'plan') return { status: interrupted ? 'interrupted' : 'failed', counts: h.counts, planned: h.planned, error: h.fatal };
  const r = await rollBack(h);
  if (!(await handlersAgain(h).catch((e: unknown) => (e instanceof ConnectError ? { ok: false } : Promise.reject(e)))).ok) r.complete = false;
  const unrecorded = h.journalBroken !== undefined || h.rec.failedWrites.some((k) => k.startsWith('rollback'));
  const status: HostStatus = !r.complete || unrecorded ? 'rollback-incomplete' : interrupted ? 'interrupted' : h.completed.length ? 'rolled-back' : 'failed';
  const note = h.journalBroken
    ? `; the journal could not be written, so the run stopped before the next change${h.completed.length ? ` (${r.complete ? 'every completed step was rolled back on the host' : 'see the rollback errors above'}, but the journal may not record it)` : ''} — free space in the state dir or pass --state-dir, then check \`hostsmith show ${o.runId}\``
    : '';
  return { status, counts: h.counts, planned: h.planned, error: `${h.fatal ?? 'interrupted by the user'}${note}` };
}

/** One step's turn: plan it (reads), hold it against the plan being followed, apply it (journaled). */
async function stepTurn(h: HostRun, spec: StepSpec): Promise<void> {
  const { o } = h;
  const started = Date.now();
  if (o.mode === 'apply') await o.beforeStep?.(o.host, spec.name);
  h.rec.emit({ event: 'step-started', runId: o.runId, time: now(), host: o.host, step: spec.name, type: spec.type });
  let p = await planStep(h, spec);
  if (o.mode === 'apply' && o.expected && p.status !== 'failed') {
    const why = stepDifference(o.expected.steps.find((s) => s.name === spec.name), p, true);
    if (why) p = { ...p, status: 'failed', work: undefined, error: `not applied: ${why}. Nothing was written for this step; make a new plan` };
  }
  h.planned.push(p);
  if (p.status !== 'planned' || o.mode === 'plan') return finishStep(h, p, started);
  const mark = { journaled: false };
  try {
    finishStep(h, p, started, 'changed', await applyPlanned(h, p, started, mark));
  } catch (e) {
    if (e instanceof ConnectError) throw e;
    const error = errorMessage(e);
    if (e instanceof JournalError) h.journalBroken = error;
    else if (mark.journaled) {
      await h.rec
        .write({ kind: 'step-finished', time: now(), host: o.host, step: spec.name, type: spec.type, status: 'failed', summary: p.summary, changed: false, durationMs: Date.now() - started, error })
        .catch((je: unknown) => {
          h.journalBroken = errorMessage(je);
        });
    }
    // Without a journal nothing more may change: stop, whatever the step's `fatal` says.
    if (h.journalBroken && !h.fatal) h.fatal = `step "${spec.name}": ${h.journalBroken}`;
    finishStep(h, { ...p, status: 'failed', error }, started);
  }
}

/** Counts, results for later templates, the event; a fatal failure stops the run. */
function finishStep(h: HostRun, p: PlannedStep, started: number, status: StepStatus = p.status, out?: { stdout: string; stderr: string }): void {
  const { o } = h;
  h.counts[status === 'planned' ? 'changed' : status]++;
  h.results[p.spec.name] =
    status === 'planned'
      ? plannedResult(h, p.spec.name)
      : {
          status,
          changed: status === 'changed',
          // As Ansible does: `echo x` gives "x", so it can be used inside a command line.
          stdout: (out?.stdout ?? '').replace(/[\r\n]+$/, ''),
          stderr: (out?.stderr ?? '').replace(/[\r\n]+$/, ''),
        };
  h.rec.emit({
    event: 'step-finished',
    runId: o.runId,
    time: now(),
    host: o.host,
    step: p.spec.name,
    type: p.spec.type,
    status,
    summary: p.summary,
    ...(p.diff && (status === 'planned' || status === 'changed') ? { diff: p.diff } : {}),
    irreversible: p.irreversible,
    durationMs: Date.now() - started,
    ...(p.error ? { error: p.error } : {}),
    ...(p.dependsOn?.length && status === 'planned' ? { dynamic: true, dependsOn: p.dependsOn } : {}),
    ...(o.recipe.handlers.includes(p.spec) ? { handler: true } : {}),
  });
  if ((status === 'changed' || status === 'planned') && p.spec.notify.length) p.spec.notify.forEach((n) => h.notified.add(n));
  if (status === 'failed' && p.spec.fatal && !h.fatal) h.fatal = `step "${p.spec.name}" failed: ${p.error}`;
}

/**
 * A rolled-back config file is worth little while the service still runs the new one: handlers
 * that ran for steps now rolled back run again, once each and journaled, so the service loads what
 * was put back. A handler that fails then leaves the rollback incomplete.
 */
async function handlersAgain(h: HostRun): Promise<{ ok: boolean }> {
  const { o } = h;
  const handlers = o.recipe.handlers;
  const undone = h.completed.filter((c) => !handlers.includes(c.spec));
  const due = handlers.filter((hd) => h.completed.some((c) => c.spec === hd) && undone.some((c) => c.spec.notify.includes(hd.name)));
  let ok = true;
  for (const spec of due) {
    if (o.abortRollback?.aborted) return { ok: false };
    const started = Date.now();
    const event = (status: StepStatus, summary: string, error?: string) =>
      h.rec.emit({ event: 'step-finished', runId: o.runId, time: now(), host: o.host, step: spec.name, type: spec.type, status, summary: `after rollback: ${summary}`, irreversible: false, durationMs: Date.now() - started, handler: true, ...(error ? { error } : {}) });
    h.rec.emit({ event: 'step-started', runId: o.runId, time: now(), host: o.host, step: spec.name, type: spec.type });
    try {
      const p = await planStep(h, spec);
      if (p.status === 'failed') throw new Error(p.error ?? p.summary);
      if (p.status !== 'planned') {
        event(p.status, p.summary);
        continue;
      }
      await applyPlanned(h, p, started, { journaled: false }, { afterRollback: true });
      event('changed', p.summary);
    } catch (e) {
      if (e instanceof ConnectError) throw e;
      ok = false;
      event('failed', `handler "${spec.name}" could not run again`, `${errorMessage(e)} — the rolled-back files are in place, but the service may still run what the run had set up: run the handler by hand`);
    }
  }
  return { ok };
}

/** Completed steps, newest first; every one attempted; a second Ctrl-C stops what is left. */
async function rollBack(h: HostRun): Promise<{ complete: boolean }> {
  let complete = true;
  try {
    for (const c of [...h.completed].reverse()) {
      if (h.o.abortRollback?.aborted) return { complete: false };
      if (await rollbackOne(h, c)) h.counts.rolledBack++;
      else complete = false;
    }
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    return { complete: false };
  }
  return { complete };
}

/**
 * Runs steps whose `needs` are finished, up to `limit` at once, in declaration order among the
 * ready ones; with limit 1 this is plain sequential order. Stops launching once `stop()` says so.
 */
export async function schedule(steps: StepSpec[], limit: number, run: (s: StepSpec) => Promise<void>, stop: () => boolean): Promise<void> {
  const done = new Set<string>();
  const pending = [...steps];
  const running = new Map<string, Promise<void>>();
  while (pending.length || running.size) {
    if (!stop()) {
      for (let i = 0; i < pending.length && running.size < limit; ) {
        const s = pending[i]!;
        if (s.needs.every((n) => done.has(n) || !steps.some((x) => x.name === n))) {
          pending.splice(i, 1);
          running.set(
            s.name,
            run(s).finally(() => {
              done.add(s.name);
              running.delete(s.name);
            }),
          );
        } else i++;
      }
    } else if (!running.size) break;
    if (!running.size) {
      if (pending.length) throw new HostsmithError(`cannot order steps: ${pending.map((s) => s.name).join(', ')} wait on each other`, 2);
      break;
    }
    await Promise.race(running.values());
  }
}
