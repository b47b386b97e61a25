/**
 * The journal: one NDJSON file per run under <state-dir>/runs/. Every entry is written and
 * fsynced before the change it announces, so a crash leaves enough to finish or undo the run.
 *
 * It is a format that is read back (history, show, undo, recover): each entry carries a format
 * version (`v`), and reading validates every entry against the schemas below. What a run's
 * entries mean together is derived in one place, replay.ts.
 */
import { stepType } from '../steps/registry.js';
import { mkdir, open, readdir, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { HostsmithError, InputError, JournalError } from '../errors.js';
import type { HostStatus, StepStatus } from './events.js';
import type { Masker } from './mask.js';

/** The format version Journal.write puts on every entry. Entries without one predate versions (read as 0). */
export const JOURNAL_VERSION = 1;

const text = z.string();
const count = z.number().int().nonnegative();

const HOST_STATUSES = ['ok', 'failed', 'rolled-back', 'rollback-incomplete', 'unreachable', 'stale', 'not-started', 'interrupted'] as const satisfies readonly HostStatus[];
const STEP_STATUSES = ['changed', 'unchanged', 'skipped', 'failed', 'planned'] as const satisfies readonly StepStatus[];
// Both lists must name every status events.ts knows: a status missing here would make valid journals unreadable.
const everyHostStatus: Exclude<HostStatus, (typeof HOST_STATUSES)[number]> extends never ? true : never = true;
const everyStepStatus: Exclude<StepStatus, (typeof STEP_STATUSES)[number]> extends never ? true : never = true;
void everyHostStatus;
void everyStepStatus;

/** What a run is: an apply; `undo` and `recover` runs are journaled the same way (SPEC §9). */
export const RUN_MODES = ['apply', 'undo', 'recover'] as const;
/** How a run ended: the worst host's status, or `recovered` for a run finished by `recover`. */
const RUN_END_STATUSES = [...HOST_STATUSES, 'recovered'] as const;

/**
 * How to reach a host again, as the run reached it: address, port, login, key file paths and the
 * known_hosts file — never a key, a password or vars. Unknown fields are dropped when parsed.
 */
export interface Reach {
  name: string;
  kind: 'local' | 'ssh';
  /** Address (or name) the connection was made to. */
  host: string;
  port: number;
  user: string;
  /** Paths of the private key files tried, never their contents. */
  identities: string[];
  knownHostsFile?: string;
  /** Host-level sudo (inventory or --sudo); each step's own is in its step-started entry. */
  sudo?: boolean;
  /** The ProxyJump host, reached the same way. */
  jump?: Reach;
}

export const reachSchema: z.ZodType<Reach, z.ZodTypeDef, unknown> = z.lazy(() =>
  z.object({
    name: text,
    kind: z.enum(['local', 'ssh']),
    host: text,
    port: z.number().int().min(0).max(65535),
    user: text,
    identities: z.array(text),
    knownHostsFile: text.optional(),
    sudo: z.boolean().optional(),
    jump: reachSchema.optional(),
  }),
);

/** The journaled reach of a target as the CLI describes it: only what `Reach` holds (no vars, nothing secret), or undefined. */
export function reachOf(describe: Record<string, unknown> | undefined): Reach | undefined {
  if (!describe) return undefined;
  const r = reachSchema.safeParse(describe);
  return r.success ? r.data : undefined;
}

/** The user a step's work runs as, when it is not the login (its type says: a `command` step's `user`). */
export function runsAs(type: string, params: unknown): string | undefined {
  try {
    return stepType(type)?.runsAs?.(params);
  } catch {
    return undefined;
  }
}

const countsSchema = z.object({ changed: count, unchanged: count, skipped: count, failed: count, rolledBack: count });

const runStarted = z.object({
  kind: z.literal('run-started'),
  runId: text,
  time: text,
  recipe: text,
  recipeFile: text,
  mode: z.enum(RUN_MODES),
  hosts: z.array(text),
  vars: z.record(z.unknown()),
  pid: z.number().int().positive(),
  controller: text,
  /** mode undo: the run it takes back. */
  undoes: text.optional(),
  /** Salted digests of each secret var's value(s), `<salt>:<digest>`, for undo to check a value given again. */
  secrets: z.record(z.object({ sha256: z.array(text) })).optional(),
  /**
   * The recipe's custom step types (`types:`): each module's absolute path, the sha256 of its source
   * and the types it gave. undo and recover import them again from here, and refuse a module that
   * is gone or changed: its rollback is the code that took the undo data.
   */
  types: z.array(z.object({ path: text, sha256: text, types: z.array(text) })).optional(),
  /** apply with fleet options (SPEC §12): the batches in order, the failure budget per batch, the rollback scope. */
  fleet: z
    .object({
      batches: z.array(z.array(text)),
      batch: text.optional(),
      maxFail: text.optional(),
      rollbackScope: z.enum(['host', 'batch', 'fleet']),
    })
    .optional(),
});
const hostStarted = z.object({
  kind: z.literal('host-started'),
  time: text,
  host: text,
  facts: z.unknown(),
  /** Where this run's backups are on the host (for a step without sudo; a sudo step's are root's, under /var/lib/hostsmith). */
  backupDir: text,
  target: reachSchema.optional(),
  /** The run lock this run took on the host. */
  lock: text.optional(),
});
const stepStarted = z.object({
  kind: z.literal('step-started'),
  time: text,
  host: text,
  step: text,
  type: text,
  handler: z.boolean().optional(),
  /** A handler run again after a rollback, so a service loads what was put back: nothing to undo. */
  afterRollback: z.boolean().optional(),
  params: z.unknown(),
  /** What rollback needs, journaled before the change; null: irreversible. */
  undo: z.unknown(),
  irreversible: z.boolean(),
  summary: text,
  /** sha256 of the pre-state the step saw. */
  pre: text,
  /** The step's effective sudo (recipe > step > host); every v1 entry has it. */
  sudo: z.boolean().optional(),
  /** The user the step's command runs as, when not the login. */
  user: text.optional(),
  /** Handlers the step notifies when it changes: they run again after its rollback (undo, recover). */
  notifies: z.array(text).optional(),
});
const stepFinished = z.object({
  kind: z.literal('step-finished'),
  time: text,
  host: text,
  step: text,
  type: text,
  status: z.enum(STEP_STATUSES),
  summary: text,
  changed: z.boolean(),
  durationMs: z.number().nonnegative(),
  /** sha256 of the state after apply (for drift checks on undo). */
  post: text.optional(),
  error: text.optional(),
  /** The exact undo data of what the step did, when its step-started held only where to find it (the package step's dpkg snapshot). */
  undo: z.unknown().optional(),
});
const rollbackStarted = z.object({ kind: z.literal('rollback-started'), time: text, host: text, step: text, type: text });
const rollbackFinished = z.object({
  kind: z.literal('rollback-finished'),
  time: text,
  host: text,
  step: text,
  type: text,
  status: z.enum(['rolled-back', 'rollback-failed']),
  error: text.optional(),
  /** What a rollback that changed nothing said instead (a reboot: nothing to roll back, and when the host was rebooted). */
  note: text.optional(),
});
/** `recover` took over the run (it appends to the run's own journal): who, so a second recover can tell. */
const recoverStarted = z.object({ kind: z.literal('recover-started'), time: text, pid: z.number().int().positive(), controller: text });
/** Why a host that did not fail itself was rolled back or not started (events.ts Cause). */
const causeSchema = z.object({ host: text.optional(), step: text.optional(), error: text });
const hostFinished = z.object({
  kind: z.literal('host-finished'),
  time: text,
  host: text,
  status: z.enum(HOST_STATUSES),
  counts: countsSchema,
  error: text.optional(),
  /** Rolled back (--rollback-scope) or not started (--max-fail) because of another host's failure: which. */
  cause: causeSchema.optional(),
});
const runFinished = z.object({ kind: z.literal('run-finished'), time: text, status: z.enum(RUN_END_STATUSES), exitCode: z.number().int() });

/**
 * Lockout protection (--confirm): `armed` is written before the watchdog exists on the host, so
 * recover knows to look for it; then `confirmed`, `disarmed` (the controller rolled back itself)
 * or `fired` (what the watchdog's own rollback did, read back from the host).
 */
const watchdogEntry = z.object({
  kind: z.literal('watchdog'),
  event: z.enum(['armed', 'confirmed', 'disarmed', 'fired']),
  time: text,
  host: text,
  dir: text,
  seconds: z.number().optional(),
  deadline: text.optional(),
  /** armed: the steps the watchdog rolls back, newest first. */
  steps: z.array(text).optional(),
  result: z.enum(['rolled-back', 'rollback-incomplete']).optional(),
  rolledBack: z.array(text).optional(),
  failed: z.array(text).optional(),
  log: text.optional(),
  error: text.optional(),
});

const entryBody = z.discriminatedUnion('kind', [runStarted, hostStarted, stepStarted, stepFinished, rollbackStarted, rollbackFinished, hostFinished, runFinished, recoverStarted, watchdogEntry]);

/** One journal entry as the engine writes it (Journal.write adds the format version). */
export type JournalEntry = z.output<typeof entryBody>;
export type Entry = JournalEntry;
/** One entry as read back: with its format version. */
export type ReadEntry = JournalEntry & { v: number };

/** Validates one parsed line: the format version first, then the entry of its kind. */
export const entrySchema: z.ZodType<ReadEntry, z.ZodTypeDef, unknown> = z
  .object({
    v: z
      .number()
      .int()
      .nonnegative()
      .max(JOURNAL_VERSION, { message: `written in a newer journal format than this hostsmith reads (${JOURNAL_VERSION}): use a newer hostsmith` })
      .default(0),
  })
  .passthrough()
  .transform((o, ctx) => {
    const { v, ...rest } = o;
    const body = entryBody.safeParse(rest);
    if (!body.success) {
      body.error.issues.forEach((i) => ctx.addIssue(i));
      return z.NEVER;
    }
    if (v >= 1 && body.data.kind === 'step-started' && body.data.sudo === undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['sudo'], message: 'a step-started entry of format 1 must say whether the step used sudo' });
      return z.NEVER;
    }
    return { v, ...body.data };
  });

export function runsDir(stateDir: string): string {
  return join(stateDir, 'runs');
}

/** An entry waiting for its turn on disk. */
interface Queued {
  line: string;
  done: () => void;
  failed: (e: unknown) => void;
}

export class Journal {
  private chain: Promise<void> = Promise.resolve();
  private torn = false;
  private readonly queue: Queued[] = [];
  private flushing = false;

  private constructor(
    private readonly fh: FileHandle,
    readonly file: string,
    private readonly masker: Masker,
  ) {}

  static async create(stateDir: string, runId: string, masker: Masker): Promise<Journal> {
    const dir = runsDir(stateDir);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new HostsmithError(`cannot create the journal folder ${dir}: ${(e as Error).message}; pass --state-dir <dir>`, 2);
    }
    const file = join(dir, `${runId}.ndjson`);
    const fh = await open(file, 'wx', 0o600);
    return new Journal(fh, file, masker);
  }

  /**
   * Appends one entry and waits until it is on disk; a failure is a JournalError. Entries that
   * arrive while a sync is under way (other hosts of the run) go to disk together, with one
   * fdatasync (group commit): each still resolves only once it is on disk, so "journaled before
   * the change" holds, and a run of many hosts does not wait out one sync per entry in a row.
   */
  write(entry: JournalEntry): Promise<void> {
    const line = JSON.stringify(this.masker.value({ v: JOURNAL_VERSION, ...entry })) + '\n';
    const next = new Promise<void>((done, failed) => this.queue.push({ line, done, failed }));
    if (!this.flushing) {
      this.flushing = true;
      this.chain = this.flush();
    }
    return next;
  }

  private async flush(): Promise<void> {
    while (this.queue.length) {
      const group = this.queue.splice(0, faultRoom(this.queue.length));
      try {
        // After a failed write a torn line may end the file: start on a fresh line so it stays alone.
        const buf = Buffer.from((this.torn ? '\n' : '') + group.map((q) => q.line).join(''), 'utf8');
        // One write(2) may take only part of it (a disk nearly full): go on until all is there.
        for (let at = 0; at < buf.length; ) {
          const { bytesWritten } = await this.fh.write(buf, at, buf.length - at);
          if (bytesWritten <= 0) throw new Error('the disk took none of the entry');
          at += bytesWritten;
        }
        await this.fh.datasync();
        this.torn = false;
      } catch (e) {
        this.torn = true;
        const err = new JournalError(this.file, e);
        for (const q of group) q.failed(err);
        continue;
      }
      for (const q of group) {
        faultAfterWrite();
        q.done();
      }
    }
    this.flushing = false;
  }

  /**
   * Opens an existing run's journal to write more entries (`recover` finishing a run). A last line
   * cut short by a crash stays alone: the next entry starts on a fresh line.
   */
  static async append(stateDir: string, runId: string, masker: Masker): Promise<Journal> {
    const file = journalFile(stateDir, runId);
    const fh = await open(file, 'a+');
    const j = new Journal(fh, file, masker);
    const { size } = await fh.stat();
    if (size > 0) {
      const last = Buffer.alloc(1);
      await fh.read(last, 0, 1, size - 1);
      j.torn = last[0] !== 0x0a;
    }
    return j;
  }

  async close(): Promise<void> {
    await this.chain;
    await this.fh.close();
  }
}

/**
 * Fault injection for crash tests: HOSTSMITH_FAULT_KILL_AT_WRITE=n makes the process kill itself
 * with SIGKILL right after its n-th journal entry is on disk (counted over the whole process), as a
 * crash or power cut there would. Off unless the variable is set.
 */
let writesSoFar = 0;
function faultAfterWrite(): void {
  const at = process.env.HOSTSMITH_FAULT_KILL_AT_WRITE;
  if (!at) return;
  writesSoFar++;
  if (writesSoFar === Number(at)) process.kill(process.pid, 'SIGKILL');
}

/** How many of `waiting` entries may share one sync: all, unless a crash test's kill point comes first. */
function faultRoom(waiting: number): number {
  const at = Number(process.env.HOSTSMITH_FAULT_KILL_AT_WRITE);
  if (!at || writesSoFar >= at) return waiting;
  return Math.max(1, Math.min(waiting, at - writesSoFar));
}

/** A line of a journal that is not a valid entry. `torn`: the last line, cut short by a crash. */
export interface JournalProblem {
  file: string;
  /** 1-based line number in the file. */
  line: number;
  kind: 'torn' | 'invalid';
  message: string;
}

export function formatProblem(p: JournalProblem): string {
  return `${p.file}:${p.line}: ${p.message}`;
}

/** A run's journal as read back: its valid entries in order, and every line that is not one. */
export interface RunJournal {
  runId: string;
  file: string;
  entries: ReadEntry[];
  problems: JournalProblem[];
}

/**
 * Reads journal text. Each line is one entry, validated; a last line cut short (no newline at
 * its end, not JSON: the controller died while writing it) is skipped with a `torn` note. Any
 * other line that is not a valid entry is an `invalid` problem naming its line. Pure.
 */
export function parseJournal(text: string, file: string): { entries: ReadEntry[]; problems: JournalProblem[] } {
  const entries: ReadEntry[] = [];
  const problems: JournalProblem[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, i) => {
    if (!raw.trim()) return;
    const line = i + 1;
    const last = i === lines.length - 1; // only when the text does not end with a newline
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      problems.push(
        last
          ? { file, line, kind: 'torn', message: 'the last entry was cut short (the controller stopped while writing it): skipped' }
          : {
              file,
              line,
              kind: 'invalid',
              message: `not a journal entry (not JSON${raw.length > 80 ? '' : `: ${JSON.stringify(raw)}`}); a write that failed part-way (a full disk) leaves such a line`,
            },
      );
      return;
    }
    const r = entrySchema.safeParse(parsed);
    if (r.success) entries.push(r.data);
    else {
      const kind = parsed && typeof parsed === 'object' && typeof (parsed as { kind?: unknown }).kind === 'string' ? `a ${(parsed as { kind: string }).kind} entry` : 'an entry';
      const why = r.error.issues.map((x) => `${x.path.length ? `${x.path.join('.')}: ` : ''}${x.message}`).join('; ');
      problems.push({ file, line, kind: 'invalid', message: `invalid journal entry (${kind}): ${why}` });
    }
  });
  return { entries, problems };
}

const RUN_ID = /^[A-Za-z0-9T_.-]+$/;

export function journalFile(stateDir: string, runId: string): string {
  return join(runsDir(stateDir), `${runId}.ndjson`);
}

/** One run's journal, validated; a run id that names no journal file is an InputError (exit 2). */
export async function readJournal(stateDir: string, runId: string): Promise<RunJournal> {
  if (!RUN_ID.test(runId)) throw new InputError(`"${runId}" is not a run id (see hostsmith history)`);
  const file = journalFile(stateDir, runId);
  let content: string;
  try {
    content = await readFile(file, 'utf8');
  } catch {
    throw new InputError(`no run "${runId}" in ${runsDir(stateDir)} (see hostsmith history)`);
  }
  return { runId, file, ...parseJournal(content, file) };
}

/** One run's valid entries (problems left out: readJournal reports them). */
export async function readRun(stateDir: string, runId: string): Promise<ReadEntry[]> {
  return (await readJournal(stateDir, runId)).entries;
}

export async function listRunIds(stateDir: string): Promise<string[]> {
  try {
    const files = await readdir(runsDir(stateDir));
    return files
      .filter((f) => f.endsWith('.ndjson'))
      .map((f) => f.slice(0, -'.ndjson'.length))
      .filter((id) => RUN_ID.test(id))
      .sort();
  } catch {
    return [];
  }
}
