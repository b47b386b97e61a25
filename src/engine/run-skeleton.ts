/**
 * The shape every run of hostsmith has, whatever it does on its hosts: `apply` (fleet.ts), `undo`
 * (undo.ts) and `recover` (recover.ts) each drive one. Secrets are masked out of everything the
 * run writes or says; the journal is opened, its opening entry written and the run-started event
 * sent; each command's own per-host work runs (a pool of hosts at once); each host ends with
 * host-finished; the run ends with run-finished, unless it stays open for `recover`; and whatever
 * happens, what the run still holds is let go and the journal closed.
 *
 * Kept in one place so the three commands cannot drift apart in what their journals and events
 * promise, and so each command's file says only what it does on a host.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { errorMessage } from '../errors.js';
import type { Cause, Counts, Emit, HostStatus, RunEvent } from './events.js';
import type { Journal, JournalEntry } from './journal.js';
import { Masker } from './mask.js';

type Of<K extends JournalEntry['kind']> = Extract<JournalEntry, { kind: K }>;

export function newRunId(): string {
  const t = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${t}-${randomBytes(3).toString('hex')}`;
}

export const isoNow = (): string => new Date().toISOString();

export const zeroCounts = (): Counts => ({ changed: 0, unchanged: 0, skipped: 0, failed: 0, rolledBack: 0 });

/** The counts alone, out of a report that holds more. */
export function countsOf(report: Counts): Counts {
  return { changed: report.changed, unchanged: report.unchanged, skipped: report.skipped, failed: report.failed, rolledBack: report.rolledBack };
}

/** Runs `work` over `items` with at most `limit` in flight, in the order given. */
export async function pool<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) await work(items[next++]!);
  });
  await Promise.all(workers);
}

/** A run-started entry: who runs it (this process, this machine) is filled in here. */
export function runStartedEntry(fields: Omit<Of<'run-started'>, 'kind' | 'time' | 'pid' | 'controller'>): Of<'run-started'> {
  const { runId, recipe, recipeFile, mode, hosts, vars, ...rest } = fields;
  return { kind: 'run-started', runId, time: isoNow(), recipe, recipeFile, mode, hosts, vars, pid: process.pid, controller: hostname(), ...rest };
}

/** A recover-started entry: the recover that takes an open run over from here. */
export function recoverStartedEntry(): Of<'recover-started'> {
  return { kind: 'recover-started', time: isoNow(), pid: process.pid, controller: hostname() };
}

/** How a host ended, as host-finished says it. */
export interface HostEnd extends Counts {
  status: HostStatus;
  error?: string;
  cause?: Cause;
}

export interface HostFinishing {
  /** Sent with the event. */
  durationMs: number;
  /** The host is not finished (given up, not reached): no entry, so the journal leaves it open for `recover`. */
  staysOpen?: boolean;
  /** What a host-finished that could not be written does to the report; by default the error says why. */
  unrecorded?: (error: unknown) => void;
}

/** What a command's per-host work gets from its run. */
export interface RunFrame {
  readonly runId: string;
  readonly masker: Masker;
  /** Sends an event, masked. */
  readonly emit: Emit;
  /** Undefined when the run writes no journal (a plan). */
  readonly journal: Journal | undefined;
  /** Journals host-finished (unless the host stays open) and sends its event. */
  hostFinished(name: string, end: HostEnd, how: HostFinishing): Promise<void>;
  /** Runs when the run is over, however it ended, before the journal is closed (connections, locks). */
  whenOver(cleanup: () => Promise<void>): void;
}

/** How a run ended, once every host's work is done. */
export interface RunEnding<Result> {
  /** The run-finished entry to write; none: the run stays open in the journal, for `recover`. */
  finished?: Pick<Of<'run-finished'>, 'status' | 'exitCode'>;
  /**
   * A run-finished that cannot be written fails the command (recover: it must not say the run is
   * closed when its journal does not). Otherwise the failure is let go: every host is done already.
   */
  mustRecordEnd?: boolean;
  /** Sent once run-finished is written. */
  event?: RunEvent;
  /** What the caller gets, masked like the events (errors quote commands, and commands may hold secrets). */
  result: Result;
}

export interface RunDriver<Result> {
  runId: string;
  /** Secret values, masked out of every entry, event and the result. */
  secrets: Iterable<string>;
  emit?: Emit;
  /** Opens the journal: a new run's file, or an open run's own to append to; none: the run writes nothing. */
  openJournal?: (masker: Masker) => Promise<Journal>;
  /** The entry the run's part of the journal opens with, and the run-started event. */
  opening(): { entry?: JournalEntry; event: RunEvent };
  /** The command's own work, host by host; each host ends with `frame.hostFinished`. */
  work(frame: RunFrame): Promise<void>;
  ending(frame: RunFrame): RunEnding<Result>;
}

/** Drives one run through the shape above; the driver says what is done on the hosts. */
export async function driveRun<Result>(driver: RunDriver<Result>): Promise<Result> {
  const masker = new Masker(driver.secrets);
  const emit: Emit = (event: RunEvent) => driver.emit?.(masker.value(event));
  const journal = driver.openJournal ? await driver.openJournal(masker) : undefined;
  const cleanups: Array<() => Promise<void>> = [];
  const frame: RunFrame = {
    runId: driver.runId,
    masker,
    emit,
    journal,
    hostFinished: (name, end, how) => hostFinished({ runId: driver.runId, journal, emit }, name, end, how),
    whenOver: (cleanup) => cleanups.push(cleanup),
  };
  try {
    const { entry, event } = driver.opening();
    if (entry) await journal?.write(entry);
    emit(event);
    await driver.work(frame);
    const end = driver.ending(frame);
    if (end.finished && journal) {
      const written = journal.write({ kind: 'run-finished', time: isoNow(), ...end.finished });
      await (end.mustRecordEnd ? written : written.catch(() => {}));
    }
    if (end.event) emit(end.event);
    return masker.value(end.result);
  } finally {
    for (const cleanup of cleanups) await cleanup();
    await journal?.close().catch(() => {});
  }
}

async function hostFinished(run: { runId: string; journal?: Journal; emit: Emit }, name: string, end: HostEnd, how: HostFinishing): Promise<void> {
  if (!how.staysOpen) {
    const unrecorded =
      how.unrecorded ??
      ((e: unknown) => {
        end.error = `${end.error ?? name}; ${errorMessage(e)}`;
      });
    await run.journal?.write({ kind: 'host-finished', time: isoNow(), host: name, status: end.status, counts: countsOf(end), ...whyOf(end) }).catch(unrecorded);
  }
  // Read after the write: one that failed says so in the error.
  run.emit({ event: 'host-finished', runId: run.runId, time: isoNow(), host: name, status: end.status, ...countsOf(end), ...whyOf(end), durationMs: how.durationMs });
}

function whyOf(end: HostEnd): { error?: string; cause?: Cause } {
  return { ...(end.error ? { error: end.error } : {}), ...(end.cause ? { cause: end.cause } : {}) };
}
