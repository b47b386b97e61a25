import { createHash } from 'node:crypto';
import type { z } from 'zod';
import { StepError } from '../errors.js';
import type { ExecOptions, ExecResult, Transport, WriteOptions } from '../transport/transport.js';
import type { Facts } from './facts.js';
import type { Footprint } from './footprint.js';
import type { UndoData } from './undo-text.js';

/** What the engine hands a step: one host, one step, everything injected. */
export interface StepContext {
  host: string;
  transport: Transport;
  facts: Facts;
  runId: string;
  step: string;
  /** Folder on the host for this run's backups (root-only): /var/lib/hostsmith/backups/<run-id>. */
  backupDir: string;
  /** Effective sudo for this step (recipe > step > host). */
  sudo: boolean;
  /**
   * The run only plans (a dry run, `plan`): reads leave no trace at all. false in an apply, whose
   * reads may keep the caches the host's own tools keep (apt's binary cache). Absent: plan only.
   */
  planOnly?: boolean;
  /**
   * A plain apply: its plan is neither shown to anyone nor held to a saved one. A step may then
   * leave out of its plan what only a person would read (apt's dry run of a transaction), as
   * long as its apply works out the exact undo data from what it did (ApplyResult.undo).
   */
  planUnseen?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Exec with this step's sudo, timeout and abort signal applied (override per call). */
  exec(cmd: string, o?: ExecOptions): Promise<ExecResult>;
  /**
   * A change read back, in its own exec, what `cmd` (run through `exec` with no options) prints
   * now: the run's next read of it is answered from that (one-exec.ts does this for every
   * read-back). Absent where nothing is cached (undo, recover, a plan).
   */
  seed?(cmd: string, stdout: Buffer): void;
  readFile(path: string): Promise<Buffer | null>;
  writeFile(path: string, data: Buffer, o?: WriteOptions): Promise<void>;
  /** Reads a local source (template/file `src`), resolved from the recipe's folder. */
  readSource(src: string, kind: 'templates' | 'files'): Promise<{ path: string; content: Buffer }>;
  /** Renders a Handlebars text with the step's scope (vars, facts, steps) plus `extra`. */
  render(text: string, extra?: Record<string, unknown>, where?: string): string;
  /**
   * The run's one connection to this host, for a step that takes the host away on purpose (a
   * reboot); a plan only reads whether it is there. Absent where the link cannot be made again
   * (`local`) and where steps are acted on from the journal (undo and recover never take a host away).
   */
  connection?: HostConnection;
}

/** What a step may ask of the connection the run owns to its host. */
export interface HostConnection {
  /**
   * Makes the connection again in place, for this step and every later one: a new TCP connection
   * and login, with the same host key checking and credentials, tried with backoff until
   * `budgetMs` has passed (a ConnectError then).
   */
  reconnect(budgetMs: number): Promise<void>;
  /**
   * The host has booted again: what the run keeps in its /run (the run's host lock) is made
   * again, and reads batched before the reboot are dropped.
   */
  rebooted(): Promise<void>;
}

/** What a rollback that changes nothing says instead (a reboot: nothing to roll back, and when the host was rebooted). */
export interface RollbackNote {
  note: string;
}

/** Facts about the run a plan may depend on, kept apart so plan() stays pure. */
export interface PlanEnv {
  runId: string;
  step: string;
  /** Folder on the host for backups of this run: /var/lib/hostsmith/backups/<run-id>. */
  backupDir: string;
  /**
   * The step's params hold a secret value. What the step read from the host may then hold an
   * earlier value of that secret, which no mask knows: its summary must not quote it.
   */
  sensitive?: boolean;
}

/** Put in a summary for host content that is not shown because the step holds a secret. */
export const HIDDEN_OLD = '(old value hidden: the step holds a secret)';

export interface Plan<Undo> {
  /** Would apply change the host? false = already in the wanted state. */
  changed: boolean;
  /** One line: what would change, e.g. "create /etc/motd (12 bytes, 0644 root:root)". */
  summary: string;
  /** Unified diff, when the step has content to compare. */
  diff?: string;
  /** What rollback needs; null when there is no way back (the plan shows it irreversible). */
  undo: Undo | null;
  /** What kind of change, as plans show it: + create, ~ change (the default), - remove. */
  action?: PlanAction;
  /**
   * With `changed: false`: not done because a condition of the step's own says so (a reboot only
   * when the host asks for one), so the step is reported `skipped` rather than `unchanged`.
   */
  skipped?: boolean;
}

export type PlanAction = 'create' | 'change' | 'remove';

export interface ApplyResult {
  stdout?: string;
  stderr?: string;
  /** The state right after the change, read in the same exec (the journal's post-state): no check of its own. */
  state?: unknown;
  /**
   * The exact undo data of what the apply did, when its plan's undo data only said where to find
   * it (the package step's dpkg snapshot): journaled with the result, and what rollback uses.
   */
  undo?: unknown;
  /** What the apply did, when its plan could only name what it asked for (with `undo`). */
  summary?: string;
  diff?: string;
}

export interface StepType<P = any, S = any, U = any> {
  type: string;
  schema: z.ZodType<P, z.ZodTypeDef, unknown>;
  /**
   * Optional: resolves params that need local work before the host is read, e.g. a template
   * step renders its source file here. What it returns is what the journal records.
   */
  prepare?(ctx: StepContext, p: P): Promise<P>;
  /** Reads only. */
  check(ctx: StepContext, p: P): Promise<S>;
  /**
   * apply holds the host to the state it was planned from, in the same exec as the change (and
   * writes nothing when it moved): the engine then need not read the step again at its turn.
   */
  guarded?: boolean | ((p: P) => boolean);
  /** Pure: from params and current state to what would change. */
  plan(p: P, s: S, env: PlanEnv): Plan<U>;
  /**
   * Makes it so, from the plan and the state it was made from (the engine checked that state at
   * this step's turn and compared it with any plan being followed). Throws StepError on failure.
   */
  apply(ctx: StepContext, p: P, plan: Plan<U>, state: S): Promise<ApplyResult>;
  /**
   * Puts back what was there, from the undo data alone (it may come from the journal). A type
   * whose change cannot be put back but needs none (a reboot) resolves to a note saying so, which
   * the journal and the output show in place of "rolled back".
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: most rollbacks resolve to nothing, a reboot's to a note
  rollback(ctx: StepContext, p: P, undo: U): Promise<void | RollbackNote>;
  /**
   * Its rollback changes nothing on the host, whatever the host is like now (a reboot): `undo`
   * does not hold its state against what the run left (a later reboot is no drift).
   */
  nothingToRollBack?: boolean;
  /**
   * What identifies the state for staleness: a stable projection of check()'s result, with no
   * clocks, ages or summary text. The engine fingerprints it (`pre`) and compares it wherever
   * planning and applying are apart. Default: the whole state.
   */
  stateKey?(p: P, s: S): unknown;
  /**
   * What the step reads (its check) and may write (its apply), from its rendered params alone: the
   * engine decides every question of overlap from this and never from the type's name — which later
   * steps a change makes known-after-apply in a plan, which batched reads a change drops, and which
   * older steps of a run a newer one may legitimately have moved (undo, recover).
   * Items are `kind:name` (see footprint.ts); an honest footprint is wide rather than short.
   */
  footprint(p: P): Footprint;
  /**
   * What a change actually wrote beyond its footprint, read from the undo data its apply produced
   * (the folders a file step made on the way): dropped from the batched reads too.
   */
  wrote?(p: P, undo: U | null): string[];
  /**
   * Whether what the step acts on is still there: a handler run again after a rollback or an undo
   * is not needed (and not run) when the rollback removed its target — the service's package, the
   * folder it writes into. Resolves to why it is gone, or null when it is there. Reads only.
   */
  gone?(ctx: StepContext, p: P): Promise<string | null>;
  /** One line of what its rollback would do, from the undo data as journaled (`show`, `undo`, `recover`). */
  undoSummary?(undo: UndoData): string;
  /** Why the step cannot be taken back when its plan's undo is null: "a command without `rollback`". */
  irreversibleWhy?: string;
  /**
   * Does journaled undo data belong to these params (the same path, user, service)? undo and
   * recover act from the journal alone: data naming another path than the step's own is a corrupt
   * or tampered journal, refused rather than acted on. Undefined: it belongs; else why not.
   */
  undoMismatch?(p: P, undo: UndoData): string | undefined;
  /** The user its work runs as, when not the login (journaled with the step). */
  runsAs?(p: P): string | undefined;
  /**
   * Its own checks of the raw params, before any host is contacted (a cron schedule, a template's
   * source and names): problems at paths under the step's params. Templated strings are left alone.
   */
  staticCheck?(raw: UndoData, env: StaticEnv): Promise<StaticProblem[]>;
  /**
   * The rollback as a POSIX sh script that runs on the host as root, with no controller: what the
   * lockout watchdog (`--confirm`) runs when the controller cannot confirm. It must leave the host
   * as rollback() does, from the same undo data; exit non-zero when it could not.
   */
  hostRollback?(p: P, undo: U, env: HostEnv): string;
  /** The host script does what it can alone; the controller's rollback (safe to run again) finishes it once it is back. */
  hostRollbackPartial?: boolean;
  /** A handler's apply as a POSIX sh script (root, no controller): the watchdog runs it again after its rollback. */
  hostRun?(p: P, env: HostEnv): string;
}

/** What a host-side script knows of its step: no transport, no reads from the controller. */
export interface HostEnv {
  host: string;
  runId: string;
  step: string;
  /** The run's backup folder on the host for this step's sudo setting. */
  backupDir: string;
  init: 'systemd' | 'sysvinit';
}

export type { Footprint } from './footprint.js';
export type { UndoData } from './undo-text.js';

/** A problem a static check found, at a path under the step's params (`['src']`). */
export interface StaticProblem {
  path: Array<string | number>;
  message: string;
}

/** What a static check may ask the loader: sources beside the recipe, and template files checked. */
export interface StaticEnv {
  /** The local file `src` names (of kind templates or files), or undefined with where it looked. */
  findSource(src: string, kind: 'templates' | 'files'): Promise<{ file: string } | { looked: string[]; why?: string }>;
  /** Checks a template file's syntax and names, reporting at the step's `path`; `local`: names it may use beyond the recipe's. */
  checkTemplate(file: string, path: Array<string | number>, local: string[]): Promise<void>;
}

/** sha256 of a state value, stable across key order; Buffers are hashed by content. */
export function fingerprint(value: unknown): string {
  const norm = (v: unknown): unknown => {
    if (Buffer.isBuffer(v)) return { sha256: createHash('sha256').update(v).digest('hex') };
    if (Array.isArray(v)) return v.map(norm);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) o[k] = norm((v as Record<string, unknown>)[k]);
      return o;
    }
    return v;
  };
  return createHash('sha256')
    .update(JSON.stringify(norm(value) ?? null))
    .digest('hex');
}

/** The fingerprint of a step's state as staleness compares it: its type's stateKey, else the whole state. */
export function stateFingerprint(type: Pick<StepType, 'stateKey'>, params: unknown, state: unknown): string {
  return fingerprint(type.stateKey ? type.stateKey(params, state) : state);
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The last lines a host printed: enough to see why, short enough for one message. */
export function tail(s: string, n = 10): string {
  return s.trim().split('\n').slice(-n).join('\n');
}

/**
 * Runs a script for a step; a non-zero exit becomes a StepError that says what we were doing
 * and what the host said (the tail of stderr, else of stdout). Returns stdout.
 */
export async function runOk(ctx: StepContext, script: string, what: string, o?: ExecOptions): Promise<string> {
  const r = await ctx.exec(script, o);
  if (r.code !== 0) {
    const said = tail(r.stderr) || tail(r.stdout, 5);
    throw new StepError(`${what} failed (exit ${r.code})${said ? `: ${said}` : ''}`, { code: r.code, stderr: r.stderr });
  }
  return r.stdout;
}

/** Does `type`'s apply hold the host to its planned state for these params (StepType.guarded)? */
export function isGuarded<P>(type: Pick<StepType<P>, 'guarded'>, p: P): boolean {
  return typeof type.guarded === 'function' ? type.guarded(p) : type.guarded === true;
}

/** What a change by a step of `type` may have written: its footprint's writes and what it says it wrote. */
export function changeWrites<P, U>(type: Pick<StepType<P, unknown, U>, 'footprint' | 'wrote'>, params: P, undo: U | null): string[] {
  return [...type.footprint(params).writes, ...(type.wrote?.(params, undo) ?? [])];
}

/** Why journaled undo data does not belong to its step's params, or undefined (its type's undoMismatch). */
export function undoMismatch(type: Pick<StepType, 'undoMismatch'>, params: unknown, undo: unknown): string | undefined {
  if (undo === null || undo === undefined || !type.undoMismatch) return undefined;
  if (typeof undo !== 'object' || Array.isArray(undo)) return 'its undo data is not an object';
  try {
    return type.undoMismatch(params, undo as UndoData);
  } catch (e) {
    return `its undo data cannot be read (${(e as Error).message})`;
  }
}

/** A backup the journal names must be one of hostsmith's backups, kept for this very path. */
export function backupMismatch(backup: unknown, path?: string): string | undefined {
  if (backup === undefined) return undefined;
  if (typeof backup !== 'string' || !backup.startsWith('/') || backup.split('/').includes('..') || !/\/(backups|hostsmith)\//.test(backup))
    return `its backup ${JSON.stringify(backup)} is not in a hostsmith backup folder`;
  if (path !== undefined && !backup.endsWith(path)) return `its backup ${backup} is not the backup of ${path}`;
  return undefined;
}
