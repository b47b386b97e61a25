/**
 * Holding the host to what a step was planned from, in the exec that changes it.
 *
 * A step is read (in a batch, or on its own) and planned; the change comes later. Instead of a
 * read of its own at its turn, the exec that changes the host first runs the step's check script
 * again and compares a digest of what it prints with what the plan was made from: if they differ
 * (another run, a person changed it meanwhile), it exits MOVED before anything else, and nothing
 * is written for the step (SPEC §8: a step whose state moves between its check and its write
 * fails rather than making a change nobody reviewed).
 */
import { createHash, randomBytes } from 'node:crypto';
import { StepError } from '../errors.js';
import type { ExecOptions, ExecResult } from '../transport/transport.js';

/** Whatever runs a script on the host: a step's context, a transport. */
export interface Execs {
  exec(cmd: string, o?: ExecOptions): Promise<ExecResult>;
  /** Told what the read printed, as its own exec would have (StepContext.seed). */
  seed?(cmd: string, stdout: Buffer): void;
}

/** Exit code of an exec whose guard found the state moved; its stderr holds MOVED_LINE. */
const MOVED = 75;
const MOVED_LINE = 'hostsmith-moved';
/** Shell: what a guard does when the state moved. */
const MOVED_EXIT = `{ echo ${MOVED_LINE} >&2; exit ${MOVED}; }`;

/** The check's answer, as the host printed it, for each state read from a host. */
const answers = new WeakMap<object, Buffer>();

/** Keeps `raw` (what the check script printed) as the answer `state` was parsed from. */
export function remember<S extends object>(state: S, raw: Buffer): S {
  answers.set(state, raw);
  return state;
}

/** What the check printed for `state`; undefined for a state not read from a host (tests, the journal). */
export function answerOf(state: unknown): Buffer | undefined {
  return state && typeof state === 'object' ? answers.get(state) : undefined;
}

/** Shell: exits MOVED, before anything else, unless `check` prints exactly `raw` now. */
export function guardScript(check: string, raw: Buffer): string {
  const want = createHash('sha256').update(raw).digest('hex');
  return `g=$( ( ${check}\n) | sha256sum ) && [ "\${g%% *}" = ${want} ] || ${MOVED_EXIT}`;
}

/** Did this exec stop at its guard (nothing done)? */
function stoppedByGuard(r: Pick<ExecResult, 'code' | 'stderr'>): boolean {
  return r.code === MOVED && new RegExp(`^${MOVED_LINE}$`, 'm').test(r.stderr);
}

/** A step stopped by its guard: nothing was written (so there is nothing of it to undo). */
export class MovedError extends StepError {}

/** What a step says when its guard stopped it. */
export function movedError(what: string): MovedError {
  return new MovedError(`not applied: its state moved since the plan was made (${what}); nothing was written for this step — make a new plan, or run again`);
}

/**
 * A context whose first exec is guarded by `check` against the answer `state` was read from (no
 * guard when there is none): the step's own execs, unchanged, with no read of its own before them.
 */
export function guardFirst<C extends Execs>(ctx: C, check: string, state: unknown, what: string): C {
  const raw = answerOf(state);
  if (!raw) return ctx;
  let armed = true;
  return {
    ...ctx,
    exec: async (cmd: string, o?: ExecOptions) => {
      if (!armed) return ctx.exec(cmd, o);
      armed = false;
      const r = await ctx.exec(`${guardScript(check, raw)}\n${cmd}`, o);
      if (stoppedByGuard(r)) throw movedError(what);
      return r;
    },
  };
}

/** One part of a one-exec apply: a name (for the failure), its script, and where its stdout goes (default: stderr). */
export interface Stage {
  name: string;
  script: string;
  /** '' keeps the stage's stdout in the exec's (a command whose output the step returns). */
  out?: string;
}

/**
 * Shell: the guard (if any), then each stage in its own subshell (its stdout to stderr), stopping
 * at the first that fails, then `read` (its stdout is the exec's: the state the change left).
 * A failed stage says `hostsmith-failed: <name> <exit>` on stderr (failedStage reads it).
 */
function oneExecScript(o: { guard?: string; stages: Stage[]; read?: string }, mark: string): string {
  // Not `( … ) || …`: inside an AND-OR list the shell ignores a stage's own `set -e`.
  const run = (s: Stage, out: string) => `( ${s.script}\n) ${out}\nrc=$?; [ $rc -eq 0 ] || { echo "hostsmith-failed: ${s.name} $rc" >&2; exit 1; }`;
  // A stage that keeps its stdout is cut from the read's by a line no command can print.
  const cut = o.read && o.stages.some((s) => s.out === '') ? [`printf '\\n%s\\n' ${mark}`] : [];
  return [...(o.guard ? [o.guard] : []), ...o.stages.map((s) => run(s, s.out ?? '>&2')), ...cut, ...(o.read ? [run({ name: 'read', script: `unset g rc\n${o.read}` }, '')] : [])].join('\n');
}

/**
 * Runs a one-exec apply (oneExecScript). Throws movedError(`moved`) when the guard stopped it.
 * `failed` names the stage that failed, its exit code and what the host said besides; a failed
 * `read` means the change was made but not read back. `kept`: what the stages that keep their
 * stdout printed; `read`: what the read printed (undefined when it did not run).
 */
export async function runOneExec(
  ctx: Execs,
  o: { guard?: string; stages: Stage[]; read?: string },
  moved: string,
  eo: ExecOptions = {},
): Promise<{ r: ExecResult; kept: string; read?: string; failed?: { stage: string; code: number; said: string } }> {
  const mark = `hostsmith-after-${randomBytes(8).toString('hex')}`;
  const r = await ctx.exec(oneExecScript(o, mark), eo);
  if (stoppedByGuard(r)) throw movedError(moved);
  const split = o.read && o.stages.some((s) => s.out === '');
  const at = split ? r.stdout.indexOf(`\n${mark}\n`) : 0;
  const kept = split ? (at < 0 ? r.stdout : r.stdout.slice(0, at)) : '';
  const read = !o.read || at < 0 ? undefined : split ? r.stdout.slice(at + mark.length + 2) : r.stdout;
  // The read ran in a subshell with none of the exec's variables: what it printed is what the
  // same read in its own exec prints now, and the step after may be about to send just that read.
  if (r.code === 0 && o.read && !split && read !== undefined) ctx.seed?.(o.read, r.stdoutRaw);
  if (r.code === 0) return { r, kept, ...(read !== undefined ? { read } : {}) };
  const f = failedStage(r);
  return { r, kept, failed: { stage: f?.name ?? '', code: f?.code ?? r.code, said: f?.said ?? r.stderr.trim() } };
}

/** The stage of a one-exec apply that failed, its exit code, and what the host said besides; undefined when none did. */
function failedStage(r: Pick<ExecResult, 'stderr'>): { name: string; code: number; said: string } | undefined {
  const m = /^hostsmith-failed: (\S+) (\d+)$/m.exec(r.stderr);
  return m ? { name: m[1]!, code: Number(m[2]), said: r.stderr.replace(m[0], '').trim() } : undefined;
}
