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
import { factsAndLocks, factsScript, readFactsAnswer, sameFacts, type Facts, type FactsAnswer, type FirstContact } from './facts.js';
import type { FactsCache } from './facts-cache.js';
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
  /**
   * The host's facts are those the last run saw (FactsCache), not yet read this run: they are
   * read in the first exec that reads the host, and settled then.
   */
  firstContact?: FirstContact;
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
  /** Facts kept from earlier runs: a host found there has its facts read with its first batch. */
  factsCache?: FactsCache;
}

export class FleetHosts {
  private readonly open = new Map<string, OpenHost>();

  constructor(private readonly settings: FleetHostSettings) {}

  /**
   * Connects (once per host), reads its facts, and for an apply journals host-started. A host
   * whose facts the last run kept starts from those instead, with no round trip of its own: its
   * facts (and locks) are read with its first batch, and settled then (FirstContact).
   */
  async connect(target: Reachable): Promise<OpenHost> {
    const have = this.open.get(target.name);
    if (have) return have;
    const { runId, apply, emit, factsCache } = this.settings;
    const transport = await target.connect();
    const kept = process.env.HOSTSMITH_NO_BATCH === '1' ? undefined : factsCache?.read(factsKey(target));
    // An apply also asks, in the same round trip, whether a run lock is held there (the root lock,
    // or the login user's): if so it takes its own at once (and fails fast, or finds it stale).
    const answer: FactsAnswer = kept ? { facts: kept, locked: false, lasts: [] } : await this.readFacts(transport);
    // Only an apply keeps them: a plan writes nothing, on the host or here.
    if (!kept && apply) factsCache?.write(factsKey(target), answer.facts);
    const { facts, locked, lasts } = answer;
    transport.identify(facts.user);
    transport.tagRun(runId);
    emit({ event: 'host-connected', runId, time: isoNow(), host: target.name, facts });
    const host: OpenHost = { transport, facts, baseFor: this.baseFor(facts), lasts };
    if (kept) host.firstContact = this.firstContact(host, kept);
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
   * The facts kept from the last run were not the host's (or a run lock is held there): read them
   * now, as a connect without kept facts does, and journal the host again with them. The run
   * then plans the host afresh; nothing was changed on it meanwhile.
   */
  async refresh(target: Reachable, host: OpenHost): Promise<void> {
    const { runId, apply, emit, factsCache } = this.settings;
    host.firstContact = undefined;
    const { facts, locked, lasts } = await this.readFacts(host.transport);
    if (apply) factsCache?.write(factsKey(target), facts);
    host.facts = facts;
    host.baseFor = this.baseFor(facts);
    host.lasts = lasts;
    host.transport.identify(facts.user);
    emit({ event: 'host-connected', runId, time: isoNow(), host: target.name, facts });
    if (apply) {
      await this.hostStarted(target, host);
      if (locked) await this.locker(target, host)();
    }
  }

  private readFacts(transport: ShellTransport): Promise<FactsAnswer> {
    return factsAndLocks(transport, this.factsLocks());
  }

  private firstContact(host: OpenHost, kept: Facts): FirstContact {
    const locks = this.factsLocks();
    return {
      script: factsScript(locks),
      settle: (out) => {
        host.firstContact = undefined;
        const answer = readFactsAnswer(out, locks.length);
        if (!sameFacts(answer.facts, kept) || answer.locked) return false;
        host.lasts = answer.lasts;
        return true;
      },
    };
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

  /** The lock paths the facts look at: an apply's (it may have to lock at once); a plan locks nothing. */
  private factsLocks(): string[] {
    return this.settings.apply ? this.lockPaths() : [];
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

/** Which host a kept copy of facts belongs to: its name and how it is reached. */
function factsKey(target: Reachable): string {
  return JSON.stringify([target.name, target.describe ?? null]);
}
