/**
 * A kernel parameter: kept in a sysctl.d drop-in file (so it holds after a reboot) and, unless
 * `apply_live: false`, set in the running kernel through /proc/sys. The file side is the path
 * machinery of file-state.ts (safe writes, root-only backups, folders it made removed on undo);
 * the live side is one guarded write to /proc/sys, undone by writing back the value found.
 */
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { guardScript, runOneExec } from '../../shell/one-exec.js';
import { quote } from '../../shell/script.js';
import {
  applyPath,
  checkScript as pathCheckScript,
  parseCheck,
  pathKey,
  pathUndoMismatch,
  pathUndoSummary,
  pathWrote,
  planPath,
  rollbackPath,
  rollbackPathScript,
  type FileUndo,
  type PathState,
} from '../file-state.js';
import { flag } from '../accounts.js';
import { absolutePath } from '../paths.js';
import { runOk, type Plan, type PlanEnv, type StepContext, type StepType } from '../step.js';
import { str, type UndoData } from '../undo-text.js';

/** Dotted, as sysctl.d and `sysctl -n` take it; no "/" form, no globs, no empty or dot parts. */
const NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_:@+-]+)+$/;

export const sysctlSchema = z
  .object({
    name: z.string().regex(NAME, 'a kernel parameter name such as net.ipv4.ip_forward (dotted; no "/", "*" or blanks)'),
    value: z
      .union([z.string(), z.number()])
      .transform(String)
      .refine((v) => !/[\r\n\0]/.test(v), 'value must be a single line')
      .refine((v) => v.trim() !== '', 'value must not be empty')
      .optional(),
    /** The drop-in file; default /etc/sysctl.d/99-hostsmith-<name>.conf (one file per key). */
    file: absolutePath.optional(),
    state: z.enum(['present', 'absent']).default('present'),
    apply_live: flag.default(true),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.state === 'present' && p.value === undefined) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'value is required with state: present', path: ['value'] });
  });

export type SysctlParams = z.output<typeof sysctlSchema>;

export interface SysctlState {
  /** The running kernel's value as /proc/sys shows it (blanks as the kernel prints them); null: not read (state: absent and no such key). */
  live: string | null;
  file: PathState;
}

export interface SysctlUndo {
  name: string;
  /** The drop-in file as it was (null: the step did not touch it). */
  file: FileUndo | null;
  /** The live value to write back (null: the step did not set it live). */
  live: string | null;
}

export const fileOf = (p: Pick<SysctlParams, 'name' | 'file'>): string => p.file ?? `/etc/sysctl.d/99-hostsmith-${p.name}.conf`;
export const procPath = (name: string): string => `/proc/sys/${name.split('.').join('/')}`;

/** Values compare as the kernel reads them: blanks between numbers do not matter ("32768\t60999" = "32768 60999"). */
export const sameValue = (a: string, b: string): boolean => norm(a) === norm(b);
const norm = (v: string) => v.trim().split(/\s+/).join(' ');

/** A drop-in line's key, as systemd-sysctl and `sysctl --system` read it; undefined for comments and blanks. */
function keyOf(line: string): string | undefined {
  const t = line.trim().replace(/^-/, '');
  if (!t || t.startsWith('#') || t.startsWith(';')) return undefined;
  const eq = t.indexOf('=');
  const key = (eq < 0 ? t : t.slice(0, eq)).trim();
  // "a/b/c" is the same key as "a.b.c" (sysctl.d(5)).
  return key.includes('/') && !key.includes('.') ? key.split('/').join('.') : key;
}
const valueOf = (line: string) => line.slice(line.indexOf('=') + 1);

/**
 * The drop-in's text with the parameter set (or removed): the first line for the key keeps its
 * place, any later ones go (the last one read wins, so a stale duplicate would undo ours at boot).
 * Returns the text unchanged (the same string) when nothing changes, and null for a removal that
 * leaves nothing but blanks (the file goes).
 */
export function editConf(text: string | null, p: SysctlParams): string | null {
  const lines = text === null || text === '' ? [] : text.replace(/\n$/, '').split('\n');
  const out: string[] = [];
  let placed = false;
  let changed = false;
  for (const l of lines) {
    if (keyOf(l) !== p.name) {
      out.push(l);
      continue;
    }
    if (p.state === 'present' && !placed) {
      placed = true;
      if (l.includes('=') && sameValue(valueOf(l), p.value!)) out.push(l);
      else {
        out.push(`${p.name} = ${p.value!.trim()}`);
        changed = true;
      }
    } else changed = true;
  }
  if (p.state === 'present' && !placed) {
    out.push(`${p.name} = ${p.value!.trim()}`);
    changed = true;
  }
  if (!changed) return text;
  if (p.state === 'absent' && out.every((l) => !l.trim())) return null;
  return `${out.join('\n')}\n`;
}

/**
 * One round trip: two NUL-terminated fields for the live value (how it is there: live, missing,
 * notakey or unreadable; the value), then what file-state's check prints for the drop-in.
 */
export function checkScript(p: Pick<SysctlParams, 'name' | 'file'>): string {
  return [
    `k=${quote(procPath(p.name))}`,
    `if [ -f "$k" ]; then if v=$(cat -- "$k"); then printf 'live\\0%s\\0' "$v"; else printf 'unreadable\\0\\0'; fi`,
    `elif [ -e "$k" ]; then printf 'notakey\\0\\0'; else printf 'missing\\0\\0'; fi`,
    pathCheckScript(fileOf(p)),
  ].join('\n');
}

export function parseSysctlCheck(raw: Buffer, p: SysctlParams): SysctlState {
  const a = raw.indexOf(0);
  const b = a < 0 ? -1 : raw.indexOf(0, a + 1);
  if (b < 0) throw new StepError(`cannot read ${p.name}: the host's answer was cut short`);
  const how = raw.subarray(0, a).toString('utf8');
  const value = raw.subarray(a + 1, b).toString('utf8');
  // parseCheck keeps the file's own answer with its state: applyPath holds the file to it.
  const file = parseCheck(raw.subarray(b + 1), fileOf(p));
  if (how === 'live') return { live: value, file };
  if (p.state === 'absent') return { live: null, file };
  const where = procPath(p.name);
  if (how === 'missing') throw new StepError(`no kernel parameter ${p.name} on this host (${where} does not exist): check the name, or load the module that provides it first`);
  if (how === 'notakey') throw new StepError(`${p.name} is a group of kernel parameters (${where} is a folder), not one parameter`);
  throw new StepError(`kernel parameter ${p.name} cannot be read (${where}); hostsmith only manages parameters it can read back`);
}

async function checkSysctl(ctx: StepContext, p: SysctlParams): Promise<SysctlState> {
  const r = await ctx.exec(checkScript(p));
  if (r.code !== 0) throw new StepError(`cannot read ${p.name}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  return parseSysctlCheck(r.stdoutRaw, p);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function textOf(path: string, s: PathState): string | null {
  if (s.kind === 'absent') return null;
  if (s.kind === 'link') throw new StepError(`${path} is a symbolic link to ${s.target}; give the real file as file`);
  if (s.kind !== 'file') throw new StepError(`${path} is a ${s.kind === 'directory' ? 'directory' : 'special file'}, not a regular file`);
  try {
    const c = s.content ?? Buffer.alloc(0);
    if (c.includes(0)) throw new Error('NUL');
    return utf8.decode(c);
  } catch {
    throw new StepError(`${path} is not a text file (not UTF-8, or it has NUL bytes)`);
  }
}

/** The file's part of the change (null: the file is as wanted). */
function filePlan(p: SysctlParams, s: SysctlState, env: PlanEnv): Plan<FileUndo> | null {
  const path = fileOf(p);
  const text = textOf(path, s.file);
  const next = editConf(text, p);
  if (next === text) return null;
  const plan = next === null ? planPath({ path, state: 'absent' }, s.file, env) : planPath({ path, state: 'present', content: Buffer.from(next, 'utf8') }, s.file, env);
  return plan.changed ? plan : null;
}

/** Will the live value be written (present, apply_live, and the kernel holds another value)? */
const liveChange = (p: SysctlParams, s: SysctlState): boolean => p.state === 'present' && p.apply_live && s.live !== null && !sameValue(s.live, p.value!);

const shown = (v: string) => JSON.stringify(norm(v)).replace(/^"([^" ]*)"$/, '$1');

export function planSysctl(p: SysctlParams, s: SysctlState, env: PlanEnv): Plan<SysctlUndo> {
  const path = fileOf(p);
  const fp = filePlan(p, s, env);
  const live = liveChange(p, s);
  if (p.state === 'absent') {
    const left = s.live !== null ? `; the live value ${shown(s.live)} is left as it is (until a reboot or another setting)` : '';
    if (!fp) return { changed: false, summary: `${p.name} is not set in ${path}${left}`, undo: null };
    const gone = fp.action === 'remove' ? ` (and the file, left empty: ${path})` : ` in ${path}`;
    return { changed: true, action: 'remove', summary: `remove ${p.name}${gone}${left}`, diff: fp.diff, undo: { name: p.name, file: fp.undo, live: null } };
  }
  const value = p.value!.trim();
  const liveText =
    s.live === null
      ? ''
      : !p.apply_live
        ? `live: ${shown(s.live)}, not set now (apply_live: false; the file applies at boot)`
        : live
          ? `live: ${shown(s.live)} → ${shown(value)}`
          : `live: ${shown(s.live)}`;
  if (!fp && !live) return { changed: false, summary: `${p.name} = ${value} in ${path}; ${liveText}`, undo: null };
  const fileText = !fp ? `${path} as wanted` : fp.action === 'create' ? `create ${path}` : `update ${path}`;
  return {
    changed: true,
    action: fp?.action === 'create' && !live ? 'create' : 'change',
    summary: `set ${p.name} = ${value} (${fileText}; ${liveText})`,
    ...(fp?.diff ? { diff: fp.diff } : {}),
    undo: { name: p.name, file: fp?.undo ?? null, live: live ? s.live : null },
  };
}

/** Shell: writes `value` to the parameter in the running kernel (the undo writes the old value the same way). */
function writeLiveScript(name: string, value: string): string {
  return `printf '%s\\n' ${quote(value)} > ${quote(procPath(name))}`;
}

/** What the live guard and read-back print: the value as the check saw it (without the trailing newline). */
const readLiveScript = (name: string) => `printf %s "$(cat -- ${quote(procPath(name))})"`;

/** rollback as one host script: the live value back first, then the file (each in its own subshell: the file's script may exit early). */
function rollbackScript(undo: SysctlUndo): string {
  const parts: string[] = [];
  if (undo.live !== null) parts.push(`( ${writeLiveScript(undo.name, undo.live)}\n) || exit 1`);
  if (undo.file) parts.push(`( ${rollbackPathScript(undo.file)}\n) || exit 1`);
  return parts.join('\n') || 'true';
}

async function rollbackSysctl(ctx: StepContext, undo: SysctlUndo): Promise<void> {
  if (undo.live !== null) await runOk(ctx, writeLiveScript(undo.name, undo.live), `setting ${undo.name} back to ${undo.live}`);
  if (undo.file) await rollbackPath(ctx, undo.file);
}

/** The live write, held to the value the plan was made from, then read back: the kernel may refuse or clamp a value. */
async function setLive(ctx: StepContext, p: SysctlParams, old: string): Promise<string> {
  const value = p.value!.trim();
  const { r, read, failed } = await runOneExec(
    ctx,
    { guard: guardScript(readLiveScript(p.name), Buffer.from(old, 'utf8')), stages: [{ name: 'live', script: writeLiveScript(p.name, value) }], read: readLiveScript(p.name) },
    `${p.name} changed in the kernel after it was read`,
  );
  if (failed) {
    const said = failed.said || r.stdout.trim();
    throw new StepError(`setting ${p.name} to ${value} in the running kernel failed (exit ${failed.code})${said ? `: ${said}` : ''}`, { code: failed.code, stderr: r.stderr });
  }
  const now = read ?? '';
  if (!sameValue(now, value))
    throw new StepError(`the kernel took ${p.name} = ${value} but now reports ${JSON.stringify(now)} (it may round, clamp or ignore the value); put the value it keeps in the recipe`);
  return now;
}

export const sysctlStep: StepType<SysctlParams, SysctlState, SysctlUndo> = {
  type: 'sysctl',
  schema: sysctlSchema,
  check: checkSysctl,
  guarded: true,
  plan: planSysctl,
  async apply(ctx, p, plan, s) {
    const undo = plan.undo!;
    let file = s.file;
    if (undo.file) {
      // The engine held the state to the plan's: the same edit, with the plan's undo (its backup).
      const text = editConf(textOf(fileOf(p), s.file), p);
      const wanted = text === null ? { path: fileOf(p), state: 'absent' as const } : { path: fileOf(p), state: 'present' as const, content: Buffer.from(text, 'utf8') };
      file = (await applyPath(ctx, wanted, { changed: true, summary: plan.summary, undo: undo.file }, s.file)) ?? file;
    }
    let live = s.live;
    if (undo.live !== null) {
      try {
        live = await setLive(ctx, p, undo.live);
      } catch (e) {
        // The engine rolls back completed steps only: a half-done step undoes its file itself.
        if (undo.file) {
          try {
            await rollbackPath(ctx, undo.file);
          } catch (r) {
            throw new StepError(`${(e as Error).message}; putting ${fileOf(p)} back also failed: ${(r as Error).message}`, { cause: e });
          }
        }
        throw e;
      }
    }
    return { state: { live, file } };
  },
  rollback: (ctx, _p, undo) => rollbackSysctl(ctx, undo),
  hostRollback: (_p, undo) => rollbackScript(undo),
  // The live value and the drop-in; missing folders above it are left out, as for a file step.
  stateKey: (_p, s) => ({ live: s.live, file: pathKey(s.file) }),
  footprint: (p) => {
    const items = [`path:${fileOf(p)}`, `path:${procPath(p.name)}`];
    return { reads: items, writes: items };
  },
  wrote: (_p, undo) => pathWrote(undo?.file ?? null),
  undoSummary: (u: UndoData) => {
    const name = str(u, 'name') ?? '?';
    const parts = [
      typeof u.live === 'string' ? `set ${name} back to ${JSON.stringify(u.live)} in the running kernel` : '',
      u.file && typeof u.file === 'object' ? pathUndoSummary(u.file as UndoData) : '',
    ].filter(Boolean);
    return parts.length ? parts.join('; ') : `nothing to put back for ${name}`;
  },
  undoMismatch: (p, u) => {
    if (u.name !== p.name) return `its undo data is for kernel parameter ${JSON.stringify(u.name)}, not ${p.name}`;
    if (u.live !== null && u.live !== undefined && (typeof u.live !== 'string' || /[\r\n\0]/.test(u.live))) return 'its undo data holds a live value that is not one line of text';
    return u.file && typeof u.file === 'object' ? pathUndoMismatch(fileOf(p), u.file as UndoData) : undefined;
  },
};
