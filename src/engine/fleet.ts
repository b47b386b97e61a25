/**
 * Many hosts: connect (up to `concurrency` at once), gather facts, lock, run, release, close.
 * Every host ends with a host-finished event whatever happens to it; the worst host sets the exit code.
 *
 * Applying a plan (`expected`) takes two passes: every host is connected, locked and re-checked
 * against the plan first; only when no host is stale does any host change.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ConnectError, errorMessage } from '../errors.js';
import type { Recipe, RetrySpec } from '../recipe/types.js';
import type { ShellTransport } from '../transport/base.js';
import { worstStatus, type Counts, type Emit, type HostStatus, type RunEvent, type RunStatus } from './events.js';
import { gatherFacts, type Facts } from './facts.js';
import { Journal, reachOf } from './journal.js';
import { acquireLock } from './lock.js';
import { Masker } from './mask.js';
import { staleSteps, stepValueOf, varDigest, varDigests, type PlanStepValue, type PlanValue } from './plan-value.js';
import { runHost } from './run.js';
import { sha256 } from '../steps/step.js';

export interface HostTarget {
  name: string;
  /** Opens (or returns the already open) connection. */
  connect(): Promise<ShellTransport>;
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
  /** How long a lost link is tried again before the host is given up (default: HOSTSMITH_RECONNECT_SECONDS, else 60 s). */
  reconnectMs?: number;
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
}

export async function runRecipe(o: RunRecipeOptions): Promise<RunReport> {
  const runId = o.runId ?? newRunId();
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
    };
    await journal?.write(header);
    emit({ event: 'run-started', runId, time: time(), recipe: o.recipe.name, mode: o.mode, hosts: names });

    let todo = o.targets;
    if (o.mode === 'apply' && o.expected) {
      const refused = await verifyAgainstPlan(o.expected);
      if (refused) {
        for (const t of o.targets) hosts[t.name] ??= { status: 'not-started', ...zero(), error: `${t.name}: not applied: ${refused}`, durationMs: 0 };
        todo = [];
      }
    }
    await pool(todo, o.concurrency ?? 10, async (target) => {
      const hostStarted = Date.now();
      hosts[target.name] = o.interrupt?.aborted
        ? { status: 'interrupted', ...zero(), error: 'not started: interrupted by the user', durationMs: 0 }
        : await runOneHost(target, hostStarted);
      await hostFinished(target.name, hosts[target.name]!);
    });
    // A host given up leaves the run open: `recover` finishes it (SPEC §9).
    const givenUp = names.filter((n) => hosts[n]?.givenUp);
    if (!todo.length) for (const t of o.targets) await hostFinished(t.name, hosts[t.name]!);

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

  async function hostFinished(name: string, report: HostReport): Promise<void> {
    // A host given up is not finished: the journal leaves it open for `recover`.
    if (!report.givenUp) {
      await journal
        ?.write({ kind: 'host-finished', time: time(), host: name, status: report.status, counts: countsOf(report), ...(report.error ? { error: report.error } : {}) })
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
    const facts = await gatherFacts(transport);
    transport.loginUser = facts.user;
    transport.defaultSudo = false;
    transport.runTag = runId;
    emit({ event: 'host-connected', runId, time: time(), host: target.name, facts });
    const baseFor = (withSudo: boolean) =>
      o.hostStateDir ?? (facts.user === 'root' || withSudo ? '/var/lib/hostsmith' : `${facts.home || '/tmp'}/.local/state/hostsmith`);
    const h: Opened = { transport, facts, baseFor };
    opened.set(target.name, h);
    if (o.mode === 'apply') {
      const sudo = target.sudo || o.recipe.sudo || o.recipe.defaults.sudo === true;
      const held = await acquireLock(transport, baseFor(sudo), runId, sudo, { stateDir: o.stateDir });
      h.release = held;
      const reach = reachOf(target.describe);
      await journal?.write({ kind: 'host-started', time: time(), host: target.name, facts, backupDir: `${baseFor(sudo)}/backups/${runId}`, lock: held.path, ...(reach ? { target: reach } : {}) });
    }
    return h;
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
    };
  }

  async function runOneHost(target: HostTarget, hostStarted: number): Promise<HostReport> {
    let report: HostReport | undefined;
    let h: Opened | undefined;
    const took = () => Date.now() - hostStarted;
    try {
      h = await openHost(target);
      const r = await runHost(hostOptions(target, h));
      report = {
        status: r.status,
        ...r.counts,
        ...(r.error ? { error: `${target.name}: ${r.error}` } : {}),
        ...(r.givenUp ? { givenUp: true } : {}),
        facts: h.facts,
        durationMs: took(),
        ...(o.mode === 'plan' ? { steps: r.planned.map((p) => stepValueOf(p, o.recipe.handlers.includes(p.spec))), vars: varDigests(salt, target.vars) } : {}),
      };
    } catch (e) {
      report = { status: e instanceof ConnectError ? 'unreachable' : 'failed', ...zero(), error: errorMessage(e), durationMs: took() };
    } finally {
      if (h) {
        await closeHost(h, report, target.name);
        if (!o.keepOpen) opened.delete(target.name);
      }
    }
    return report;
  }
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
