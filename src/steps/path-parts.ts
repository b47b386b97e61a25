/**
 * A step made of several parts (a few fixed paths, each through file-state.ts, and maybe one
 * live setting): `hostname` and `timezone`. The engine rolls back completed steps only, so a step
 * whose second part fails must put its first part back itself before it reports the failure;
 * and its rollback tries every part even when one fails, so one stuck part does not leave the
 * others changed.
 */
import { StepError } from '../errors.js';
import { parseCheck, pathUndoMismatch, type PathState } from './file-state.js';
import type { StepContext } from './step.js';
import type { UndoData } from './undo-text.js';

/** One part of a change: how to make it, and how to put it back once made. */
export interface Part<T = unknown> {
  apply(): Promise<T>;
  rollback(): Promise<void>;
}

/**
 * Makes each part in order. When one fails, the parts already made are put back, newest first,
 * then the failure is passed on (with what could not be put back, if anything).
 */
export async function applyParts(parts: Part[]): Promise<unknown[]> {
  const made: Part[] = [];
  const out: unknown[] = [];
  for (const part of parts) {
    try {
      out.push(await part.apply());
      made.push(part);
    } catch (e) {
      const stuck: string[] = [];
      for (const m of made.reverse()) {
        try {
          await m.rollback();
        } catch (r) {
          stuck.push((r as Error).message);
        }
      }
      if (!stuck.length) throw e;
      throw new StepError(`${(e as Error).message}; putting back what the step had already changed also failed: ${stuck.join('; ')}`, { cause: e });
    }
  }
  return out;
}

/** Runs every rollback (in the order given) even when one fails; then fails with all that did. */
export async function rollbackParts(steps: Array<() => Promise<void>>): Promise<void> {
  const failed: string[] = [];
  for (const s of steps) {
    try {
      await s();
    } catch (e) {
      failed.push((e as Error).message);
    }
  }
  if (failed.length) throw new StepError(failed.join('; '));
}

/** The same as a host script (the lockout watchdog): each part in its own subshell, all tried, non-zero if any failed. */
export function rollbackPartsScript(scripts: string[]): string {
  if (!scripts.length) return 'true';
  return ['hs_rc=0', ...scripts.map((s) => `( ${s}\n) || hs_rc=1`), 'exit $hs_rc'].join('\n');
}

/**
 * Splits a check's answer: `n` NUL-terminated fields, then what file-state's checkScript printed
 * for `path` (last, since a file's bytes run to the end). The path's state keeps its own part of
 * the answer, which is what applyPath holds the path to.
 */
export function splitAnswer(raw: Buffer, n: number, path: string, what: string): { fields: string[]; state: PathState } {
  const fields: string[] = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const end = raw.indexOf(0, at);
    if (end < 0) throw new StepError(`cannot read ${what}: the host's answer was cut short`);
    fields.push(raw.subarray(at, end).toString('utf8'));
    at = end + 1;
  }
  return { fields, state: parseCheck(raw.subarray(at), path) };
}

/** Runs a check script; a non-zero exit is a StepError that says what was being read. */
export async function readAnswer(ctx: StepContext, script: string, what: string): Promise<Buffer> {
  const r = await ctx.exec(script);
  if (r.code !== 0) throw new StepError(`cannot read ${what}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  return r.stdoutRaw;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A small text file's content, or null when absent; anything but a regular UTF-8 file is an error. */
export function textOf(path: string, s: PathState): string | null {
  if (s.kind === 'absent') return null;
  if (s.kind !== 'file') throw new StepError(`${path} is a ${s.kind === 'link' ? `symbolic link (to ${s.target})` : s.kind}, not a regular file; hostsmith does not write through it`);
  const c = s.content ?? Buffer.alloc(0);
  try {
    if (c.includes(0)) throw new Error('NUL');
    return utf8.decode(c);
  } catch {
    throw new StepError(`${path} is not a text file (not UTF-8, or it has NUL bytes)`);
  }
}

/**
 * Whether the journaled undo data of each file part (under its key; absent when the part did not
 * change) belongs to the path that part owns: the first reason it does not, or undefined.
 */
export function partsUndoMismatch(u: UndoData, parts: ReadonlyArray<readonly [key: string, path: string]>): string | undefined {
  for (const [key, path] of parts) {
    const f = u[key];
    if (f === null || f === undefined) continue;
    if (typeof f !== 'object') return `its undo data for ${path} is not an object`;
    const why = pathUndoMismatch(path, f as UndoData);
    if (why) return why;
  }
  return undefined;
}
