/**
 * Many hosts: connect (up to `concurrency` at once), gather facts, lock, run, release, close.
 * Every host ends with a host-finished event whatever happens to it; the worst host sets the exit code.
 *
 * Applying a plan (`expected`) takes two passes: every host is connected, locked and re-checked
 * against the plan first; only when no host is stale does any host change.
 *
 * Fleet options (SPEC §12, batches.ts): hosts run batch after batch, each batch finished — its
 * rollbacks included — before the next starts; a batch with more failed hosts than --max-fail
 * allows stops the run, and the hosts left end `not-started`, never contacted. Under
 * --rollback-scope batch|fleet a host that finished ok keeps its connection, its completed steps
 * and its lock (HostResult.rollBackLater) until no failure can ask for its rollback any more: the
 * end of its batch (batch) or of the run (fleet). Its host-finished entry waits until then too, so
 * a crash meanwhile leaves it open for `recover`.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ConnectError, errorMessage } from '../errors.js';
import type { Recipe, RetrySpec } from '../recipe/types.js';
import type { ShellTransport } from '../transport/base.js';
import { failBudget, splitBatches, type Amount, type RollbackScope } from './batches.js';
import { worstStatus, type Cause, type Counts, type Emit, type HostStatus, type RunEvent, type RunStatus } from './events.js';
import { factsAndLocks, gatherFacts, type Facts } from './facts.js';
import { Journal, reachOf } from './journal.js';
import { ROOT_LOCK_DIR, acquireLock } from './lock.js';
import { quote } from '../transport/shell.js';
import { Masker } from './mask.js';
import { staleSteps, stepValueOf, varDigest, varDigests, type PlanStepValue, type PlanValue } from './plan-value.js';
import { runHost, type HostResult } from './run.js';
import type { LockTaken } from './host-run.js';
import { sha256 } from '../steps/step.js';

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

export interface HostReport extends Counts {
  status: HostStatus;
  error?: string;
  facts?: Facts;
  durationMs: number;
  /** Plan mode: every step as the plan value holds it. */
  steps?: PlanStepValue[];
  /** Plan mode: salted digests of the vars this host was planned with. */
  vars?: Record<string, string>;
  /** Apply of a plan: the steps that are not as planned. */
  stale?: string[];
  /** The link was lost and not made again: the host keeps the run's changes and lock; the run stays open for `recover`. */
  givenUp?: boolean;
  /** The step whose failure stopped the run on this host, when a step's did. */
  failedStep?: string;
  /** Rolled back, or not started, because of this failure on another host (fleet options). */
  cause?: Cause;
}

export interface RunReport {
  runId: string;
  mode: 'plan' | 'apply';
  status: RunStatus;
  exitCode: number;
  hosts: Record<string, HostReport>;
  journalFile?: string;
  durationMs: number;
  /** Local sources the steps read (templates, files): path → sha256. */
  sources: Record<string, string>;
}

export function newRunId(): string {
  const t = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${t}-${randomBytes(3).toString('hex')}`;
}

const zero = (): Counts => ({ changed: 0, unchanged: 0, skipped: 0, failed: 0, rolledBack: 0 });

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(workers);
}

/** A connected host: its transport, facts, and the lock this run holds there (apply). */
interface Opened {
  transport: ShellTransport;
  facts: Facts;
  baseFor(withSudo: boolean): string;
  release?: () => Promise<void>;
  /** The host lock being (or already) taken, once per host: resolves to when it was held. */
  locking?: Promise<LockTaken>;
  /** Who had locked the host last, beside each lock path, when the run first read it (facts). */
  lasts: string[];
}

/** A host that finished ok and may still be rolled back because of another host (rollback scope batch or fleet). */
interface Held {
  h: Opened;
  /** Takes back what the run did there (run.ts); its time is added to the host's durationMs. */
  rollBackLater: NonNullable<HostResult['rollBackLater']>;
}

export async function runRecipe(o: RunRecipeOptions): Promise<RunReport> {
  const runId = o.runId ?? newRunId();
  const confirmMs = o.confirmMs ?? o.recipe.defaults.confirmMs;
  const masker = new Masker(o.secrets ?? []);
  const emit: Emit = (e: RunEvent) => o.emit?.(masker.value(e));
  const time = () => new Date().toISOString();
  const started = Date.now();
  const names = o.targets.map((t) => t.name);
  const journal = o.mode === 'apply' ? await Journal.create(o.stateDir, runId, masker) : undefined;
  const hosts: Record<string, HostReport> = {};
  const opened = new Map<string, Opened>();
  const sources: Record<string, string> = {};
  const salt = o.salt ?? o.expected?.salt ?? '';
  const apply = o.mode === 'apply';
  const scope: RollbackScope = apply ? (o.rollbackScope ?? 'host') : 'host';
  const batchSize = apply && o.batchSize ? o.batchSize : undefined;
  const batches = batchSize ? splitBatches(o.targets, batchSize) : [o.targets];
  const fleetGiven = apply && (batchSize !== undefined || scope !== 'host');
  /** Hosts that finished ok and keep connection, completed steps and lock while a failure elsewhere may still roll them back. */
  const held = new Map<string, Held>();

  try {
    const header = {
      kind: 'run-started' as const,
      runId,
      time: time(),
      recipe: o.recipe.name,
      recipeFile: o.recipe.file,
      mode: 'apply' as const,
      hosts: names,
      vars: o.journalVars ?? {},
      pid: process.pid,
      controller: hostname(),
      // Salted digests of each secret var's value(s), so that `undo` can check a value given again
      // before it fills the journal's *** (undo.ts). Under `sha256`, a field the mask leaves alone.
      secrets: secretVarDigests(o.recipe, o.targets),
      ...(fleetGiven
        ? {
            fleet: {
              batches: batches.map((b) => b.map((t) => t.name)),
              ...(batchSize ? { batch: String(batchSize) } : {}),
              ...(batchSize && o.maxFail ? { maxFail: o.maxFail.given } : {}),
              rollbackScope: scope,
            },
          }
        : {}),
    };
    await journal?.write(header);
    emit({ event: 'run-started', runId, time: time(), recipe: o.recipe.name, mode: o.mode, hosts: names });

    let refused: string | undefined;
    if (o.mode === 'apply' && o.expected) {
      refused = await verifyAgainstPlan(o.expected);
      if (refused) {
        for (const t of o.targets) hosts[t.name] ??= { status: 'not-started', ...zero(), error: `${t.name}: not applied: ${refused}`, durationMs: 0 };
        for (const t of o.targets) await hostFinished(t.name, hosts[t.name]!);
      }
    }
    if (!refused) await runBatches();
    // A host given up leaves the run open: `recover` finishes it (SPEC §9).
    const givenUp = names.filter((n) => hosts[n]?.givenUp);

    const { status, exitCode } = worstStatus(
      names.map((n) => hosts[n]!.status),
      o.interrupt?.aborted === true,
    );
    const report: RunReport = { runId, mode: o.mode, status, exitCode, hosts, journalFile: journal?.file, durationMs: Date.now() - started, sources };
    // A second Ctrl-C leaves the run open on purpose: the journal shows what was not rolled back.
    if (!o.abortRollback?.aborted && !givenUp.length) await journal?.write({ kind: 'run-finished', time: time(), status, exitCode }).catch(() => {});
    emit({
      event: 'run-finished',
      runId,
      time: time(),
      status,
      exitCode,
      durationMs: report.durationMs,
      hosts: Object.fromEntries(names.map((n) => [n, { status: hosts[n]!.status, ...countsOf(hosts[n]!) }])),
    });
    // Errors quote commands, and commands may hold secrets: the report is masked like the events.
    return masker.value(report);
  } finally {
    for (const h of opened.values()) await closeHost(h);
    await journal?.close().catch(() => {});
  }

  /**
   * The hosts, batch after batch. After each batch: a failure there rolls back the held hosts its
   * scope covers; then the batch's held hosts are let go (scope batch); then, with more failed
   * hosts than the budget allows (or any, under scope fleet), no later batch starts.
   */
  async function runBatches(): Promise<void> {
    let stopped: { why: string; cause?: Cause } | undefined;
    for (const [i, batch] of batches.entries()) {
      const batchNames = batch.map((t) => t.name);
      if (stopped) {
        for (const t of batch) {
          hosts[t.name] = { status: 'not-started', ...zero(), error: `${t.name}: not started: ${stopped.why}`, ...(stopped.cause ? { cause: stopped.cause } : {}), durationMs: 0 };
          // Applying a plan read and locked every host first: let this one go.
          const h = opened.get(t.name);
          if (h) {
            await closeHost(h, hosts[t.name], t.name);
            opened.delete(t.name);
          }
          await hostFinished(t.name, hosts[t.name]!);
        }
        continue;
      }
      if (batches.length > 1 && !o.interrupt?.aborted) emit({ event: 'batch-started', runId, time: time(), batch: i + 1, of: batches.length, hosts: batchNames });
      await pool(batch, o.concurrency ?? 10, async (target) => {
        const hostStarted = Date.now();
        hosts[target.name] = o.interrupt?.aborted
          ? { status: 'interrupted', ...zero(), error: 'not started: interrupted by the user', durationMs: 0 }
          : await runOneHost(target, hostStarted);
        // A held host is finished once no failure can roll it back any more (settle).
        if (!held.has(target.name)) await hostFinished(target.name, hosts[target.name]!);
      });
      // Hosts that failed themselves; those rolled back only because of them do not count against --max-fail.
      const failed = batchNames.filter((n) => hosts[n]!.status !== 'ok');
      const first = failed[0];
      // Ctrl-C is the cause when it came: hosts it stopped end interrupted, not failed by themselves.
      const cause: Cause | undefined = o.interrupt?.aborted
        ? { error: 'interrupted by the user' }
        : first
          ? { host: first, ...(hosts[first]!.failedStep ? { step: hosts[first]!.failedStep } : {}), error: hosts[first]!.error ?? hosts[first]!.status }
          : undefined;
      if (cause && scope === 'batch') await settle(batchNames, cause, 'batch');
      if (cause && scope === 'fleet') await settle([...held.keys()].reverse(), cause, 'fleet');
      if (scope === 'batch') await settle(batchNames);
      if (i === batches.length - 1 || o.interrupt?.aborted || !first) continue;
      const budget = failBudget(o.maxFail, batch.length);
      const list = `${failed.length} of its ${batch.length} host(s) failed (${failed.join(', ')})`;
      if (scope === 'fleet') {
        stopped = { why: `batch ${i + 1} of ${batches.length}: ${list}, and --rollback-scope fleet rolled back every host of the run, so no later batch started; nothing was done on this host. Fix the failure (hostsmith show ${runId}) and apply again`, cause: cause! };
      } else if (failed.length > budget) {
        stopped = {
          why: `batch ${i + 1} of ${batches.length}: ${list}, more than --max-fail ${o.maxFail?.given ?? '∞'} allows (${budget} in a batch of ${batch.length}), so no later batch started; nothing was done on this host. Fix the failure (hostsmith show ${runId}) and apply again`,
          cause: cause!,
        };
      }
    }
    // The end of the run: nothing can ask for a rollback any more.
    await settle([...held.keys()]);
  }

  /**
   * Lets held hosts go: with a cause, each is rolled back first (newest change first, every
   * rollback attempted), then its lock released, its connection closed and its host-finished written.
   */
  async function settle(names: string[], cause?: Cause, why?: 'batch' | 'fleet'): Promise<void> {
    const mine = names.filter((n) => held.has(n));
    await pool(mine, o.concurrency ?? 10, async (name) => {
      const k = held.get(name)!;
      held.delete(name);
      const report = hosts[name]!;
      if (cause) {
        const started = Date.now();
        const because = cause.host
          ? `rolled back because ${cause.host} failed${cause.step ? ` at step "${cause.step}"` : ''} and --rollback-scope is ${why}: ${bare(cause.host, cause.error)}`
          : `rolled back because the run was interrupted by the user and --rollback-scope is ${why}`;
        try {
          const r = await k.rollBackLater(because);
          Object.assign(report, { status: r.status, ...r.counts, error: `${name}: ${r.error ?? because}`, cause, ...(r.givenUp ? { givenUp: true } : {}) });
        } catch (e) {
          Object.assign(report, { status: 'rollback-incomplete', error: `${name}: ${because}; the rollback stopped: ${errorMessage(e)}`, cause });
        }
        report.durationMs += Date.now() - started;
      }
      await closeHost(k.h, report, name);
      opened.delete(name);
      await hostFinished(name, report);
    });
  }

  async function hostFinished(name: string, report: HostReport): Promise<void> {
    // A host given up is not finished: the journal leaves it open for `recover`.
    if (!report.givenUp) {
      await journal
        ?.write({
          kind: 'host-finished',
          time: time(),
          host: name,
          status: report.status,
          counts: countsOf(report),
          ...(report.error ? { error: report.error } : {}),
          ...(report.cause ? { cause: report.cause } : {}),
        })
        .catch((e: unknown) => {
          report.error = `${report.error ?? name}; ${errorMessage(e)}`;
        });
    }
    emit({
      event: 'host-finished',
      runId,
      time: time(),
      host: name,
      status: report.status,
      ...countsOf(report),
      ...(report.error ? { error: report.error } : {}),
      ...(report.cause ? { cause: report.cause } : {}),
      durationMs: report.durationMs,
    });
  }

  /**
   * First pass of applying a plan: connect, lock and re-check every host. Returns why the run is
   * refused (some host stale or unreachable), with each host's report already set; else undefined.
   */
  async function verifyAgainstPlan(plan: PlanValue): Promise<string | undefined> {
    const bad: string[] = [];
    await pool(o.targets, o.concurrency ?? 10, async (target) => {
      const hostStarted = Date.now();
      const expected = plan.hosts[target.name];
      try {
        if (!expected) throw new Error(`${target.name} is not in the plan`);
        const h = await openHost(target);
        const r = await runHost({ ...hostOptions(target, h), mode: 'plan', emit: () => {}, journal: undefined, expected: undefined });
        const stale = staleSteps(expected, r.planned);
        if (r.status === 'unreachable') throw new ConnectError(target.name, r.error ?? 'unreachable');
        if (stale.length) {
          hosts[target.name] = { status: 'stale', ...zero(), stale, error: `${target.name}: not as planned:\n  ${stale.join('\n  ')}`, durationMs: Date.now() - hostStarted };
          bad.push(target.name);
        }
      } catch (e) {
        hosts[target.name] = { status: e instanceof ConnectError ? 'unreachable' : 'failed', ...zero(), error: errorMessage(e), durationMs: Date.now() - hostStarted };
        bad.push(target.name);
      }
    });
    if (!bad.length) return undefined;
    return `${bad.join(', ')} ${bad.length > 1 ? 'are' : 'is'} not as the plan expects; nothing was changed on any host`;
  }

  async function openHost(target: HostTarget): Promise<Opened> {
    const have = opened.get(target.name);
    if (have) return have;
    const transport = await target.connect();
    // An apply also asks, in the same round trip, whether a run lock is held there (the root lock,
    // or the login user's): if so it takes its own at once (and fails fast, or finds it stale);
    // if not, only before its first change — a run that changes nothing never locks the host.
    const lockPaths = [quote(`${o.rootLockDir ?? ROOT_LOCK_DIR}/lock`), o.hostStateDir ? quote(`${o.hostStateDir}/lock`) : '"$HOME/.local/state/hostsmith/lock"'];
    const { facts, locked, lasts } = o.mode === 'apply' ? await factsAndLocks(transport, lockPaths) : { facts: await gatherFacts(transport), locked: false, lasts: [] };
    transport.loginUser = facts.user;
    transport.defaultSudo = false;
    transport.runTag = runId;
    emit({ event: 'host-connected', runId, time: time(), host: target.name, facts });
    const baseFor = (withSudo: boolean) =>
      o.hostStateDir ?? (facts.user === 'root' || withSudo ? '/var/lib/hostsmith' : `${facts.home || '/tmp'}/.local/state/hostsmith`);
    const h: Opened = { transport, facts, baseFor, lasts };
    opened.set(target.name, h);
    if (o.mode === 'apply') {
      // Journaled at once, lock or not: a crash before the first change still leaves what the run
      // started on the host (a probe batch, its scratch folder) for recover to find and clear.
      const sudo = runSudo(target);
      const reach = reachOf(target.describe);
      await journal?.write({ kind: 'host-started', time: time(), host: target.name, facts, backupDir: `${baseFor(sudo)}/backups/${runId}`, ...(reach ? { target: reach } : {}) });
      if (locked) await lockHost(target, h)();
    }
    return h;
  }

  /** Whether the run uses sudo on this host for its lock and backups: the host's, the recipe's or its defaults'. */
  function runSudo(target: HostTarget): boolean {
    return target.sudo || o.recipe.sudo || o.recipe.defaults.sudo === true;
  }

  /**
   * The host lock, taken once: at connect when a lock is already held there (to fail fast or find
   * it stale), else before the run's first change (runHost calls it through `beforeChange`), and
   * journaled by a second host-started entry that names the lock. Resolves to when it was held.
   */
  function lockHost(target: HostTarget, h: Opened): () => Promise<LockTaken> {
    return () =>
      (h.locking ??= (async () => {
        const sudo = runSudo(target);
        const held = await acquireLock(h.transport, h.baseFor(sudo), runId, sudo, { stateDir: o.stateDir, ...(o.rootLockDir ? { rootLockDir: o.rootLockDir } : {}) });
        h.release = held;
        const reach = reachOf(target.describe);
        await journal?.write({ kind: 'host-started', time: time(), host: target.name, facts: h.facts, backupDir: `${h.baseFor(sudo)}/backups/${runId}`, lock: held.path, ...(reach ? { target: reach } : {}) });
        // The lock beside the root lock path when the run has root, else beside the user's.
        const seen = h.lasts[sudo || h.facts.user === 'root' ? 0 : 1];
        return { at: Date.now(), quiet: seen !== undefined && held.before === seen };
      })());
  }

  /** Releases the lock (apply) and closes the connection (unless kept open for the next pass). */
  async function closeHost(h: Opened, report?: HostReport, name?: string): Promise<void> {
    const release = h.release;
    h.release = undefined;
    // A host given up keeps the run's lock until `recover` (the link to release it is gone anyway).
    if (release && !report?.givenUp) {
      await release().catch((e: unknown) => {
        // Say so (lock.ts names the lock and why): the next run would otherwise find the host locked with no idea why.
        if (report) report.error = `${report.error ?? name}; ${errorMessage(e)}`;
      });
    }
    if (!o.keepOpen) await h.transport.close().catch(() => {});
  }

  function hostOptions(target: HostTarget, h: Opened) {
    return {
      runId,
      mode: o.mode,
      recipe: o.recipe,
      host: target.name,
      transport: h.transport,
      facts: h.facts,
      vars: target.vars,
      sudo: target.sudo,
      reconnectMs: o.reconnectMs,
      backupDirFor: (withSudo: boolean) => `${h.baseFor(withSudo)}/backups/${runId}`,
      emit,
      journal,
      salt,
      interrupt: o.interrupt,
      abortRollback: o.abortRollback,
      defaultTimeoutMs: o.defaultTimeoutMs,
      defaultRetry: o.defaultRetry,
      sensitive: (text: string) => masker.holds(text),
      onSource: (path: string, content: Buffer) => {
        sources[path] ??= `sha256:${sha256(content)}`;
      },
      beforeStep: o.beforeStep,
      expected: o.expected?.hosts[target.name],
      ...(o.mode === 'apply' ? { beforeChange: lockHost(target, h) } : {}),
      ...(o.mode === 'apply' && confirmMs !== undefined
        ? {
            confirm: {
              ms: confirmMs,
              verify: o.recipe.verify,
              openFresh: () => (target.connectFresh ? target.connectFresh() : Promise.reject(new Error(`no way to open a second connection to ${target.name}`))),
            },
          }
        : {}),
    };
  }

  async function runOneHost(target: HostTarget, hostStarted: number): Promise<HostReport> {
    let report: HostReport | undefined;
    let h: Opened | undefined;
    const took = () => Date.now() - hostStarted;
    try {
      h = await openHost(target);
      const r = await runHost(hostOptions(target, h));
      // Under a wider rollback scope an ok host stays open and locked: a failure elsewhere may still roll it back.
      if (scope !== 'host' && r.status === 'ok' && r.rollBackLater) held.set(target.name, { h, rollBackLater: r.rollBackLater });
      report = {
        status: r.status,
        ...r.counts,
        ...(r.error ? { error: `${target.name}: ${r.error}` } : {}),
        ...(r.givenUp ? { givenUp: true } : {}),
        ...(r.failedStep ? { failedStep: r.failedStep } : {}),
        facts: h.facts,
        durationMs: took(),
        ...(o.mode === 'plan' ? { steps: r.planned.map((p) => stepValueOf(p, o.recipe.handlers.includes(p.spec))), vars: varDigests(salt, target.vars) } : {}),
      };
    } catch (e) {
      report = { status: e instanceof ConnectError ? 'unreachable' : 'failed', ...zero(), error: errorMessage(e), durationMs: took() };
    } finally {
      if (h && !held.has(target.name)) {
        await closeHost(h, report, target.name);
        if (!o.keepOpen) opened.delete(target.name);
      }
    }
    return report;
  }
}

/** An error without the host name in front. */
function bare(host: string, error: string): string {
  return error.startsWith(`${host}: `) ? error.slice(host.length + 2) : error;
}

function countsOf(r: Counts): Counts {
  return { changed: r.changed, unchanged: r.unchanged, skipped: r.skipped, failed: r.failed, rolledBack: r.rolledBack };
}

/** run-started `secrets`: per secret var, `<salt>:<digest>` of each distinct value the hosts got. */
function secretVarDigests(recipe: Recipe, targets: HostTarget[]): Record<string, { sha256: string[] }> {
  const salt = randomBytes(16).toString('hex');
  const out: Record<string, { sha256: string[] }> = {};
  for (const [name, spec] of Object.entries(recipe.vars)) {
    if (!spec.secret) continue;
    const values = targets.map((t) => t.vars[name]).filter((v) => v !== undefined && v !== null);
    if (values.length) out[name] = { sha256: [...new Set(values.map((v) => `${salt}:${varDigest(salt, name, typeof v === 'string' ? v : JSON.stringify(v))}`))] };
  }
  return out;
}
