/**
 * What a schedule keeps on the controller, under the state dir:
 *   schedules/<name>.yml   the settings a run needs (mode 0600: secret vars live here and nowhere else)
 *   schedules/<name>.lock  held while a run goes (O_EXCL file naming its pid; a dead holder is stale)
 *   logs/<name>/<run-id>.log            one per run: the human text, as `apply` prints it
 *   logs/<name>/<run-id>.events.ndjson  the same run's JSON events, one per line
 * The newest 30 runs keep both files. Human text and events live apart so that a person (or a
 * --on-failure mail) reads plain text, and a program reads JSON without picking lines apart.
 */
import { closeSync, constants, existsSync, linkSync, openSync, readFileSync, readdirSync, unlinkSync, writeSync, mkdirSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import { HostsmithError, InputError } from '../errors.js';

export const NAME_RULE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export const KEEP_LOGS = 30;

/** Why `name` cannot name a schedule, or undefined. */
export function nameProblem(name: string): string | undefined {
  if (NAME_RULE.test(name)) return undefined;
  return `schedule name ${JSON.stringify(name)} is not allowed: use lowercase letters, digits, "-" and "_", starting with a letter or digit, at most 64 characters (give one with --name)`;
}

export function schedulesDir(stateDir: string): string {
  return join(stateDir, 'schedules');
}
export function settingsFile(stateDir: string, name: string): string {
  return join(schedulesDir(stateDir), `${name}.yml`);
}
export function lockFile(stateDir: string, name: string): string {
  return join(schedulesDir(stateDir), `${name}.lock`);
}
export function logsDir(stateDir: string, name: string): string {
  return join(stateDir, 'logs', name);
}

const settingsSchema = z
  .object({
    version: z.literal(1),
    name: z.string().regex(NAME_RULE),
    recipe: z.string().min(1),
    recipeName: z.string(),
    cron: z.string().min(1),
    onFailure: z.string().optional(),
    // Optional so that files written before these fields existed load as they always did.
    planOnly: z.boolean().optional(),
    created: z.string(),
    cwd: z.string().min(1),
    options: z
      .object({
        hosts: z.string().optional(),
        inventory: z.string().optional(),
        identity: z.string().optional(),
        knownHosts: z.string(),
        acceptNewHostKeys: z.boolean().optional(),
        sudo: z.boolean().optional(),
        concurrency: z.string().optional(),
        limit: z.string().optional(),
        // Fleet options as given at add (a percentage is worked out against the hosts of each run).
        batch: z.string().optional(),
        maxFail: z.string().optional(),
        rollbackScope: z.string().optional(),
        confirm: z.string().optional(),
      })
      .strict(),
    vars: z.object({ cli: z.record(z.string()), file: z.record(z.unknown()) }).strict(),
  })
  .strict();

export type Settings = z.infer<typeof settingsSchema>;

const HEADER =
  '# A hostsmith schedule, written by `hostsmith schedule add` and read by `hostsmith schedule run`.\n' +
  '# It may hold secret vars: keep it private (mode 0600). Remove the schedule with `hostsmith schedule remove <name>`.\n';

/**
 * Writes the settings as a new file, mode 0600 from the start (never readable by others, not even
 * for a moment), and never over an existing one: a name that is taken is an error.
 */
export function createSettings(stateDir: string, s: Settings): string {
  const dir = schedulesDir(stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = settingsFile(stateDir, s.name);
  const tmp = join(dir, `.${s.name}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    writeSync(fd, HEADER + stringify(s, { lineWidth: 0 }));
    closeSync(fd);
    try {
      linkSync(tmp, file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST')
        throw new InputError(`a schedule named ${s.name} already exists (${file}): remove it first with \`hostsmith schedule remove ${s.name}\`, or pick another --name; nothing was changed`);
      throw e;
    }
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
  }
  return file;
}

export function readSettings(stateDir: string, name: string): Settings {
  const file = settingsFile(stateDir, name);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new InputError(`there is no schedule named ${name} in ${schedulesDir(stateDir)} (see \`hostsmith schedule list\`; a schedule made with another --state-dir is run with that --state-dir)`);
    }
    throw new HostsmithError(`cannot read the schedule ${name} (${file}): ${(e as Error).message}`, 2);
  }
  const r = settingsSchema.safeParse(parse(text));
  if (!r.success) {
    const why = r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
    throw new InputError(`the schedule file ${file} is not as \`schedule add\` wrote it (${why}); remove the schedule with \`hostsmith schedule remove ${name}\` and add it again`);
  }
  return r.data;
}

/** Names of the stored schedules, sorted. */
export function storedNames(stateDir: string): string[] {
  try {
    return readdirSync(schedulesDir(stateDir))
      .filter((f) => f.endsWith('.yml') && !f.startsWith('.'))
      .map((f) => f.slice(0, -4))
      .filter((n) => NAME_RULE.test(n))
      .sort();
  } catch {
    return [];
  }
}

// ---- the per-schedule lock ----

export interface LockOwner {
  pid: number;
  /** The process's start time (/proc/<pid>/stat field 22), so a reused pid is not taken for the holder. */
  start?: string;
  host: string;
  runId: string;
  since: string;
}

function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may hold spaces and parentheses: count from the last ")".
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote `o` still runs (on this machine). */
export function ownerAlive(o: LockOwner): boolean {
  if (o.host !== hostname()) return true; // another machine's run: cannot tell, so it holds
  try {
    process.kill(o.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = startTimeOf(o.pid);
  return o.start === undefined || now === undefined || now === o.start;
}

function readOwner(file: string): { text: string; owner?: LockOwner } | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const o = JSON.parse(text) as LockOwner;
    return typeof o.pid === 'number' ? { text, owner: o } : { text };
  } catch {
    return { text };
  }
}

export type LockResult = { ok: true; release: () => void; cleared?: LockOwner | undefined } | { ok: false; holder: LockOwner };

function tryCreate(file: string, body: string): boolean {
  try {
    const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    writeSync(fd, body);
    closeSync(fd);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

/**
 * Takes the schedule's lock: a file made with O_EXCL that names this process. A lock whose holder
 * is gone (killed, machine rebooted) is cleared — under a second short-lived lock, so that two
 * runs clearing the same stale lock cannot both win.
 */
export function acquireScheduleLock(stateDir: string, name: string, runId: string): LockResult {
  mkdirSync(schedulesDir(stateDir), { recursive: true, mode: 0o700 });
  const file = lockFile(stateDir, name);
  const me: LockOwner = { pid: process.pid, start: startTimeOf(process.pid), host: hostname(), runId, since: new Date().toISOString() };
  const body = JSON.stringify(me) + '\n';
  let cleared: LockOwner | undefined;
  for (let attempt = 0; attempt < 5; attempt++) {
    if (tryCreate(file, body)) {
      return {
        ok: true,
        cleared,
        release: () => {
          // Only our own lock: never one a later run took after ours was (wrongly) cleared.
          if (readOwner(file)?.text === body) unlinkSync(file);
        },
      };
    }
    const cur = readOwner(file);
    if (!cur) continue; // released between our two looks
    if (cur.owner && ownerAlive(cur.owner)) return { ok: false, holder: cur.owner };
    // Stale (or unreadable and old): clear it under the breaker lock, after looking again.
    const breaker = `${file}.clearing`;
    if (!tryCreate(breaker, body)) {
      try {
        if (Date.now() - statSync(breaker).mtimeMs > 60_000) unlinkSync(breaker);
      } catch {
        /* gone already */
      }
      continue;
    }
    try {
      const again = readOwner(file);
      if (again && again.text === cur.text) {
        if (!cur.owner) {
          const age = Date.now() - statSync(file).mtimeMs;
          if (age < 10_000) return { ok: false, holder: { pid: 0, host: hostname(), runId: '(being written)', since: new Date().toISOString() } };
        }
        unlinkSync(file);
        cleared = cur.owner;
      }
    } finally {
      unlinkSync(breaker);
    }
  }
  throw new HostsmithError(`could not take the lock ${file} for schedule ${name}: it changed hands repeatedly; try again`, 1);
}

export function lockHolder(stateDir: string, name: string): LockOwner | undefined {
  const cur = readOwner(lockFile(stateDir, name));
  return cur?.owner && ownerAlive(cur.owner) ? cur.owner : undefined;
}

// ---- logs ----

export const LOG_SUFFIX = '.log';
export const EVENTS_SUFFIX = '.events.ndjson';

export function logFile(dir: string, runId: string): string {
  return join(dir, `${runId}${LOG_SUFFIX}`);
}
export function eventsFile(dir: string, runId: string): string {
  return join(dir, `${runId}${EVENTS_SUFFIX}`);
}

/** The run id a log or events file belongs to, or undefined for any other file. */
function runIdOf(file: string): string | undefined {
  if (file.startsWith('.')) return undefined;
  if (file.endsWith(EVENTS_SUFFIX)) return file.slice(0, -EVENTS_SUFFIX.length);
  if (file.endsWith(LOG_SUFFIX)) return file.slice(0, -LOG_SUFFIX.length);
  return undefined;
}

/** Run ids that have a log or an events file in `dir`, newest first (run ids begin with their start time). */
export function runIds(dir: string): string[] {
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return [];
  }
  const ids = new Set<string>();
  for (const f of files) {
    const id = runIdOf(f);
    if (id) ids.add(id);
  }
  return [...ids].sort().reverse();
}

/**
 * Deletes all but the newest `keep` runs, and both files of each run it deletes: a log without its
 * events (or the reverse) would be half a record. Returns the run ids it removed, oldest first.
 */
export function rotateLogs(dir: string, keep = KEEP_LOGS): string[] {
  const gone = runIds(dir).slice(keep).reverse();
  for (const id of gone) {
    for (const f of [logFile(dir, id), eventsFile(dir, id)]) {
      try {
        unlinkSync(f);
      } catch {
        /* never written, or already gone */
      }
    }
  }
  return gone;
}

/** The closing JSON line of a run's events (`schedule-finished`, or `schedule-skipped`). */
export interface RunOutcome {
  event: 'schedule-finished' | 'schedule-skipped';
  schedule: string;
  runId: string;
  time: string;
  started: string;
  status: string;
  exitCode: number;
  /** Plan-only schedules: the run made a plan and changed nothing. */
  planOnly?: boolean;
  log: string;
  events?: string;
}

/** Log files, newest first. */
export function logFiles(dir: string): string[] {
  return runIds(dir)
    .map((id) => logFile(dir, id))
    .filter((f) => existsSync(f));
}

function outcomeIn(file: string, event: RunOutcome['event']): RunOutcome | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i]!;
    if (!l.startsWith('{') || !l.includes(`"${event}"`)) continue;
    try {
      const o = JSON.parse(l) as RunOutcome;
      if (o.event === event) return o;
    } catch {
      /* not ours */
    }
  }
  return undefined;
}

/**
 * How the run of `runId` ended, from its events file; runs logged before events had a file of their
 * own kept them inside the .log, so that is read when there is no events file.
 */
export function outcomeOf(dir: string, runId: string, event: RunOutcome['event'] = 'schedule-finished'): RunOutcome | undefined {
  const events = eventsFile(dir, runId);
  return existsSync(events) ? outcomeIn(events, event) : outcomeIn(logFile(dir, runId), event);
}

/** The newest run that finished (skipped runs are not runs), from the kept logs. */
export function lastRun(stateDir: string, name: string): RunOutcome | undefined {
  const dir = logsDir(stateDir, name);
  for (const id of runIds(dir)) {
    const o = outcomeOf(dir, id);
    if (o) return o;
  }
  return undefined;
}
