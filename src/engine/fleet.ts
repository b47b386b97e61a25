/**
 * Many hosts: connect (up to `concurrency` at once), gather facts, lock, run, release, close.
 * Every host ends with a host-finished event whatever happens to it; the worst host sets the exit code.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { HostsmithError, errorMessage } from '../errors.js';
import type { Recipe, RetrySpec } from '../recipe/types.js';
import type { ShellTransport } from '../transport/base.js';
import { worstStatus, type Counts, type Emit, type HostStatus, type RunEvent, type RunStatus } from './events.js';
import { gatherFacts, type Facts } from './facts.js';
import { Journal } from './journal.js';
import { acquireLock } from './lock.js';
import { Masker } from './mask.js';
import { runHost } from './run.js';

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
}

export interface HostReport extends Counts {
  status: HostStatus;
  error?: string;
  facts?: Facts;
  durationMs: number;
}

export interface RunReport {
  runId: string;
  mode: 'plan' | 'apply';
  status: RunStatus;
  exitCode: number;
  hosts: Record<string, HostReport>;
  journalFile?: string;
  durationMs: number;
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

export async function runRecipe(o: RunRecipeOptions): Promise<RunReport> {
  const runId = o.runId ?? newRunId();
  const masker = new Masker(o.secrets ?? []);
  const emit: Emit = (e: RunEvent) => o.emit?.(masker.value(e));
  const time = () => new Date().toISOString();
  const started = Date.now();
  const names = o.targets.map((t) => t.name);
  const journal = o.mode === 'apply' ? await Journal.create(o.stateDir, runId, masker) : undefined;
  const hosts: Record<string, HostReport> = {};

  try {
    await journal?.write({
      kind: 'run-started',
      runId,
      time: time(),
      recipe: o.recipe.name,
      recipeFile: o.recipe.file,
      mode: 'apply',
      hosts: names,
      vars: o.journalVars ?? {},
      pid: process.pid,
      controller: hostname(),
    });
    emit({ event: 'run-started', runId, time: time(), recipe: o.recipe.name, mode: o.mode, hosts: names });

    await pool(o.targets, o.concurrency ?? 10, async (target) => {
      const hostStarted = Date.now();
      let report: HostReport;
      if (o.interrupt?.aborted) {
        report = { status: 'interrupted', ...zero(), error: 'not started: interrupted by the user', durationMs: 0 };
      } else {
        report = await runOneHost(target, hostStarted);
      }
      hosts[target.name] = report;
      await journal?.write({ kind: 'host-finished', time: time(), host: target.name, status: report.status, counts: countsOf(report), ...(report.error ? { error: report.error } : {}) });
      emit({
        event: 'host-finished',
        runId,
        time: time(),
        host: target.name,
        status: report.status,
        ...countsOf(report),
        ...(report.error ? { error: report.error } : {}),
        durationMs: report.durationMs,
      });
    });

    const { status, exitCode } = worstStatus(
      names.map((n) => hosts[n]!.status),
      o.interrupt?.aborted === true,
    );
    const report: RunReport = { runId, mode: o.mode, status, exitCode, hosts, journalFile: journal?.file, durationMs: Date.now() - started };
    // A second Ctrl-C leaves the run open on purpose: the journal shows what was not rolled back.
    if (!o.abortRollback?.aborted) await journal?.write({ kind: 'run-finished', time: time(), status, exitCode });
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
    await journal?.close();
  }

  async function runOneHost(target: HostTarget, hostStarted: number): Promise<HostReport> {
    let transport: ShellTransport | undefined;
    let release: (() => Promise<void>) | undefined;
    let report: HostReport | undefined;
    const took = () => Date.now() - hostStarted;
    try {
      transport = await target.connect();
      const facts = await gatherFacts(transport);
      transport.loginUser = facts.user;
      const sudo = target.sudo || o.recipe.sudo || o.recipe.defaults.sudo === true;
      transport.defaultSudo = false;
      emit({ event: 'host-connected', runId, time: time(), host: target.name, facts });
      const baseFor = (withSudo: boolean) =>
        o.hostStateDir ?? (facts.user === 'root' || withSudo ? '/var/lib/hostsmith' : `${facts.home || '/tmp'}/.local/state/hostsmith`);
      const base = baseFor(sudo);
      const backupDir = `${base}/backups/${runId}`;
      if (o.mode === 'apply') {
        release = await acquireLock(transport, base, runId, sudo);
        await journal?.write({ kind: 'host-started', time: time(), host: target.name, facts, backupDir, ...(target.describe ? { target: target.describe } : {}) });
      }
      const r = await runHost({
        runId,
        mode: o.mode,
        recipe: o.recipe,
        host: target.name,
        transport,
        facts,
        vars: target.vars,
        sudo: target.sudo,
        backupDirFor: (withSudo) => `${baseFor(withSudo)}/backups/${runId}`,
        emit,
        journal,
        interrupt: o.interrupt,
        abortRollback: o.abortRollback,
        defaultTimeoutMs: o.defaultTimeoutMs,
        defaultRetry: o.defaultRetry,
        sensitive: (text) => masker.holds(text),
      });
      report = { status: r.status, ...r.counts, ...(r.error ? { error: `${target.name}: ${r.error}` } : {}), facts, durationMs: took() };
    } catch (e) {
      const unreachable = e instanceof HostsmithError && e.exitCode === 4;
      report = { status: unreachable ? 'unreachable' : 'failed', ...zero(), error: errorMessage(e), durationMs: took() };
    } finally {
      if (release) {
        await release().catch(() => {
          // Say so: the next run would otherwise find the host locked with no idea why.
          if (report) report.error = `${report.error ?? target.name}; the run lock could not be released (connection lost): remove /run/lock/hostsmith.lock on the host once you have checked it`;
        });
      }
      if (transport && !o.keepOpen) await transport.close().catch(() => {});
    }
    return report;
  }
}

function countsOf(r: Counts): Counts {
  return { changed: r.changed, unchanged: r.unchanged, skipped: r.skipped, failed: r.failed, rolledBack: r.rolledBack };
}
