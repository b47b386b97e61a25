/**
 * Reading, planning, writing and restoring one path on a host. Shared by the `file` and
 * `template` step types, which differ only in where the wanted content comes from.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { StepError } from '../errors.js';
import { unifiedDiff } from '../render/diff.js';
import { quote } from '../transport/shell.js';
import type { Plan, PlanEnv, StepContext } from './step.js';
import { fmtMode } from './modes.js';

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

/** One round trip: a header line describing the path, then the file's bytes. */
export function checkScript(path: string): string {
  const p = quote(path);
  return [
    `p=${p}`,
    'missing=""; d=$(dirname -- "$p")',
    'while [ ! -e "$d" ] && [ "$d" != / ] && [ "$d" != . ]; do missing="$d:$missing"; d=$(dirname -- "$d"); done',
    'if [ -L "$p" ]; then printf "link|%s|%s|%s\\n" "$(stat -c "%a|%U|%G" -- "$p")" "$missing" "$(readlink -- "$p")"',
    'elif [ -d "$p" ]; then printf "directory|%s|%s|\\n" "$(stat -c "%a|%U|%G" -- "$p")" "$missing"',
    'elif [ -f "$p" ]; then printf "file|%s|%s|\\n" "$(stat -c "%a|%U|%G" -- "$p")" "$missing"; cat -- "$p"',
    'elif [ -e "$p" ]; then printf "other|%s|%s|\\n" "$(stat -c "%a|%U|%G" -- "$p")" "$missing"',
    'else printf "absent||||%s|\\n" "$missing"; fi',
  ].join('\n');
}

export function parseCheck(raw: Buffer): PathState {
  const nl = raw.indexOf(0x0a);
  const header = raw.subarray(0, nl < 0 ? raw.length : nl).toString('utf8');
  const [kind, mode, owner, group, missing, ...rest] = header.split('|');
  const state: PathState = {
    kind: (kind as PathKind) || 'absent',
    missing: (missing ?? '').split(':').filter(Boolean),
  };
  if (state.kind !== 'absent') {
    state.mode = parseInt(mode ?? '', 8);
    state.owner = owner;
    state.group = group;
  }
  if (state.kind === 'file') state.content = raw.subarray(nl + 1);
  if (state.kind === 'link') state.target = rest.join('|');
  return state;
}

export async function checkPath(ctx: StepContext, path: string): Promise<PathState> {
  const r = await ctx.exec(checkScript(path));
  if (r.code !== 0) throw new StepError(`cannot read ${path}: ${r.stderr.trim() || `exit ${r.code}`}`, { code: r.code, stderr: r.stderr });
  return parseCheck(r.stdoutRaw);
}

/**
 * The step's own backup folder: a readable slug plus a hash of the full name, since different
 * names can slug alike ("Conf (1)", "Conf [1]", long shared prefixes) and must not share backups.
 */
export function backupFolder(step: string): string {
  const slug = step.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 60) || 'step';
  return `${slug}-${createHash('sha256').update(step).digest('hex').slice(0, 8)}`;
}

export function backupPath(env: PlanEnv, path: string): string {
  return posix.join(env.backupDir, backupFolder(env.step), path);
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
  return [w.mode !== undefined ? fmtMode(w.mode) : '', w.owner ?? '', w.group ? `:${w.group}` : '']
    .join(' ')
    .trim()
    .replace(' :', ':');
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
      summary: `remove ${s.kind} ${path}`,
      diff: s.kind === 'file' ? unifiedDiff(path, s.content ?? null, null) : undefined,
      undo: { kind: s.kind === 'other' ? 'file' : s.kind, ...existing, backup, target: s.target },
    };
  }
  if (w.state === 'directory') {
    if (s.kind === 'absent') {
      return {
        changed: true,
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
      return { changed: true, summary: `link ${path} → ${target}${meta ? ` (${meta})` : ''}`, undo: { kind: 'absent', path, created: s.missing } };
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
      summary: `create ${path} (${content.length} bytes${describeNew(w)})`,
      diff: unifiedDiff(path, null, content),
      undo: { kind: 'absent', path, created: s.missing },
    };
  }
  if (s.kind !== 'file') throw new StepError(`${path} is a ${s.kind}, not a regular file; remove it first (state: absent)`);
  const sameContent = s.content !== undefined && s.content.equals(content);
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
    return { changed: true, summary: `create empty ${path}${meta ? ` (${meta})` : ''}`, undo: { kind: 'absent', path, created: s.missing } };
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

async function run(ctx: StepContext, script: string, what: string): Promise<void> {
  const r = await ctx.exec(script);
  if (r.code !== 0) {
    throw new StepError(`${what} failed (exit ${r.code}): ${r.stderr.trim()}`, { code: r.code, stderr: r.stderr });
  }
}

/** Copies what is at `path` into a root-only backup folder before it is replaced or removed. */
async function backup(ctx: StepContext, path: string, dest: string): Promise<void> {
  await run(
    ctx,
    [
      `umask 077`,
      `mkdir -p ${quote(posix.dirname(ctx.backupDir))} && chmod 0700 ${quote(posix.dirname(ctx.backupDir))}`,
      `mkdir -p ${quote(posix.dirname(dest))}`,
      `rm -rf -- ${quote(dest)}`,
      `cp -a -- ${quote(path)} ${quote(dest)}`,
    ].join(' && '),
    `backing up ${path} to ${dest}`,
  );
}

export async function applyPath(ctx: StepContext, w: Wanted, plan: Plan<FileUndo>): Promise<void> {
  const undo = plan.undo;
  const p = quote(w.path);
  if (undo && undo.kind !== 'absent' && undo.backup) await backup(ctx, w.path, undo.backup);
  const own = chownSpec(w.owner, w.group);
  const chown = own ? [`chown ${w.state === 'link' ? '-h ' : ''}${quote(own)} -- ${p}`] : [];
  const meta = [...(w.mode !== undefined ? [`chmod ${fmtMode(w.mode)} -- ${p}`] : []), ...chown];
  switch (w.state) {
    case 'absent':
      return run(ctx, `rm -rf -- ${p}`, `removing ${w.path}`);
    case 'directory':
      return run(ctx, [`mkdir -p -- ${p}`, ...meta].join(' && '), `creating directory ${w.path}`);
    case 'link':
      return run(
        ctx,
        [`mkdir -p -- ${quote(posix.dirname(w.path))}`, `ln -sfn -- ${quote(w.target ?? '')} ${p}`, ...chown].join(' && '),
        `linking ${w.path}`,
      );
    case 'present': {
      const contentChanged = !undo || undo.kind === 'absent' || undo.backup !== undefined;
      if (!contentChanged) return run(ctx, meta.join(' && ') || 'true', `setting metadata of ${w.path}`);
      if (undo?.kind === 'absent' && undo.created.length) {
        await run(ctx, `mkdir -p -- ${quote(posix.dirname(w.path))}`, `creating ${posix.dirname(w.path)}`);
      }
      await ctx.writeFile(w.path, w.content ?? Buffer.alloc(0), { mode: w.mode, owner: w.owner, group: w.group });
      return;
    }
  }
}

/** Puts the path back as the undo data recorded it; works from journaled data alone. */
export async function rollbackPath(ctx: StepContext, undo: FileUndo): Promise<void> {
  const p = quote(undo.path);
  if (undo.kind === 'absent') {
    // What is already gone (a later rollback, e.g. a package purge, took it) needs no undoing.
    const parents = [...undo.created].reverse().map((d) => `if [ -d ${quote(d)} ]; then rmdir -- ${quote(d)}; fi`);
    // A directory we created is removed only if empty: anything else in it is not ours to delete.
    const remove = `if [ -d ${p} ] && [ ! -L ${p} ]; then rmdir -- ${p}; else rm -f -- ${p}; fi`;
    return run(ctx, [remove, ...parents].join(' && '), `removing ${undo.path}`);
  }
  if (undo.backup) {
    const b = quote(undo.backup);
    const tmp = quote(`${undo.path}.hostsmith-restore`);
    return run(
      ctx,
      [`test -e ${b} || test -L ${b}`, `rm -rf -- ${tmp}`, `cp -a -- ${b} ${tmp}`, `rm -rf -- ${p}.hostsmith-old`, `if [ -d ${p} ] && [ ! -L ${p} ]; then mv -- ${p} ${p}.hostsmith-old; fi`, `mv -fT -- ${tmp} ${p}`, `rm -rf -- ${p}.hostsmith-old`].join(' && '),
      `restoring ${undo.path} from ${undo.backup}`,
    );
  }
  if (undo.kind === 'link') {
    const own = chownSpec(undo.owner, undo.group);
    return run(
      ctx,
      [`ln -sfn -- ${quote(undo.target ?? '')} ${p}`, own ? `chown -h ${quote(own)} -- ${p}` : ''].filter(Boolean).join(' && '),
      `relinking ${undo.path}`,
    );
  }
  const own = chownSpec(undo.owner, undo.group);
  const cmds = [undo.mode !== undefined ? `chmod ${fmtMode(undo.mode)} -- ${p}` : '', own ? `chown ${quote(own)} -- ${p}` : ''];
  return run(ctx, cmds.filter(Boolean).join(' && ') || 'true', `restoring metadata of ${undo.path}`);
}
