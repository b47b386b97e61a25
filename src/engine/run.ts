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
import { applyPlanned, rollBackStep, type ApplyInputs } from './apply-step.js';
import type { Counts, HostStatus, StepStatus } from './events.js';
import { hostScope, newHostRun, type HostRun, type HostRunOptions } from './host-run.js';
import { plannedResult, type Completed } from './host-state.js';
import { planStep, prefetchCarrying, type PlanInputs, type PlannedStep } from './plan-step.js';
import { FactsMoved, factsExec, type FirstContact } from './facts.js';
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
function reconnectBudget(options: HostRunOptions): number {
  const env = Number(process.env.HOSTSMITH_RECONNECT_SECONDS);
  return options.reconnectMs ?? (Number.isFinite(env) && env >= 0 && process.env.HOSTSMITH_RECONNECT_SECONDS ? env * 1000 : 60_000);
}

const now = () => new Date().toISOString();

/** What planning a step on this host is given. */
function planInputs(run: HostRun): PlanInputs {
  const { options } = run;
  return { env: run.env, salt: options.salt ?? '', sensitive: options.sensitive, recipe: options.recipe, probes: run.probes };
}

/** What applying a step on this host is given. */
function applyInputs(run: HostRun): ApplyInputs {
  const { options } = run;
  return {
    host: options.host,
    rec: run.rec,
    probes: run.probes,
    handlers: options.recipe.handlers,
    beforeChange: options.beforeChange,
    defaultRetry: options.defaultRetry,
    sleep: options.sleep,
  };
}

export async function runHost(options: HostRunOptions): Promise<HostResult> {
  const hostRun = newHostRun(options);
  const { state } = hostRun;
  if (options.mode === 'apply' && options.confirm) {
    const login = (options.transport as Partial<ShellTransport>).loginUser ?? options.facts.user;
    if (login !== 'root' && !hostRun.env.baseSudo) {
      return {
        status: 'failed',
        counts: state.counts,
        planned: state.planned,
        error: `lockout protection (--confirm) needs root on ${options.host} for its watchdog, but the run logs in as ${login} without sudo: log in as root, or pass --sudo (or sudo: true in the recipe). Nothing was changed`,
      };
    }
  }
  const stop = () => (options.mode === 'apply' && state.fatal !== undefined) || options.interrupt?.aborted === true;
  try {
    if (options.firstContact && !(await firstContact(hostRun, options.firstContact))) throw new FactsMoved(options.host);
    // A plan goes on past a failing step, so one dry run shows every problem; apply stops.
    await schedule(options.recipe.steps, Math.max(1, options.recipe.defaults.parallel || 1), (spec) => stepTurn(hostRun, spec), stop);
    for (const handler of options.recipe.handlers) {
      if (stop()) break;
      if (state.notified.has(handler.name)) await stepTurn(hostRun, handler);
    }
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    if (options.mode !== 'apply') return { status: 'unreachable', counts: state.counts, planned: state.planned, error: e.message };
    // A lost link during apply: made again (or the host given up), and the run on this host is
    // rolled back — what the step under way did cannot be known from here, so it is read again.
    const gone = await linkLost(hostRun, e, 'while applying');
    if (gone) return gone;
  }

  const interrupted = options.interrupt?.aborted === true;
  if (!state.fatal && !interrupted && options.mode === 'apply' && options.confirm) {
    const protection = await lockoutProtection(hostRun, options.confirm);
    if (protection.kind === 'lost') return lostToWatchdog(hostRun, protection.why, protection.armed);
    if (protection.kind === 'failed') {
      state.fatal = protection.why;
      if (protection.fired) await rolledBackByWatchdog(hostRun, protection.fired);
      return rollBackHost(hostRun, { byWatchdog: protection.fired !== undefined });
    }
  }
  if (!state.fatal && !interrupted) {
    if (options.mode !== 'apply') return { status: 'ok', counts: state.counts, planned: state.planned };
    let asked = false;
    const rollBackLater = async (cause: string): Promise<HostResult> => {
      if (asked) throw new Error(`${options.host}: its rollback was already asked for`);
      asked = true;
      state.fatal = cause;
      return rollBackHost(hostRun, { becauseOfAnother: true });
    };
    return { status: 'ok', counts: state.counts, planned: state.planned, rollBackLater };
  }
  if (options.mode === 'plan') return { status: interrupted ? 'interrupted' : 'failed', counts: state.counts, planned: state.planned, error: state.fatal };
  return rollBackHost(hostRun, { interrupted });
}

/**
 * The host's facts, read in the run's first exec there together with the first batch of reads,
 * which was planned from the facts the last run kept: a no-op costs the host that one exec. True
 * when those facts hold (and no run lock is held there); false: nothing planned so far stands.
 * With no reads to batch, the facts go on their own, as on a first contact.
 */
async function firstContact(hostRun: HostRun, contact: FirstContact): Promise<boolean> {
  const { options } = hostRun;
  let said: string | undefined;
  const first = options.recipe.steps[0];
  if (first) await prefetchCarrying(hostRun.state, planInputs(hostRun), first, { script: contact.script, took: (out) => (said = out) });
  return contact.settle(said ?? (await factsExec(options.transport, contact.script)));
}

/**
 * Rolls back every completed step (newest first, each attempted), runs again the handlers of what
 * was rolled back, and says how the host ends: `becauseOfAnother` — the host did not fail itself
 * (rollback scope), so it ends rolled-back even with nothing to roll back.
 */
async function rollBackHost(hostRun: HostRun, how: { interrupted?: boolean; becauseOfAnother?: boolean; byWatchdog?: boolean }): Promise<HostResult> {
  const { options, state } = hostRun;
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
  const unrecorded = state.journalBroken !== undefined || hostRun.rec.failedWrites.some((kind) => kind.startsWith('rollback'));
  const status: HostStatus =
    !rollback.complete || unrecorded ? 'rollback-incomplete' : how.becauseOfAnother || how.byWatchdog ? 'rolled-back' : interrupted ? 'interrupted' : state.completed.length ? 'rolled-back' : 'failed';
  const note = state.journalBroken
    ? `; the journal could not be written, so the run stopped before the next change${state.completed.length ? ` (${rollback.complete ? 'every completed step was rolled back on the host' : 'see the rollback errors above'}, but the journal may not record it)` : ''} — free space in the state dir or pass --state-dir, then check \`hostsmith show ${options.runId}\``
    : '';
  return {
    status,
    counts: state.counts,
    planned: state.planned,
    error: `${state.fatal ?? 'interrupted by the user'}${note}`,
    ...(state.fatalStep ? { failedStep: state.fatalStep } : {}),
  };
}

/**
 * Lockout protection, with a lost link on the run's own connection handled as everywhere else:
 * made again (else the host is given up to its watchdog), then the watchdog claimed before the
 * controller rolls back, so the two never both do.
 */
async function lockoutProtection(hostRun: HostRun, confirm: ConfirmOptions): Promise<Protection> {
  const { options, state, env } = hostRun;
  const rootBackupDir = options.backupDirFor(true);
  const at = { host: options.host, runId: options.runId, init: options.facts.init };
  try {
    return await protect(
      state.completed,
      {
        ...at,
        transport: options.transport as ShellTransport,
        rec: hostRun.rec,
        handlers: options.recipe.handlers,
        sudo: env.baseSudo,
        scope: () => hostScope(env, state.results),
        rootBackupDir,
        reconnectMs: reconnectBudget(options),
      },
      confirm,
    );
  } catch (e) {
    const why = `lockout protection failed before it could confirm (${errorMessage(e)})`;
    if (!(e instanceof ConnectError)) return { kind: 'failed', why };
    const gone = await linkLost(hostRun, e, 'while arming the watchdog');
    // Thrown by protect: the link went while the watchdog was being armed (armed, it reports a
    // lost host itself), so it may or may not be on the host.
    if (gone) return { kind: 'lost', why, armed: false };
    const transport = options.transport as ShellTransport;
    const dir = watchdogDir(rootBackupDir, options.runId);
    if ((await claimWatchdog(transport, true, dir)) !== 'fired') return { kind: 'failed', why };
    const names = watchdogParts(state.completed, options.recipe.handlers, at).steps.map((step) => step.name);
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
  const { options, state } = hostRun;
  const handlers = options.recipe.handlers;
  const done = new Set(fired.ok);
  const keep: Completed[] = [];
  for (const step of state.completed) {
    if (handlers.includes(step.spec)) {
      if (fired.result !== 'rolled-back') keep.push(step);
      continue;
    }
    if (!done.has(step.spec.name) || step.type.hostRollbackPartial) {
      keep.push(step);
      continue;
    }
    await recordWatchdogRollback(hostRun.rec, options.runId, options.host, step.spec.name, step.spec.type).catch(() => undefined);
    state.counts.rolledBack++;
  }
  state.completed = keep;
}

/**
 * The run's connection is gone and the host could not be reached again: its watchdog rolls it back
 * on its own, if it is there. A link lost while it was being armed (a step's firewall rule that
 * cut the run's own connection does that) may have left none: then nothing on the host will roll
 * back, and the message says so instead of promising it.
 */
function lostToWatchdog(hostRun: HostRun, why: string, armed: boolean): HostResult {
  const { options, state } = hostRun;
  const recover = `\`hostsmith recover ${options.runId}\``;
  const then = armed
    ? `The watchdog on the host rolls the run back by itself when its time is up; once ${options.host} can be reached, ${recover} reads what it did, finishes the rollback and releases the lock.`
    : `The link went while the watchdog was being armed, so the host may have none: if not, nothing there rolls the run back by itself. If a step cut this connection (a firewall rule), reach ${options.host} another way (its console) and undo that first; once it can be reached over SSH, ${recover} rolls the run back (or reads what a watchdog did) and releases the lock.`;
  return { status: 'unreachable', givenUp: true, counts: state.counts, planned: state.planned, error: `${why}. ${then}` };
}

/** One step's turn: plan it (reads), hold it against the plan being followed, apply it (journaled). */
async function stepTurn(hostRun: HostRun, spec: StepSpec): Promise<void> {
  await takeTurn(hostRun, spec);
  const { options, state } = hostRun;
  if (options.mode === 'apply' && options.failAfterStep === spec.name && !state.fatal) {
    state.fatal = `a failure injected right after step "${spec.name}" (HOSTSMITH_FAULT_FAIL_AFTER_STEP)`;
    state.fatalStep = spec.name;
  }
}

async function takeTurn(hostRun: HostRun, spec: StepSpec): Promise<void> {
  const { options, state, rec } = hostRun;
  const started = Date.now();
  if (options.mode === 'apply') await options.beforeStep?.(options.host, spec.name);
  const place = options.recipe.steps.indexOf(spec);
  rec.emit({
    event: 'step-started',
    runId: options.runId,
    time: now(),
    host: options.host,
    step: spec.name,
    type: spec.type,
    ...(place >= 0 ? { index: place + 1, of: options.recipe.steps.length } : {}),
  });
  let planned = await planStep(state, planInputs(hostRun), spec);
  if (options.mode === 'apply' && options.expected && planned.status !== 'failed') {
    const why = stepDifference(
      options.expected.steps.find((s) => s.name === spec.name),
      planned,
      true,
    );
    if (why) planned = { ...planned, status: 'failed', work: undefined, error: `not applied: ${why}. Nothing was written for this step; make a new plan` };
  }
  state.planned.push(planned);
  if (planned.status !== 'planned' || options.mode === 'plan') return finishStep(hostRun, planned, started);
  const mark = { journaled: false };
  state.applying.set(spec.name, { planned, mark });
  try {
    const out = await applyPlanned(state, applyInputs(hostRun), planned, started, mark);
    state.applying.delete(spec.name);
    // The report and the event say what was done, where the apply knows it better than the plan did.
    if (out.summary) planned.summary = out.summary;
    if (out.diff) planned.diff = out.diff;
    finishStep(hostRun, planned, started, 'changed', out);
  } catch (e) {
    // A lost link leaves the step undecided: linkLost reads it again once the host is back.
    if (e instanceof ConnectError) throw e;
    state.applying.delete(spec.name);
    const error = errorMessage(e);
    if (e instanceof JournalError) state.journalBroken = error;
    else if (mark.journaled) {
      await rec
        .write({
          kind: 'step-finished',
          time: now(),
          host: options.host,
          step: spec.name,
          type: spec.type,
          status: 'failed',
          summary: planned.summary,
          changed: false,
          durationMs: Date.now() - started,
          error,
        })
        .catch((je: unknown) => {
          state.journalBroken = errorMessage(je);
        });
    }
    // Without a journal nothing more may change: stop, whatever the step's `fatal` says.
    if (state.journalBroken && !state.fatal) {
      state.fatal = `step "${spec.name}": ${state.journalBroken}`;
      state.fatalStep = spec.name;
    }
    finishStep(hostRun, { ...planned, status: 'failed', error }, started);
  }
}

/** Counts, results for later templates, the event; a fatal failure stops the run. */
function finishStep(hostRun: HostRun, planned: PlannedStep, started: number, status: StepStatus = planned.status, out?: { stdout: string; stderr: string }): void {
  const { options, state } = hostRun;
  const { spec } = planned;
  state.counts[status === 'planned' ? 'changed' : status]++;
  state.results[spec.name] =
    status === 'planned'
      ? plannedResult(state.touched, spec.name)
      : {
          status,
          changed: status === 'changed',
          // As Ansible does: `echo x` gives "x", so it can be used inside a command line.
          stdout: (out?.stdout ?? '').replace(/[\r\n]+$/, ''),
          stderr: (out?.stderr ?? '').replace(/[\r\n]+$/, ''),
        };
  hostRun.rec.emit({
    event: 'step-finished',
    runId: options.runId,
    time: now(),
    host: options.host,
    step: spec.name,
    type: spec.type,
    status,
    summary: planned.summary,
    ...(planned.diff && (status === 'planned' || status === 'changed') ? { diff: planned.diff } : {}),
    irreversible: planned.irreversible,
    ...(planned.action && (status === 'planned' || status === 'changed') ? { action: planned.action } : {}),
    durationMs: Date.now() - started,
    ...(planned.error ? { error: planned.error } : {}),
    ...(planned.dependsOn?.length && status === 'planned' ? { dynamic: true, dependsOn: planned.dependsOn } : {}),
    ...(options.recipe.handlers.includes(spec) ? { handler: true } : {}),
  });
  if ((status === 'changed' || status === 'planned') && spec.notify.length) spec.notify.forEach((name) => state.notified.add(name));
  if (status === 'failed' && spec.fatal && !state.fatal) {
    state.fatal = `step "${spec.name}" failed: ${planned.error}`;
    state.fatalStep = spec.name;
  }
}

/**
 * A rolled-back config file is worth little while the service still runs the new one: handlers
 * that ran for steps now rolled back run again, once each and journaled, so the service loads what
 * was rolled back. A handler that fails then leaves the rollback incomplete.
 */
async function handlersAgain(hostRun: HostRun): Promise<{ ok: boolean }> {
  const { options, state, rec } = hostRun;
  const due = dueHandlers(state.completed, options.recipe.handlers).map((handler) => handler.spec);
  let ok = true;
  for (const spec of due) {
    if (options.abortRollback?.aborted) return { ok: false };
    const started = Date.now();
    const event = (status: StepStatus, summary: string, error?: string) =>
      rec.emit({
        event: 'step-finished',
        runId: options.runId,
        time: now(),
        host: options.host,
        step: spec.name,
        type: spec.type,
        status,
        summary: `after rollback: ${summary}`,
        irreversible: false,
        durationMs: Date.now() - started,
        handler: true,
        ...(error ? { error } : {}),
      });
    rec.emit({ event: 'step-started', runId: options.runId, time: now(), host: options.host, step: spec.name, type: spec.type });
    try {
      const planned = await planStep(state, planInputs(hostRun), spec);
      if (planned.status === 'failed') throw new Error(planned.error ?? planned.summary);
      if (planned.status !== 'planned') {
        event(planned.status, planned.summary);
        continue;
      }
      // The rollback may have removed what the handler acts on (the service's package, its folder).
      const gone = planned.work && (await planned.work.type.gone?.(planned.work.ctx, planned.work.params));
      if (gone) {
        event('skipped', `not needed: ${gone}`);
        continue;
      }
      await applyPlanned(state, applyInputs(hostRun), planned, started, { journaled: false }, { afterRollback: true });
      event('changed', planned.summary);
    } catch (e) {
      if (e instanceof ConnectError) throw e;
      ok = false;
      event(
        'failed',
        `handler "${spec.name}" could not run again`,
        `${errorMessage(e)} — the rolled-back files are in place, but the service may still run what the run had set up: run the handler by hand`,
      );
    }
  }
  return { ok };
}

/** Completed steps, newest first; every one attempted; a second Ctrl-C stops what is left. A lost link is made again and the step's rollback tried again. */
async function rollBackCompleted(hostRun: HostRun): Promise<{ complete: boolean; givenUp?: HostResult }> {
  const { options, state } = hostRun;
  let complete = true;
  for (const step of [...state.completed].reverse()) {
    if (options.abortRollback?.aborted) return { complete: false };
    for (;;) {
      try {
        // The host is about to change back: batched reads of it are no longer to be trusted.
        hostRun.probes.drop();
        if (await rollBackStep(hostRun.rec, options, step)) state.counts.rolledBack++;
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
async function linkLost(hostRun: HostRun, e: ConnectError, during: string): Promise<HostResult | undefined> {
  const { options, state } = hostRun;
  const transport = options.transport as Partial<ShellTransport>;
  const why = e.message.startsWith(`${options.host}: `) ? e.message.slice(options.host.length + 2) : e.message;
  state.fatal ??= `the connection was lost ${during} (${why})`;
  try {
    // A host already waited for as long as it should be (a reboot's timeout) is given up at once.
    if (!transport.reconnect || e.waited) throw e;
    await transport.reconnect(reconnectBudget(options));
    await stopLeftovers(transport as ShellTransport, options.runId, hostRun.env.baseSudo);
    for (const [name, { planned, mark }] of state.applying) {
      state.applying.delete(name);
      const work = planned.work;
      if (!mark.journaled || !work || state.completed.some((step) => step.spec === planned.spec)) continue;
      const current = await work.type.check(work.ctx, work.params);
      const seen = stateFingerprint(work.type, work.params, current);
      if (seen !== planned.pre) {
        state.completed.push({ spec: planned.spec, type: work.type, params: work.params, undo: work.plan.undo, summary: planned.summary, ctx: work.ctx });
      } else {
        await hostRun.rec.write({
          kind: 'step-finished',
          time: now(),
          host: options.host,
          step: name,
          type: planned.spec.type,
          status: 'failed',
          summary: planned.summary,
          changed: false,
          durationMs: 0,
          error: `the connection was lost during this step; once back, the host showed no change from it`,
        });
      }
    }
    return undefined;
  } catch (e2) {
    if (!(e2 instanceof ConnectError)) throw e2;
    const left = state.completed.map((step) => step.spec.name);
    const undecided = [...state.applying.keys()];
    const msg = e2.message.startsWith(`${options.host}: `) ? e2.message.slice(options.host.length + 2) : e2.message;
    return {
      status: 'unreachable',
      givenUp: true,
      counts: state.counts,
      planned: state.planned,
      error:
        `given up: ${msg} (lost ${during}). ` +
        (left.length || undecided.length
          ? `The host keeps what the run did there (${[...left, ...undecided.map((n) => `${n}, under way`)].join(', ')}) and the run's lock; once it can be reached, \`hostsmith recover ${options.runId}\` rolls that back and releases the lock.`
          : `Nothing of the run was completed there, but it keeps the run's lock; once it can be reached, \`hostsmith recover ${options.runId}\` releases it and closes the run.`),
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
