/**
 * The hosts an apply (or plan) has open: each connected once, with its facts and, for an apply,
 * the run's lock there — taken at connect when another lock is already held there (to fail fast
 * or find it stale), else before the run's first change, so a run that changes nothing never
 * locks a host. Kept apart from the run's batches, which only ask to open, lock and let go.
 */
import { errorMessage } from '../errors.js';
import type { ShellTransport } from '../transport/base.js';
import { quote } from '../shell/script.js';
import type { Emit } from './events.js';
import { factsAndLocks, gatherFacts, type Facts } from './facts.js';
import type { LockTaken } from './host-run.js';
import { reachOf, type Journal } from './journal.js';
import { ROOT_LOCK_DIR, acquireLock } from './lock.js';
import { isoNow } from './run-skeleton.js';

/** What the fleet needs of a host to reach it (fleet.ts HostTarget). */
export interface Reachable {
  name: string;
  connect(): Promise<ShellTransport>;
  sudo: boolean;
  describe?: Record<string, unknown>;
}

/** A connected host: its transport, facts, and the lock this run holds there (apply). */
export interface OpenHost {
  transport: ShellTransport;
  facts: Facts;
  /** Where hostsmith keeps its state on the host, for a run with or without sudo. */
  baseFor(withSudo: boolean): string;
  release?: () => Promise<void>;
  /** The host lock being (or already) taken, once per host: resolves to when it was held. */
  locking?: Promise<LockTaken>;
  /** Who had locked the host last, beside each lock path, when the run first read it (facts). */
  lasts: string[];
}

export interface FleetHostSettings {
  runId: string;
  /** An apply journals each host and locks it; a plan only reads. */
  apply: boolean;
  stateDir: string;
  rootLockDir?: string;
  hostStateDir?: string;
  /** Leave connections open when a host is let go (the CLI plans, asks, then applies on the same ones). */
  keepOpen?: boolean;
  /** The recipe asks for sudo (its own, or its defaults'): the run's lock and backups then are root's. */
  recipeSudo: boolean;
  journal?: Journal;
  emit: Emit;
}

export class FleetHosts {
  private readonly open = new Map<string, OpenHost>();

  constructor(private readonly settings: FleetHostSettings) {}

  /** Connects (once per host), reads its facts, and for an apply journals host-started. */
  async connect(target: Reachable): Promise<OpenHost> {
    const have = this.open.get(target.name);
    if (have) return have;
    const { runId, apply, emit } = this.settings;
    const transport = await target.connect();
    // An apply also asks, in the same round trip, whether a run lock is held there (the root lock,
    // or the login user's): if so it takes its own at once (and fails fast, or finds it stale).
    const { facts, locked, lasts } = apply ? await factsAndLocks(transport, this.lockPaths()) : { facts: await gatherFacts(transport), locked: false, lasts: [] };
    transport.identify(facts.user);
    transport.tagRun(runId);
    emit({ event: 'host-connected', runId, time: isoNow(), host: target.name, facts });
    const host: OpenHost = { transport, facts, baseFor: this.baseFor(facts), lasts };
    this.open.set(target.name, host);
    if (apply) {
      // Journaled at once, lock or not: a crash before the first change still leaves what the run
      // started on the host (a probe batch, its scratch folder) for recover to find and clear.
      await this.hostStarted(target, host);
      if (locked) await this.locker(target, host)();
    }
    return host;
  }

  /**
   * The host lock, taken once (at connect, or when runHost calls it through `beforeChange`), and
   * journaled by a second host-started entry that names the lock. Resolves to when it was held.
   */
  locker(target: Reachable, host: OpenHost): () => Promise<LockTaken> {
    return () => (host.locking ??= this.lock(target, host));
  }

  /**
   * The host booted again during the run (a reboot step): a lock the run holds in /run went with
   * the old boot, so it is taken again where it was — this run's own lock, found or made afresh;
   * one another run took meanwhile is refused (LockedError). A lock not yet taken is left to
   * `locker`.
   */
  async relock(target: Reachable, host: OpenHost): Promise<void> {
    if (!host.release) return;
    const { runId, stateDir, rootLockDir } = this.settings;
    const sudo = this.runSudo(target);
    host.release = await acquireLock(host.transport, host.baseFor(sudo), runId, sudo, { stateDir, adopt: runId, ...(rootLockDir ? { rootLockDir } : {}) });
  }

  /** Releases the lock (apply) and closes the connection (unless kept open); `report` hears of a lock that would not let go. */
  async letGo(name: string, report?: { error?: string; givenUp?: boolean }): Promise<void> {
    const host = this.open.get(name);
    if (!host) return;
    await this.close(host, report, name);
    this.open.delete(name);
  }

  /** The end of the run: whatever is still open is let go. */
  async closeAll(): Promise<void> {
    for (const host of this.open.values()) await this.close(host);
  }

  /** Whether the run uses sudo on this host for its lock and backups: the host's, the recipe's or its defaults'. */
  runSudo(target: Reachable): boolean {
    return target.sudo || this.settings.recipeSudo;
  }

  private lockPaths(): string[] {
    const { rootLockDir, hostStateDir } = this.settings;
    return [quote(`${rootLockDir ?? ROOT_LOCK_DIR}/lock`), hostStateDir ? quote(`${hostStateDir}/lock`) : '"$HOME/.local/state/hostsmith/lock"'];
  }

  private baseFor(facts: Facts): (withSudo: boolean) => string {
    const { hostStateDir } = this.settings;
    return (withSudo) => hostStateDir ?? (facts.user === 'root' || withSudo ? '/var/lib/hostsmith' : `${facts.home || '/tmp'}/.local/state/hostsmith`);
  }

  private async hostStarted(target: Reachable, host: OpenHost, lock?: string): Promise<void> {
    const reach = reachOf(target.describe);
    const backupDir = `${host.baseFor(this.runSudo(target))}/backups/${this.settings.runId}`;
    await this.settings.journal?.write({
      kind: 'host-started',
      time: isoNow(),
      host: target.name,
      facts: host.facts,
      backupDir,
      ...(lock !== undefined ? { lock } : {}),
      ...(reach ? { target: reach } : {}),
    });
  }

  private async lock(target: Reachable, host: OpenHost): Promise<LockTaken> {
    const { runId, stateDir, rootLockDir } = this.settings;
    const sudo = this.runSudo(target);
    const held = await acquireLock(host.transport, host.baseFor(sudo), runId, sudo, { stateDir, ...(rootLockDir ? { rootLockDir } : {}) });
    host.release = held;
    await this.hostStarted(target, host, held.path);
    // The lock beside the root lock path when the run has root, else beside the user's.
    const seen = host.lasts[sudo || host.facts.user === 'root' ? 0 : 1];
    return { at: Date.now(), quiet: seen !== undefined && held.before === seen };
  }

  private async close(host: OpenHost, report?: { error?: string; givenUp?: boolean }, name?: string): Promise<void> {
    const release = host.release;
    host.release = undefined;
    // A host given up keeps the run's lock until `recover` (the link to release it is gone anyway).
    if (release && !report?.givenUp) {
      await release().catch((e: unknown) => {
        // Say so (lock.ts names the lock and why): the next run would otherwise find the host locked with no idea why.
        if (report) report.error = `${report.error ?? name}; ${errorMessage(e)}`;
      });
    }
    if (!this.settings.keepOpen) await host.transport.close().catch(() => {});
  }
}
