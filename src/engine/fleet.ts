/**
 * `apply` and `plan` over many hosts: connect (up to `concurrency` at once), gather facts, lock,
 * run, release, close. A driver of the run skeleton (run-skeleton.ts): every host ends with a
 * host-finished event whatever happens to it, and the worst host sets the exit code.
 *
 * Applying a plan (`expected`) takes two passes: every host is connected, locked and re-checked
 * against the plan first; only when no host is stale does any host change. The batches and
 * rollback scopes of fleet options are fleet-batches.ts; connections and locks fleet-hosts.ts.
 */
import { randomBytes } from 'node:crypto';
import { ConnectError, errorMessage } from '../errors.js';
import type { Recipe, RetrySpec } from '../recipe/types.js';
import type { ShellTransport } from '../transport/base.js';
import { splitBatches, type Amount, type RollbackScope } from './batches.js';
import { worstStatus, type Emit, type RunEvent } from './events.js';
import { runBatches, type RollBackLater } from './fleet-batches.js';
import { FleetHosts, type OpenHost } from './fleet-hosts.js';
import { FactsCache } from './facts-cache.js';
import { FactsMoved } from './facts.js';
import type { HostReport, RunReport } from './fleet-report.js';
import type { ConfirmOptions, HostRunOptions } from './host-run.js';
import { Journal, type JournalEntry } from './journal.js';
import { staleSteps, stepValueOf, varDigest, varDigests, type PlanValue } from './plan-value.js';
import { runHost, type HostResult } from './run.js';
import { countsOf, driveRun, isoNow, newRunId, pool, runStartedEntry, zeroCounts, type RunEnding, type RunFrame } from './run-skeleton.js';
import { sha256 } from '../steps/step.js';
import { withStepTypes } from '../steps/registry.js';

export { newRunId } from './run-skeleton.js';
export type { HostReport, RunReport } from './fleet-report.js';

export interface HostTarget {
  name: string;
  /** Opens (or returns the already open) connection. */
  connect(): Promise<ShellTransport>;
  /** Opens a brand-new connection (new TCP connection and authentication), the caller's to close: lockout protection's "next login". */
  connectFresh?(): Promise<ShellTransport>;
  /** Vars resolved for this host. */
  vars: Record<string, unknown>;
  sudo: boolean;
  /** How to reach the host again (address, port, user, key files); journaled for later undo and recovery. */
  describe?: Record<string, unknown>;
}

export interface RunRecipeOptions {
  recipe: Recipe;
  targets: HostTarget[];
  mode: 'plan' | 'apply';
  stateDir: string;
  runId?: string;
  concurrency?: number;
  secrets?: string[];
  emit?: Emit;
  interrupt?: AbortSignal;
  abortRollback?: AbortSignal;
  defaultTimeoutMs?: number;
  defaultRetry?: RetrySpec;
  /** Leave connections open (the CLI plans, asks, then applies on the same connections). */
  keepOpen?: boolean;
  /** Vars as given, for the journal header (masked). */
  journalVars?: Record<string, unknown>;
  /** Where hostsmith keeps its lock and backups on each host (default /var/lib/hostsmith, or ~/.local/state/hostsmith without root). */
  hostStateDir?: string;
  /** apply: follow this plan exactly (a saved plan, or the one confirmed at the terminal). */
  expected?: PlanValue;
  /** Salt for the digests a plan holds (a plan's own when following one). */
  salt?: string;
  /** Fault injection for tests: called before each step's turn. */
  beforeStep?: (host: string, step: string) => Promise<void>;
  /** Fault injection: the run fails on every host right after this step's turn (HostRunOptions.failAfterStep). */
  failAfterStep?: string;
  /** Where a run with root keeps its host lock (default /run/hostsmith; tests of local runs on one machine keep theirs apart). */
  rootLockDir?: string;
  /** How long a lost link is tried again before the host is given up (default: HOSTSMITH_RECONNECT_SECONDS, else 60 s). */
  reconnectMs?: number;
  /** apply: hosts per batch, in target order (SPEC §12); undefined: every host in one batch. A plan ignores it. */
  batchSize?: number;
  /** apply: failed hosts a batch may have before no later batch starts (batches.ts failBudget); undefined: unlimited. */
  maxFail?: Amount;
  /** apply: which hosts roll back when one fails (default host: that one only). */
  rollbackScope?: RollbackScope;
  /** apply: lockout protection (--confirm, or the recipe's defaults.confirm): how long each host's watchdog waits. */
  confirmMs?: number;
}

/** How the hosts are cut into batches and which roll back together; a plan: one batch, scope host. */
interface FleetShape {
  scope: RollbackScope;
  batchSize?: number;
  batches: HostTarget[][];
  /** Fleet options were given: the journal's run-started records them. */
  given: boolean;
}

function fleetShape(options: RunRecipeOptions): FleetShape {
  const apply = options.mode === 'apply';
  const scope: RollbackScope = apply ? (options.rollbackScope ?? 'host') : 'host';
  const batchSize = apply && options.batchSize ? options.batchSize : undefined;
  const batches = batchSize ? splitBatches(options.targets, batchSize) : [options.targets];
  return { scope, batchSize, batches, given: apply && (batchSize !== undefined || scope !== 'host') };
}

export async function runRecipe(options: RunRecipeOptions): Promise<RunReport> {
  const runId = options.runId ?? newRunId();
  const started = Date.now();
  const shape = fleetShape(options);
  const reports: Record<string, HostReport> = {};
  const sources: Record<string, string> = {};
  // The recipe's custom types are known to this run alone (registry.ts says why a scope).
  return withStepTypes(options.recipe.types?.types, () =>
    driveRun({
      runId,
      secrets: options.secrets ?? [],
      emit: options.emit,
      ...(options.mode === 'apply' ? { openJournal: (masker) => Journal.create(options.stateDir, runId, masker) } : {}),
      opening: () => opening(options, runId, shape),
      work: (frame) => everyHost(options, shape, frame, { reports, sources }),
      ending: (frame) => ending(options, frame, { reports, sources, started }),
    }),
  );
}

/** run-started: the journal's (apply only), then the event. */
function opening(options: RunRecipeOptions, runId: string, shape: FleetShape): { entry?: JournalEntry; event: RunEvent } {
  const names = options.targets.map((target) => target.name);
  const entry =
    options.mode === 'apply'
      ? runStartedEntry({
          runId,
          recipe: options.recipe.name,
          recipeFile: options.recipe.file,
          mode: 'apply',
          hosts: names,
          vars: options.journalVars ?? {},
          // Salted digests of each secret var's value(s), so that `undo` can check a value given again
          // before it fills the journal's *** (undo.ts). Under `sha256`, a field the mask leaves alone.
          secrets: secretVarDigests(options.recipe, options.targets),
          ...(options.recipe.types ? { types: options.recipe.types.modules } : {}),
          ...(shape.given ? { fleet: fleetEntry(shape, options.maxFail) } : {}),
        })
      : undefined;
  const event: RunEvent = { event: 'run-started', runId, time: isoNow(), recipe: options.recipe.name, mode: options.mode, hosts: names };
  return { ...(entry ? { entry } : {}), event };
}

function fleetEntry(shape: FleetShape, maxFail: Amount | undefined) {
  const { batchSize, batches, scope } = shape;
  return {
    batches: batches.map((batch) => batch.map((target) => target.name)),
    ...(batchSize ? { batch: String(batchSize) } : {}),
    ...(batchSize && maxFail ? { maxFail: maxFail.given } : {}),
    rollbackScope: scope,
  };
}

/** Every host's part: the first pass against a plan being followed, then the batches. */
async function everyHost(options: RunRecipeOptions, shape: FleetShape, frame: RunFrame, out: { reports: Record<string, HostReport>; sources: Record<string, string> }): Promise<void> {
  const { reports } = out;
  const hosts = new FleetHosts({
    runId: frame.runId,
    apply: options.mode === 'apply',
    stateDir: options.stateDir,
    rootLockDir: options.rootLockDir,
    hostStateDir: options.hostStateDir,
    keepOpen: options.keepOpen,
    recipeSudo: options.recipe.sudo || options.recipe.defaults.sudo === true,
    journal: frame.journal,
    emit: frame.emit,
    factsCache: new FactsCache(options.stateDir),
  });
  frame.whenOver(() => hosts.closeAll());
  const work: HostWork = { hosts, optionsFor: hostOptionsFor(options, frame, hosts, out.sources), scope: shape.scope, ...(options.mode === 'plan' ? { planPart: planPartFor(options) } : {}) };
  const concurrency = options.concurrency ?? 10;
  const finish = (name: string, report: HostReport) => frame.hostFinished(name, report, { durationMs: report.durationMs, staysOpen: report.givenUp });

  if (options.mode === 'apply' && options.expected) {
    const refused = await verifyAgainstPlan(options.expected, options.targets, work, { reports, concurrency });
    if (refused) {
      for (const target of options.targets) reports[target.name] ??= { status: 'not-started', ...zeroCounts(), error: `${target.name}: not applied: ${refused}`, durationMs: 0 };
      for (const target of options.targets) await finish(target.name, reports[target.name]!);
      return;
    }
  }
  await runBatches({
    runId: frame.runId,
    batches: shape.batches,
    scope: shape.scope,
    maxFail: options.maxFail,
    concurrency,
    interrupt: options.interrupt,
    emit: frame.emit,
    reports,
    runOne: (target) => runOneHost(target, work),
    finish,
    letGo: (name, report) => hosts.letGo(name, report),
  });
}

/** The run's end: the worst host's status, and run-finished unless the run stays open. */
function ending(options: RunRecipeOptions, frame: RunFrame, run: { reports: Record<string, HostReport>; sources: Record<string, string>; started: number }): RunEnding<RunReport> {
  const { reports } = run;
  const names = options.targets.map((target) => target.name);
  // A host given up leaves the run open: `recover` finishes it (SPEC §9).
  const givenUp = names.some((name) => reports[name]?.givenUp);
  const { status, exitCode } = worstStatus(
    names.map((name) => reports[name]!.status),
    options.interrupt?.aborted === true,
  );
  const report: RunReport = { runId: frame.runId, mode: options.mode, status, exitCode, hosts: reports, journalFile: frame.journal?.file, durationMs: Date.now() - run.started, sources: run.sources };
  const hostCounts = Object.fromEntries(names.map((name) => [name, { status: reports[name]!.status, ...countsOf(reports[name]!) }]));
  return {
    // A second Ctrl-C leaves the run open on purpose: the journal shows what was not rolled back.
    ...(!options.abortRollback?.aborted && !givenUp ? { finished: { status, exitCode } } : {}),
    event: { event: 'run-finished', runId: frame.runId, time: isoNow(), status, exitCode, durationMs: report.durationMs, hosts: hostCounts },
    result: report,
  };
}

/** What running one host of the fleet needs. */
interface HostWork {
  hosts: FleetHosts;
  optionsFor(target: HostTarget, open: OpenHost): HostRunOptions;
  /** Under a wider scope than the host, an ok host is held for a rollback a failure elsewhere may ask for. */
  scope: RollbackScope;
  /** Plan mode: the plan value's part of the host's report. */
  planPart?(target: HostTarget, result: HostResult): Pick<HostReport, 'steps' | 'vars'>;
}

/** Each host's runHost options: what every host shares, and its own. */
function hostOptionsFor(options: RunRecipeOptions, frame: RunFrame, hosts: FleetHosts, sources: Record<string, string>): HostWork['optionsFor'] {
  const { runId, masker } = frame;
  const apply = options.mode === 'apply';
  const confirmMs = options.confirmMs ?? options.recipe.defaults.confirmMs;
  const shared = {
    runId,
    mode: options.mode,
    recipe: options.recipe,
    reconnectMs: options.reconnectMs,
    emit: frame.emit,
    journal: frame.journal,
    salt: saltOf(options),
    interrupt: options.interrupt,
    abortRollback: options.abortRollback,
    defaultTimeoutMs: options.defaultTimeoutMs,
    defaultRetry: options.defaultRetry,
    sensitive: (text: string) => masker.holds(text),
    onSource: (path: string, content: Buffer) => {
      sources[path] ??= `sha256:${sha256(content)}`;
    },
    beforeStep: options.beforeStep,
    ...(options.failAfterStep ? { failAfterStep: options.failAfterStep } : {}),
  };
  return (target, open) => ({
    ...shared,
    host: target.name,
    transport: open.transport,
    facts: open.facts,
    vars: target.vars,
    sudo: target.sudo,
    backupDirFor: (withSudo: boolean) => `${open.baseFor(withSudo)}/backups/${runId}`,
    expected: options.expected?.hosts[target.name],
    ...(open.firstContact ? { firstContact: open.firstContact } : {}),
    ...(apply ? { beforeChange: hosts.locker(target, open), relock: () => hosts.relock(target, open) } : {}),
    ...(apply && confirmMs !== undefined ? { confirm: confirmFor(target, confirmMs, options.recipe.verify) } : {}),
  });
}

/** Lockout protection's settings for one host: its "next login" is a brand-new connection. */
function confirmFor(target: HostTarget, ms: number, verify: string[]): ConfirmOptions {
  return {
    ms,
    verify,
    openFresh: () => (target.connectFresh ? target.connectFresh() : Promise.reject(new Error(`no way to open a second connection to ${target.name}`))),
  };
}

/** Salt for the digests a plan holds (a plan's own when following one). */
function saltOf(options: RunRecipeOptions): string {
  return options.salt ?? options.expected?.salt ?? '';
}

function planPartFor(options: RunRecipeOptions): NonNullable<HostWork['planPart']> {
  const salt = saltOf(options);
  return (target, result) => ({ steps: result.planned.map((planned) => stepValueOf(planned, options.recipe.handlers.includes(planned.spec))), vars: varDigests(salt, target.vars) });
}

/**
 * runHost on an open host; planned again from its real facts when those the last run kept (which
 * it started from) turn out not to be the host's now. Nothing was changed on the host by then.
 */
async function runHostOn(target: HostTarget, open: OpenHost, work: HostWork, adjust: (o: HostRunOptions) => HostRunOptions = (o) => o): Promise<HostResult> {
  try {
    return await runHost(adjust(work.optionsFor(target, open)));
  } catch (e) {
    if (!(e instanceof FactsMoved)) throw e;
    await work.hosts.refresh(target, open);
    return runHost(adjust(work.optionsFor(target, open)));
  }
}

/** One host: connect, run, and let go of it unless it is held for a later rollback. */
async function runOneHost(target: HostTarget, work: HostWork): Promise<{ report: HostReport; rollBackLater?: RollBackLater }> {
  const started = Date.now();
  let report: HostReport | undefined;
  let open: OpenHost | undefined;
  let rollBackLater: RollBackLater | undefined;
  try {
    open = await work.hosts.connect(target);
    const result = await runHostOn(target, open, work);
    // Under a wider rollback scope an ok host stays open and locked: a failure elsewhere may still roll it back.
    if (work.scope !== 'host' && result.status === 'ok' && result.rollBackLater) rollBackLater = result.rollBackLater;
    report = {
      status: result.status,
      ...result.counts,
      ...(result.error ? { error: `${target.name}: ${result.error}` } : {}),
      ...(result.givenUp ? { givenUp: true } : {}),
      ...(result.failedStep ? { failedStep: result.failedStep } : {}),
      facts: open.facts,
      durationMs: Date.now() - started,
      ...(work.planPart ? work.planPart(target, result) : {}),
    };
  } catch (e) {
    report = { status: e instanceof ConnectError ? 'unreachable' : 'failed', ...zeroCounts(), error: errorMessage(e), durationMs: Date.now() - started };
  } finally {
    if (open && !rollBackLater) await work.hosts.letGo(target.name, report);
  }
  return { report, ...(rollBackLater ? { rollBackLater } : {}) };
}

/**
 * First pass of applying a plan: connect, lock and re-check every host. Returns why the run is
 * refused (some host stale or unreachable), with each host's report already set; else undefined.
 */
async function verifyAgainstPlan(plan: PlanValue, targets: HostTarget[], work: HostWork, run: { reports: Record<string, HostReport>; concurrency: number }): Promise<string | undefined> {
  const bad: string[] = [];
  await pool(targets, run.concurrency, async (target) => {
    const report = await recheckHost(target, plan, work);
    if (!report) return;
    run.reports[target.name] = report;
    bad.push(target.name);
  });
  if (!bad.length) return undefined;
  return `${bad.join(', ')} ${bad.length > 1 ? 'are' : 'is'} not as the plan expects; nothing was changed on any host`;
}

/** One host read again as a plan, quietly: undefined when it is as planned, else its report. */
async function recheckHost(target: HostTarget, plan: PlanValue, work: HostWork): Promise<HostReport | undefined> {
  const started = Date.now();
  const expected = plan.hosts[target.name];
  try {
    if (!expected) throw new Error(`${target.name} is not in the plan`);
    const open = await work.hosts.connect(target);
    const result = await runHostOn(target, open, work, (o) => ({ ...o, mode: 'plan', emit: () => {}, journal: undefined, expected: undefined }));
    const stale = staleSteps(expected, result.planned);
    if (result.status === 'unreachable') throw new ConnectError(target.name, result.error ?? 'unreachable');
    if (!stale.length) return undefined;
    return { status: 'stale', ...zeroCounts(), stale, error: `${target.name}: not as planned:\n  ${stale.join('\n  ')}`, durationMs: Date.now() - started };
  } catch (e) {
    return { status: e instanceof ConnectError ? 'unreachable' : 'failed', ...zeroCounts(), error: errorMessage(e), durationMs: Date.now() - started };
  }
}

/** run-started `secrets`: per secret var, `<salt>:<digest>` of each distinct value the hosts got. */
function secretVarDigests(recipe: Recipe, targets: HostTarget[]): Record<string, { sha256: string[] }> {
  const salt = randomBytes(16).toString('hex');
  const out: Record<string, { sha256: string[] }> = {};
  for (const [name, spec] of Object.entries(recipe.vars)) {
    if (!spec.secret) continue;
    const values = targets.map((target) => target.vars[name]).filter((value) => value !== undefined && value !== null);
    if (values.length) out[name] = { sha256: [...new Set(values.map((value) => `${salt}:${varDigest(salt, name, typeof value === 'string' ? value : JSON.stringify(value))}`))] };
  }
  return out;
}
