/**
 * One host, one recipe: each step's turn is planStep (reads) → compare with the plan being
 * followed → applyPlanned (journaled), in the order `needs` allows; handlers last; on a fatal
 * failure every completed step is rolled back, newest first.
 */
import { ConnectError, HostsmithError, JournalError, errorMessage } from '../errors.js';
import { stateFingerprint } from '../steps/step.js';
import type { ShellTransport } from '../transport/base.js';
import { stopLeftovers } from './journal-steps.js';
import type { StepSpec } from '../recipe/types.js';
import { applyPlanned, rollBackStep } from './apply-step.js';
import { dropProbes } from './probe.js';
import type { Counts, HostStatus, StepStatus } from './events.js';
import { newHostRun, plannedResult, type Completed, type HostRun, type HostRunOptions } from './host-run.js';
import { planStep, type PlannedStep } from './plan-step.js';
import { stepDifference } from './plan-value.js';
import { awaitWatchdog, claimWatchdog, dueHandlers, protect, recordWatchdogRollback, watchdogDir, watchdogParts, type ConfirmOptions, type Fired, type Protection } from './watchdog.js';

export type { HostRunOptions } from './host-run.js';

export interface HostResult {
  status: HostStatus;
  counts: Counts;
  error?: string;
  /** Every step's plan, in the order the steps took their turn (plan mode: the plan value's steps). */
  planned: PlannedStep[];
  /**
   * The connection was lost and could not be made again: the host keeps what the run did so far
   * and its lock, and the run stays open in the journal for `recover`.
   */
  givenUp?: boolean;
  /** The step whose failure stopped the run on this host, when a step's did. */
  failedStep?: string;
  /**
   * Apply, status ok: rolls back everything the run did on this host (newest first, every
   * rollback attempted, handlers run again), because `cause` — another host's failure under
   * `--rollback-scope batch|fleet`. The caller keeps the connection and the host lock until it
   * has called this or decided not to. At most once.
   */
  rollBackLater?: (cause: string) => Promise<HostResult>;
}

/** How long a lost link is tried again: HOSTSMITH_RECONNECT_SECONDS, else a minute (SPEC §9). */
function reconnectBudget(o: HostRunOptions): number {
  const env = Number(process.env.HOSTSMITH_RECONNECT_SECONDS);
  return o.reconnectMs ?? (Number.isFinite(env) && env >= 0 && process.env.HOSTSMITH_RECONNECT_SECONDS ? env * 1000 : 60_000);
}

const now = () => new Date().toISOString();

export async function runHost(options: HostRunOptions): Promise<HostResult> {
  const hostRun = newHostRun(options);
  if (options.mode === 'apply' && options.confirm) {
    const login = (options.transport as Partial<ShellTransport>).loginUser ?? options.facts.user;
    if (login !== 'root' && !hostRun.baseSudo) {
      return {
        status: 'failed',
        counts: hostRun.counts,
        planned: hostRun.planned,
        error: `lockout protection (--confirm) needs root on ${options.host} for its watchdog, but the run logs in as ${login} without sudo: log in as root, or pass --sudo (or sudo: true in the recipe). Nothing was changed`,
      };
    }
  }
  const stop = () => (options.mode === 'apply' && hostRun.fatal !== undefined) || options.interrupt?.aborted === true;
  try {
    // A plan goes on past a failing step, so one dry run shows every problem; apply stops.
    await schedule(options.recipe.steps, Math.max(1, options.recipe.defaults.parallel || 1), (spec) => stepTurn(hostRun, spec), stop);
    for (const handler of options.recipe.handlers) {
      if (stop()) break;
      if (hostRun.notified.has(handler.name)) await stepTurn(hostRun, handler);
    }
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    if (options.mode !== 'apply') return { status: 'unreachable', counts: hostRun.counts, planned: hostRun.planned, error: e.message };
    // A lost link during apply: made again (or the host given up), and the run on this host is
    // rolled back — what the step under way did cannot be known from here, so it is read again.
    const gone = await linkLost(hostRun, e, 'while applying');
    if (gone) return gone;
  }

  const interrupted = options.interrupt?.aborted === true;
  if (!hostRun.fatal && !interrupted && options.mode === 'apply' && options.confirm) {
    const protection = await lockoutProtection(hostRun, options.confirm);
    if (protection.kind === 'lost') return lostToWatchdog(hostRun, protection.why);
    if (protection.kind === 'failed') {
      hostRun.fatal = protection.why;
      if (protection.fired) await rolledBackByWatchdog(hostRun, protection.fired);
      return rollBackHost(hostRun, { byWatchdog: protection.fired !== undefined });
    }
  }
  if (!hostRun.fatal && !interrupted) {
    if (options.mode !== 'apply') return { status: 'ok', counts: hostRun.counts, planned: hostRun.planned };
    let asked = false;
    const rollBackLater = async (cause: string): Promise<HostResult> => {
      if (asked) throw new Error(`${options.host}: its rollback was already asked for`);
      asked = true;
      hostRun.fatal = cause;
      return rollBackHost(hostRun, { becauseOfAnother: true });
    };
    return { status: 'ok', counts: hostRun.counts, planned: hostRun.planned, rollBackLater };
  }
  if (options.mode === 'plan') return { status: interrupted ? 'interrupted' : 'failed', counts: hostRun.counts, planned: hostRun.planned, error: hostRun.fatal };
  return rollBackHost(hostRun, { interrupted });
}

/**
 * Rolls back every completed step (newest first, each attempted), runs again the handlers of what
 * was rolled back, and says how the host ends: `becauseOfAnother` — the host did not fail itself
 * (rollback scope), so it ends rolled-back even with nothing to roll back.
 */
async function rollBackHost(hostRun: HostRun, how: { interrupted?: boolean; becauseOfAnother?: boolean; byWatchdog?: boolean }): Promise<HostResult> {
  const options = hostRun.o;
  const interrupted = how.interrupted === true;
  const rollback = await rollBackCompleted(hostRun);
  if (rollback.givenUp) return rollback.givenUp;
  let again: { ok: boolean } | HostResult;
  for (;;) {
    try {
      again = await handlersAgain(hostRun);
      break;
    } catch (e) {
      if (!(e instanceof ConnectError)) throw e;
      const gone = await linkLost(hostRun, e, 'while running handlers again after the rollback');
      if (gone) return gone;
    }
  }
  if (!again.ok) rollback.complete = false;
  const unrecorded = hostRun.journalBroken !== undefined || hostRun.rec.failedWrites.some((kind) => kind.startsWith('rollback'));
  const status: HostStatus =
    !rollback.complete || unrecorded
      ? 'rollback-incomplete'
      : how.becauseOfAnother || how.byWatchdog
        ? 'rolled-back'
        : interrupted
          ? 'interrupted'
          : hostRun.completed.length
            ? 'rolled-back'
            : 'failed';
  const note = hostRun.journalBroken
    ? `; the journal could not be written, so the run stopped before the next change${hostRun.completed.length ? ` (${rollback.complete ? 'every completed step was rolled back on the host' : 'see the rollback errors above'}, but the journal may not record it)` : ''} — free space in the state dir or pass --state-dir, then check \`hostsmith show ${options.runId}\``
    : '';
  return {
    status,
    counts: hostRun.counts,
    planned: hostRun.planned,
    error: `${hostRun.fatal ?? 'interrupted by the user'}${note}`,
    ...(hostRun.fatalStep ? { failedStep: hostRun.fatalStep } : {}),
  };
}

/**
 * Lockout protection, with a lost link on the run's own connection handled as everywhere else:
 * made again (else the host is given up to its watchdog), then the watchdog claimed before the
 * controller rolls back, so the two never both do.
 */
async function lockoutProtection(hostRun: HostRun, confirm: ConfirmOptions): Promise<Protection> {
  const options = hostRun.o;
  const rootBackupDir = options.backupDirFor(true);
  try {
    return await protect(hostRun, confirm, { rootBackupDir, reconnectMs: reconnectBudget(options) });
  } catch (e) {
    const why = `lockout protection failed before it could confirm (${errorMessage(e)})`;
    if (!(e instanceof ConnectError)) return { kind: 'failed', why };
    const gone = await linkLost(hostRun, e, 'while arming the watchdog');
    if (gone) return { kind: 'lost', why };
    const transport = options.transport as ShellTransport;
    const dir = watchdogDir(rootBackupDir, options.runId);
    if ((await claimWatchdog(transport, true, dir)) !== 'fired') return { kind: 'failed', why };
    const names = watchdogParts(hostRun).steps.map((step) => step.name);
    const fired = await awaitWatchdog(transport, true, dir, names);
    return { kind: 'failed', why, ...(typeof fired === 'object' ? { fired } : {}) };
  }
}

/**
 * What the watchdog rolled back is recorded as such (journal, events, counts) and leaves the
 * completed steps; what it could not, or only in part (packages), stays for the controller's
 * rollback, which runs next. Handlers it ran again leave too.
 */
async function rolledBackByWatchdog(hostRun: HostRun, fired: Fired): Promise<void> {
  const options = hostRun.o;
  const handlers = options.recipe.handlers;
  const done = new Set(fired.ok);
  const keep: Completed[] = [];
  for (const step of hostRun.completed) {
    if (handlers.includes(step.spec)) {
      if (fired.result !== 'rolled-back') keep.push(step);
      continue;
    }
    if (!done.has(step.spec.name) || step.type.hostRollbackPartial) {
      keep.push(step);
      continue;
    }
    await recordWatchdogRollback(hostRun.rec, options.runId, options.host, step.spec.name, step.spec.type).catch(() => undefined);
    hostRun.counts.rolledBack++;
  }
  hostRun.completed = keep;
}

/** The run's connection is gone and the host could not be reached again: its watchdog rolls it back on its own. */
function lostToWatchdog(h: HostRun, why: string): HostResult {
  const { o } = h;
  return {
    status: 'unreachable',
    givenUp: true,
    counts: h.counts,
    planned: h.planned,
    error: `${why}. The watchdog on the host rolls the run back by itself when its time is up; once ${o.host} can be reached, \`hostsmith recover ${o.runId}\` reads what it did, finishes the rollback and releases the lock.`,
  };
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
  h.applying.set(spec.name, { p, mark });
  try {
    const out = await applyPlanned(h, p, started, mark);
    h.applying.delete(spec.name);
    // The report and the event say what was done, where the apply knows it better than the plan did.
    if (out.summary) p.summary = out.summary;
    if (out.diff) p.diff = out.diff;
    finishStep(h, p, started, 'changed', out);
  } catch (e) {
    // A lost link leaves the step undecided: linkLost reads it again once the host is back.
    if (e instanceof ConnectError) throw e;
    h.applying.delete(spec.name);
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
    if (h.journalBroken && !h.fatal) {
      h.fatal = `step "${spec.name}": ${h.journalBroken}`;
      h.fatalStep = spec.name;
    }
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
  if (status === 'failed' && p.spec.fatal && !h.fatal) {
    h.fatal = `step "${p.spec.name}" failed: ${p.error}`;
    h.fatalStep = p.spec.name;
  }
}

/**
 * A rolled-back config file is worth little while the service still runs the new one: handlers
 * that ran for steps now rolled back run again, once each and journaled, so the service loads what
 * was rolled back. A handler that fails then leaves the rollback incomplete.
 */
async function handlersAgain(h: HostRun): Promise<{ ok: boolean }> {
  const { o } = h;
  const due = dueHandlers(h).map((c) => c.spec);
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
      // The rollback may have removed what the handler acts on (the service's package, its folder).
      const gone = p.work && (await p.work.type.gone?.(p.work.ctx, p.work.params));
      if (gone) {
        event('skipped', `not needed: ${gone}`);
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

/** Completed steps, newest first; every one attempted; a second Ctrl-C stops what is left. A lost link is made again and the step's rollback tried again. */
async function rollBackCompleted(hostRun: HostRun): Promise<{ complete: boolean; givenUp?: HostResult }> {
  let complete = true;
  for (const step of [...hostRun.completed].reverse()) {
    if (hostRun.o.abortRollback?.aborted) return { complete: false };
    for (;;) {
      try {
        // The host is about to change back: batched reads of it are no longer to be trusted.
        dropProbes(hostRun);
        if (await rollBackStep(hostRun.rec, hostRun.o, step)) hostRun.counts.rolledBack++;
        else complete = false;
        break;
      } catch (e) {
        if (!(e instanceof ConnectError)) throw e;
        const gone = await linkLost(hostRun, e, `while rolling back "${step.spec.name}"`);
        if (gone) return { complete: false, givenUp: gone };
      }
    }
  }
  return { complete };
}

/**
 * The connection to the host was lost. It is made again (backoff, up to the budget); then
 * commands of the run still running there are stopped, and each step whose apply was under way
 * is decided by its state: changed from its journaled pre-state, it joins the completed steps
 * (rolled back with the undo data journaled before it); unchanged, it is closed as failed. The
 * run on this host then fails and rolls back. Undefined when the link is back; else the host is
 * given up, keeping its changes and lock for `hostsmith recover`.
 */
async function linkLost(h: HostRun, e: ConnectError, during: string): Promise<HostResult | undefined> {
  const { o } = h;
  const t = o.transport as Partial<ShellTransport>;
  const why = e.message.startsWith(`${o.host}: `) ? e.message.slice(o.host.length + 2) : e.message;
  h.fatal ??= `the connection was lost ${during} (${why})`;
  try {
    if (!t.reconnect) throw e;
    await t.reconnect(reconnectBudget(o));
    await stopLeftovers(t as ShellTransport, o.runId, h.baseSudo);
    for (const [name, { p, mark }] of h.applying) {
      h.applying.delete(name);
      const w = p.work;
      if (!mark.journaled || !w || h.completed.some((c) => c.spec === p.spec)) continue;
      const state = await w.type.check(w.ctx, w.params);
      const seen = stateFingerprint(w.type, w.params, state);
      if (seen !== p.pre) {
        h.completed.push({ spec: p.spec, type: w.type, params: w.params, undo: w.plan.undo, summary: p.summary, ctx: w.ctx });
      } else {
        await h.rec.write({
          kind: 'step-finished',
          time: now(),
          host: o.host,
          step: name,
          type: p.spec.type,
          status: 'failed',
          summary: p.summary,
          changed: false,
          durationMs: 0,
          error: `the connection was lost during this step; once back, the host showed no change from it`,
        });
      }
    }
    return undefined;
  } catch (e2) {
    if (!(e2 instanceof ConnectError)) throw e2;
    const left = h.completed.map((c) => c.spec.name);
    const undecided = [...h.applying.keys()];
    const msg = e2.message.startsWith(`${o.host}: `) ? e2.message.slice(o.host.length + 2) : e2.message;
    return {
      status: 'unreachable',
      givenUp: true,
      counts: h.counts,
      planned: h.planned,
      error:
        `given up: ${msg} (lost ${during}). ` +
        (left.length || undecided.length
          ? `The host keeps what the run did there (${[...left, ...undecided.map((n) => `${n}, under way`)].join(', ')}) and the run's lock; once it can be reached, \`hostsmith recover ${o.runId}\` rolls that back and releases the lock.`
          : `Nothing of the run was completed there, but it keeps the run's lock; once it can be reached, \`hostsmith recover ${o.runId}\` releases it and closes the run.`),
    };
  }
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
