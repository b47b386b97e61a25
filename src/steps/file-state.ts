/**
 * Reading, planning, writing and restoring one path on a host. Shared by the `file` and
 * `template` step types, which differ only in where the wanted content comes from.
 */
import { posix } from 'node:path';
import { InputError, StepError } from '../errors.js';
import { unifiedDiff } from '../render/diff.js';
import { quote } from '../shell/script.js';
import { enterScript, splitPath, unsafeParentsScript, withSafePath } from '../shell/safe-path.js';
import { runOk, tail, type Plan, type PlanEnv, type StepContext } from './step.js';
import type { Footprint } from './footprint.js';
import { metaText, names, str, type UndoData } from './undo-text.js';
import { backupMismatch, type StaticEnv, type StaticProblem } from './step.js';
import { backupFailure, backupPath, copyToBackupScript, restoreFromBackup, restoreScript } from './backup.js';
import { answerOf, guardScript, remember, runOneExec } from '../shell/one-exec.js';
import { fmtMode } from './modes.js';
import { knowPathRead } from './path-batch.js';

export type PathKind = 'absent' | 'file' | 'directory' | 'link' | 'other';

export interface PathState {
  kind: PathKind;
  mode?: number;
  owner?: string;
  group?: string;
  content?: Buffer;
  target?: string;
  /** Ancestors that do not exist yet, outermost first (they would be created). */
  missing: string[];
}

export interface Wanted {
  path: string;
  state: 'present' | 'absent' | 'directory' | 'link';
  /** For state present: the wanted bytes; undefined = keep what is there (an absent file is created empty). */
  content?: Buffer;
  target?: string;
  mode?: number;
  owner?: string;
  group?: string;
}

export type FileUndo =
  /** The path did not exist: remove it and the parents this step created. */
  | { kind: 'absent'; path: string; created: string[] }
  /** The path existed: restore it from the backup (content changes) or its metadata. */
  | {
      kind: 'file' | 'directory' | 'link';
      path: string;
      backup?: string;
      mode?: number;
      owner?: string;
      group?: string;
      target?: string;
    };

/**
 * One round trip. Prints six NUL-terminated fields, then (for a file) its bytes:
 * kind, mode, owner, group, how many parent folders are missing, link target.
 *
 * NUL is the one byte no path, name or link target can hold, so nothing the host reports can
 * shift a field. The missing parents go back as a count, not as names: the names follow from the
 * path itself (see missingParents), so a ":" or a newline in a folder name cannot split the list.
 * Nothing is read through `$(…)`, which would drop trailing newlines.
 */
export function checkScript(path: string): string {
  const script = [
    unsafeParentsScript(path, { target: true }),
    `p=${quote(path)}`,
    // ${d%/*} rather than dirname: the path is absolute and normalised (schema), and no command
    // substitution gets to strip a name's trailing newline. A dangling symlink is not "missing".
    'n=0; d=${p%/*}',
    'while [ -n "$d" ] && [ ! -e "$d" ] && [ ! -L "$d" ]; do n=$((n+1)); d=${d%/*}; done',
    'if [ -L "$p" ]; then k=link; elif [ -d "$p" ]; then k=directory; elif [ -f "$p" ]; then k=file; elif [ -e "$p" ]; then k=other',
    "else printf '%s\\0' absent '' '' '' \"$n\" ''; exit 0; fi",
    'printf \'%s\\0\' "$k"',
    // Mode, owner and group from the folder check's own stat; none there: it went meanwhile (as a failed stat).
    `[ -n "$hs_ta" ] || { printf 'stat: cannot statx %s: No such file or directory\\n' "$p" >&2; exit 1; }`,
    'printf \'%s\\0\' "$hs_ta" "$hs_tu" "$hs_tg"',
    'printf \'%s\\0\' "$n"',
    `if [ "$k" = link ]; then readlink -z -- "$p" || exit 1; else printf '\\0'; fi`,
    'if [ "$k" = file ]; then cat -- "$p"; fi',
  ].join('\n');
  // A batch of several such reads answers them all from one look at the host (path-batch.ts).
  knowPathRead(script, path);
  return script;
}

/** The parent folders of `path` that do not exist (the `count` nearest ones), outermost first. */
export function missingParents(path: string, count: number): string[] {
  const out: string[] = [];
  let d = posix.dirname(path);
  for (let i = 0; i < count && d !== '/' && d !== '.'; i++) {
    out.unshift(d);
    d = posix.dirname(d);
  }
  return out;
}

const FIELDS = 6;

/** Reads what checkScript printed for `path`. */
export function parseCheck(raw: Buffer, path: string): PathState {
  const fields: string[] = [];
  let at = 0;
  for (let i = 0; i < FIELDS; i++) {
    const end = raw.indexOf(0, at);
    if (end < 0) throw new StepError(`cannot read ${path}: the host's answer was cut short (${fields.length} of ${FIELDS} fields)`);
    fields.push(raw.subarray(at, end).toString('utf8'));
    at = end + 1;
  }
  const [kind, mode, owner, group, missing, target] = fields as [string, string, string, string, string, string];
  if (!['absent', 'file', 'directory', 'link', 'other'].includes(kind) || !/^\d+$/.test(missing)) {
    throw new StepError(`cannot read ${path}: unexpected answer from the host (${JSON.stringify(kind)}, ${JSON.stringify(missing)})`);
  }
  // Kept with the state: apply holds the path to it (guard.ts).
  const state = remember<PathState>({ kind: kind as PathKind, missing: missingParents(path, Number(missing)) }, raw);
  if (state.kind !== 'absent') {
    state.mode = parseInt(mode, 8);
    state.owner = owner;
    state.group = group;
  }
  if (state.kind === 'file') state.content = raw.subarray(at);
  if (state.kind === 'link') state.target = target;
  return state;
}

/**
 * What identifies a path's state for staleness: kind, metadata, content and target. Missing
 * parents are left out: an earlier step creating the folder does not move the path itself.
 */
export function pathKey(s: PathState): unknown {
  return { kind: s.kind, mode: s.mode, owner: s.owner, group: s.group, target: s.target, content: s.content };
}

export async function checkPath(ctx: StepContext, path: string): Promise<PathState> {
  const r = await ctx.exec(checkScript(path));
  if (r.code !== 0) throw new StepError(`cannot read ${path}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  return parseCheck(r.stdoutRaw, path);
}

function metaDiffs(w: Wanted, s: PathState): string[] {
  const out: string[] = [];
  if (w.mode !== undefined && w.mode !== s.mode) out.push(`mode ${fmtMode(s.mode)} → ${fmtMode(w.mode)}`);
  if (w.owner !== undefined && w.owner !== s.owner) out.push(`owner ${s.owner} → ${w.owner}`);
  if (w.group !== undefined && w.group !== s.group) out.push(`group ${s.group} → ${w.group}`);
  return out;
}

/** Owner and group of a link; its mode means nothing (symlinks are always 0777). */
function ownerDiffs(w: Wanted, s: PathState): string[] {
  return metaDiffs({ ...w, mode: undefined }, s);
}

function metaOfNew(w: Wanted): string {
  return [w.mode !== undefined ? fmtMode(w.mode) : '', w.owner ?? '', w.group ? `:${w.group}` : ''].join(' ').trim().replace(' :', ':');
}

function describeNew(w: Wanted): string {
  const meta = metaOfNew(w);
  return meta ? `, ${meta}` : '';
}

const unchanged = (summary: string): Plan<FileUndo> => ({ changed: false, summary, undo: null });

/** The pure decision: what would change at `w.path`, and what it takes to put it back. */
export function planPath(w: Wanted, s: PathState, env: PlanEnv): Plan<FileUndo> {
  const path = w.path;
  const existing = { path, mode: s.mode, owner: s.owner, group: s.group };
  if (w.state === 'absent') {
    if (s.kind === 'absent') return unchanged(`${path} is absent`);
    const backup = s.kind === 'link' ? undefined : backupPath(env, path);
    return {
      changed: true,
      action: 'remove',
      summary: `remove ${s.kind} ${path}`,
      diff: s.kind === 'file' ? unifiedDiff(path, s.content ?? null, null) : undefined,
      undo: { kind: s.kind === 'other' ? 'file' : s.kind, ...existing, backup, target: s.target },
    };
  }
  if (w.state === 'directory') {
    if (s.kind === 'absent') {
      return {
        changed: true,
        action: 'create',
        summary: `create directory ${path}${describeNew(w)}`,
        undo: { kind: 'absent', path, created: s.missing },
      };
    }
    if (s.kind !== 'directory') throw new StepError(`${path} is a ${s.kind}, not a directory; remove it first (state: absent)`);
    const diffs = metaDiffs(w, s);
    if (!diffs.length) return unchanged(`directory ${path} is as wanted`);
    return { changed: true, summary: `${path}: ${diffs.join(', ')}`, undo: { kind: 'directory', ...existing } };
  }
  if (w.state === 'link') {
    const target = w.target ?? '';
    if (s.kind === 'absent') {
      const meta = metaOfNew({ ...w, mode: undefined });
      return { changed: true, action: 'create', summary: `link ${path} → ${target}${meta ? ` (${meta})` : ''}`, undo: { kind: 'absent', path, created: s.missing } };
    }
    if (s.kind !== 'link') throw new StepError(`${path} is a ${s.kind}, not a link; remove it first (state: absent)`);
    const diffs = ownerDiffs(w, s);
    if (s.target === target && !diffs.length) return unchanged(`${path} already links to ${target}`);
    const summary = s.target === target ? `${path}: ${diffs.join(', ')}` : [`relink ${path}: ${s.target} → ${target}`, ...diffs].join(', ');
    return {
      changed: true,
      summary,
      undo: { kind: 'link', ...existing, target: s.target },
    };
  }
  if (w.content === undefined) return planMetadataOnly(w, s);
  const content = w.content;
  if (s.kind === 'absent') {
    return {
      changed: true,
      action: 'create',
      summary: `create ${path} (${content.length} bytes${describeNew(w)})`,
      diff: unifiedDiff(path, null, content),
      undo: { kind: 'absent', path, created: s.missing },
    };
  }
  if (s.kind !== 'file') throw new StepError(`${path} is a ${s.kind}, not a regular file; remove it first (state: absent)`);
  const sameContent = s.content?.equals(content);
  const diffs = metaDiffs(w, s);
  if (sameContent && !diffs.length) return unchanged(`${path} is up to date`);
  const what = [...(sameContent ? [] : ['content']), ...diffs];
  return {
    changed: true,
    summary: `update ${path}: ${what.join(', ')}`,
    diff: sameContent ? undefined : unifiedDiff(path, s.content ?? null, content),
    undo: { kind: 'file', ...existing, backup: sameContent ? undefined : backupPath(env, path) },
  };
}

/** state: present without content: create an empty file if none is there, else only metadata. */
function planMetadataOnly(w: Wanted, s: PathState): Plan<FileUndo> {
  const path = w.path;
  if (s.kind === 'absent') {
    const meta = metaOfNew(w);
    return { changed: true, action: 'create', summary: `create empty ${path}${meta ? ` (${meta})` : ''}`, undo: { kind: 'absent', path, created: s.missing } };
  }
  if (s.kind !== 'file') throw new StepError(`${path} is a ${s.kind}, not a regular file; remove it first (state: absent)`);
  const diffs = metaDiffs(w, s);
  if (!diffs.length) return unchanged(`${path} exists${metaOfNew(w) ? ` (${metaOfNew(w)})` : ''}; content not managed`);
  return { changed: true, summary: `${path}: ${diffs.join(', ')}`, undo: { kind: 'file', path, mode: s.mode, owner: s.owner, group: s.group } };
}

function chownSpec(owner?: string, group?: string): string | null {
  if (!owner && !group) return null;
  return `${owner ?? ''}${group ? `:${group}` : ''}`;
}

/**
 * Makes the path as wanted in one exec: holds it to the state it was planned from (`s`, as read),
 * backs up what the change replaces, changes it, and reads it back. Resolves to the state it left
 * (undefined when that read failed: the change is made all the same).
 */
export async function applyPath(ctx: StepContext, w: Wanted, plan: Plan<FileUndo>, s?: PathState): Promise<PathState | undefined> {
  const undo = plan.undo;
  // Every change is made from inside the path's folder, entered without following a link another
  // user could plant or swap, on the bare name with operations that do not follow one (safe-path.ts).
  const { dir, base } = splitPath(w.path);
  const b = quote(base);
  const own = chownSpec(w.owner, w.group);
  const meta = (name: string) => (w.mode !== undefined || own ? `hs_meta ${name} ${w.mode !== undefined ? fmtMode(w.mode) : "''"} ${quote(own ?? '')}` : 'true');
  let lines: string[];
  let what: string;
  let stdin: Buffer | undefined;
  switch (w.state) {
    case 'absent':
      [lines, what] = [[enterScript(dir, { missingOk: true }), `rm -rf -- ${b}`], `removing ${w.path}`];
      break;
    case 'directory':
      [lines, what] = [[enterScript(w.path, { make: true }), meta('.')], `creating directory ${w.path}`];
      break;
    case 'link':
      [lines, what] = [[enterScript(dir, { make: true }), `ln -sfT -- ${quote(w.target ?? '')} ${b}`, ...(own ? [`chown -h ${quote(own)} -- ${b}`] : [])], `linking ${w.path}`];
      break;
    case 'present': {
      const contentChanged = !undo || undo.kind === 'absent' || undo.backup !== undefined;
      if (!contentChanged) {
        [lines, what] = [[enterScript(dir), meta(b)], `setting metadata of ${w.path}`];
        break;
      }
      const make = undo?.kind === 'absent' && undo.created.length > 0;
      const write = `hs_write ${b} ${w.mode !== undefined ? fmtMode(w.mode) : "''"} ${quote(own ?? '')}`;
      [lines, what, stdin] = [[enterScript(dir, { make }), write], `writing ${w.path}`, w.content ?? Buffer.alloc(0)];
    }
  }
  const change = withSafePath(lines.join('\n'));
  const backup = undo && undo.kind !== 'absent' && undo.backup ? undo.backup : undefined;
  const raw = answerOf(s);
  const { r, failed } = await runOneExec(
    ctx,
    {
      ...(raw ? { guard: guardScript(checkScript(w.path), raw) } : {}),
      stages: [...(backup ? [{ name: 'backup', script: copyToBackupScript(ctx, w.path, backup) }] : []), { name: 'change', script: change }],
      read: checkScript(w.path),
    },
    `someone changed ${w.path} after it was read`,
    stdin ? { stdin } : {},
  );
  if (!failed) {
    try {
      return parseCheck(r.stdoutRaw, w.path);
    } catch {
      return undefined; // made, but not read back: the engine reads it on its own
    }
  }
  const { stage, code, said } = failed;
  if (stage === 'read') return undefined;
  if (stage === 'backup') throw backupFailure(ctx, { ...r, code, stderr: said }, `backing up ${w.path} to ${backup}`, posix.dirname(ctx.backupDir));
  const t = ctx.transport as { loginUser?: string };
  const denied = stdin && /Permission denied|Operation not permitted/.test(said) && !ctx.sudo && t.loginUser !== 'root';
  const hint = denied ? ` (${t.loginUser ?? 'the login user'} may not write there: log in as root, or use sudo: true on the recipe or step, or --sudo)` : '';
  const tailSaid = tail(said) || tail(r.stdout, 5);
  throw new StepError(`${what} failed (exit ${code})${tailSaid ? `: ${tailSaid}` : ''}${hint}`, { code, stderr: said });
}

/** Puts the path back as the undo data recorded it; works from journaled data alone. */
export async function rollbackPath(ctx: StepContext, undo: FileUndo): Promise<void> {
  if (undo.kind !== 'absent' && undo.backup) return restoreFromBackup(ctx, undo.backup, undo.path);
  await runOk(ctx, rollbackPathScript(undo), undo.kind === 'absent' ? `removing ${undo.path}` : undo.kind === 'link' ? `relinking ${undo.path}` : `restoring metadata of ${undo.path}`);
}

/** The one script that puts the path back: rollbackPath runs it, and so does the lockout watchdog. */
export function rollbackPathScript(undo: FileUndo): string {
  // Each part in its own subshell: it enters its folder (refusing a planted or swapped link) and
  // acts on the bare name there.
  const at = (path: string, missingOk: boolean, act: (name: string) => string) => {
    const { dir, base } = splitPath(path);
    return `( ${enterScript(dir, { missingOk })}\n${act(quote(base))}\n)`;
  };
  if (undo.kind === 'absent') {
    // What is already gone (a later rollback, e.g. a package purge, took it) needs no undoing.
    // A directory we created is removed only if empty: anything else in it is not ours to delete.
    const remove = at(undo.path, true, (n) => `if [ -d ${n} ] && [ ! -L ${n} ]; then rmdir -- ${n}; else rm -f -- ${n}; fi`);
    const parents = [...undo.created].reverse().map((d) => at(d, true, (n) => `if [ -d ${n} ] && [ ! -L ${n} ]; then rmdir -- ${n}; fi`));
    return withSafePath([remove, ...parents].join(' &&\n'));
  }
  if (undo.backup) return restoreScript(undo.backup, undo.path);
  const own = chownSpec(undo.owner, undo.group);
  if (undo.kind === 'link') return withSafePath(at(undo.path, false, (n) => [`ln -sfT -- ${quote(undo.target ?? '')} ${n}`, ...(own ? [`chown -h ${quote(own)} -- ${n}`] : [])].join(' && ')));
  if (undo.mode === undefined && !own) return 'true';
  return withSafePath(at(undo.path, false, (n) => `hs_meta ${n} ${undo.mode !== undefined ? fmtMode(undo.mode) : "''"} ${quote(own ?? '')}`));
}

/** A path step reads and writes its path (and, through the folders above it, depends on them). */
export function pathFootprint(path: string): Footprint {
  return { reads: [`path:${path}`], writes: [`path:${path}`] };
}

/** The folders a change made on the way to its path (undo of a path that was absent). */
export function pathWrote(undo: FileUndo | null): string[] {
  return undo && undo.kind === 'absent' ? undo.created.map((d) => `path:${d}`) : [];
}

/** A handler on a path is not needed once the folder it writes into is gone. */
export async function folderGone(ctx: StepContext, path: string): Promise<string | null> {
  const dir = posix.dirname(path);
  const r = await ctx.exec(`[ -d ${quote(dir)} ]`);
  return r.code === 0 ? null : `its folder ${dir} is no longer there`;
}

/** What a path's rollback puts back, from its undo data as journaled. */
export function pathUndoSummary(u: UndoData): string {
  const path = str(u, 'path') ?? '?';
  if (u.kind === 'absent') {
    const created = names(u, 'created');
    return `remove ${path}${created.length ? ` and the folders the step created (${created.join(', ')})` : ''}`;
  }
  const what = u.kind === 'directory' ? 'folder' : u.kind === 'link' ? 'link' : 'file';
  const parts = [
    str(u, 'backup') ? `put back ${what} ${path} from the backup ${str(u, 'backup')}` : `put back ${what} ${path}`,
    str(u, 'target') ? `link target ${str(u, 'target')}` : '',
    metaText(u),
  ].filter(Boolean);
  return parts.join('; ');
}

/** A `src` beside the recipe: found, or a problem saying where it was looked for. */
/**
 * A step's Handlebars template in `src` (found as the template step finds its own), rendered with
 * the step's `vars`; a file that cannot be read is the recipe's error, named at `<type>.src`.
 */
export async function renderSource(ctx: StepContext, type: string, src: string, vars: Record<string, unknown> | undefined): Promise<string> {
  const { path, content } = await ctx.readSource(src, 'templates').catch((e: unknown) => {
    throw new InputError(`step "${ctx.step}": ${type}.src: ${(e as Error).message}`);
  });
  return ctx.render(content.toString('utf8'), vars ?? {}, `template ${path}`);
}

export async function sourceProblems(raw: UndoData, env: StaticEnv, kind: 'templates' | 'files', what: string, local?: string[]): Promise<StaticProblem[]> {
  const src = raw.src;
  if (typeof src !== 'string' || !src || src.includes('{{')) return [];
  const found = await env.findSource(src, kind);
  if ('looked' in found) return [{ path: ['src'], message: found.why ?? `${what} "${src}" not found (looked in ${found.looked.join(', ')})` }];
  if (local) await env.checkTemplate(found.file, ['src'], local);
  return [];
}

/** Undo data of a path step names that path, folders above it, and a backup of it. */
export function pathUndoMismatch(path: string, u: UndoData): string | undefined {
  if (u.path !== path) return `its undo data is for ${JSON.stringify(u.path)}, not the step's ${path}`;
  const created = Array.isArray(u.created) ? u.created : [];
  const notAbove = created.find((d) => typeof d !== 'string' || !path.startsWith(`${d}/`));
  if (notAbove !== undefined) return `its undo data would remove ${JSON.stringify(notAbove)}, which is not a folder above ${path}`;
  return backupMismatch(u.backup, path);
}

/**
 * What every step on one path (file, template, line) shares beyond its own params and plan: its
 * read, guarded apply, rollback (one script for the controller and the watchdog), state key,
 * footprint, undo summary and checks of journaled undo data, all about the path `pathOf` names.
 */
export function pathStepParts<P>(pathOf: (p: P) => string) {
  return {
    check: (ctx: StepContext, p: P) => checkPath(ctx, pathOf(p)),
    guarded: true,
    rollback: (ctx: StepContext, _p: P, undo: FileUndo) => rollbackPath(ctx, undo),
    hostRollback: (_p: P, undo: FileUndo) => rollbackPathScript(undo),
    stateKey: (_p: P, s: PathState) => pathKey(s),
    footprint: (p: P) => pathFootprint(pathOf(p)),
    undoSummary: pathUndoSummary,
    undoMismatch: (p: P, u: UndoData) => pathUndoMismatch(pathOf(p), u),
    wrote: (_p: P, undo: FileUndo | null) => pathWrote(undo),
    gone: (ctx: StepContext, p: P) => folderGone(ctx, pathOf(p)),
  };
}
