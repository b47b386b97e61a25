/**
 * What the step types that edit a text file in place (line, block, replace) share: reading the
 * file as text, its lines with their own line ends, the plan around an edit (metadata, diff, a
 * root-only backup in the undo, a file an earlier step has yet to create) and the apply, which
 * goes through applyPath like every path step. Each type brings only its edit of the text.
 */
import { z } from 'zod';
import { StepError } from '../errors.js';
import { unifiedDiff } from '../render/diff.js';
import { backupPath } from './backup.js';
import { applyPath, type FileUndo, type PathState } from './file-state.js';
import { fmtMode } from './modes.js';
import type { ApplyResult, Plan, PlanEnv, StepContext } from './step.js';

/** A JavaScript regular expression in params: one that does not compile is a schema error, at its field. */
export const regexSchema = z
  .string()
  .min(1)
  .superRefine((s, ctx) => {
    try {
      new RegExp(s);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid regular expression: ${(e as Error).message}` });
    }
  });

export interface Line {
  text: string;
  /** '\n', '\r\n', or '' for a last line without a newline. */
  eol: string;
}

export function splitLines(s: string): Line[] {
  const out: Line[] = [];
  for (let i = 0; i < s.length; ) {
    const j = s.indexOf('\n', i);
    if (j < 0) {
      out.push({ text: s.slice(i), eol: '' });
      break;
    }
    const raw = s.slice(i, j);
    out.push(raw.endsWith('\r') ? { text: raw.slice(0, -1), eol: '\r\n' } : { text: raw, eol: '\n' });
    i = j + 1;
  }
  return out;
}

export const joinLines = (lines: Line[]) => lines.map((l) => l.text + l.eol).join('');

/** The line end new lines get: the file's own (its first line's), '\n' for an empty file. */
export const eolOf = (lines: Line[]) => (lines[0]?.eol === '\r\n' ? '\r\n' : '\n');

/** The index of the last line matching `re`, or -1. */
export function lastMatch(lines: Line[], re: RegExp): number {
  for (let i = lines.length - 1; i >= 0; i--) if (re.test(lines[i]!.text)) return i;
  return -1;
}

/** The 1-based line of the character at `offset` in `text`. */
export function lineAt(text: string, offset: number): number {
  let n = 1;
  for (let i = text.indexOf('\n'); i >= 0 && i < offset; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

// ignoreBOM keeps a byte-order mark in the text: host content is shown and written back byte for byte.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function textOf(path: string, content: Buffer, type: string): string {
  try {
    if (content.includes(0)) throw new Error('NUL byte');
    return utf8.decode(content);
  } catch {
    throw new StepError(`${path} is not a text file (not UTF-8, or it has NUL bytes); ${type} edits only text files`);
  }
}

/** The params every text edit shares: the file, and the metadata it must have. */
export interface TextParams {
  path: string;
  mode?: number;
  owner?: string;
  group?: string;
}

/** An edit's outcome: the new text, or null when the text already is as wanted; `what` says which. */
export interface Edit {
  text: string | null;
  what: string;
}

/** One step type's edit of a text file. */
export interface TextEditor<P extends TextParams> {
  /** The step type, named in errors ("line edits only text files"). */
  type: string;
  /**
   * The file does not exist: create it with `text` (`what` says so), leave it (`text` null), or
   * wait for an earlier step to create it (`pending`: the edit in words; `missing`: apply's error
   * when it is still not there at the step's turn).
   */
  whenAbsent(p: P): Edit | { pending: string; missing: string };
  /** The edit of the file's text; `sensitive`: quote nothing of the old text. */
  edit(text: string, p: P, o: { sensitive?: boolean }): Edit;
}

/** The new content of the file, or null when it is as wanted; throws when it cannot be edited. */
function wanted<P extends TextParams>(t: TextEditor<P>, p: P, s: PathState, sensitive = false): { content: string | null; what: string } {
  if (s.kind === 'link') throw new StepError(`${p.path} is a symlink to ${s.target}; give the real file as path`);
  if (s.kind === 'directory' || s.kind === 'other') throw new StepError(`${p.path} is a ${s.kind === 'other' ? 'special file' : 'directory'}, not a regular file`);
  if (s.kind === 'absent') {
    const a = t.whenAbsent(p);
    if ('pending' in a) throw new StepError(a.missing);
    return { content: a.text, what: a.what };
  }
  const r = t.edit(textOf(p.path, s.content ?? Buffer.alloc(0), t.type), p, { sensitive });
  return { content: r.text, what: `${p.path}: ${r.what}` };
}

function metaChanges(p: TextParams, s: PathState): string[] {
  if (s.kind !== 'file') return [];
  const out: string[] = [];
  if (p.mode !== undefined && p.mode !== s.mode) out.push(`mode ${fmtMode(s.mode)} → ${fmtMode(p.mode)}`);
  if (p.owner !== undefined && p.owner !== s.owner) out.push(`owner ${s.owner} → ${p.owner}`);
  if (p.group !== undefined && p.group !== s.group) out.push(`group ${s.group} → ${p.group}`);
  return out;
}

/** The pure plan of a text edit, from the file as read. */
export function planTextEdit<P extends TextParams>(t: TextEditor<P>, p: P, s: PathState, env: PlanEnv): Plan<FileUndo> {
  if (s.kind === 'absent') {
    const a = t.whenAbsent(p);
    if ('pending' in a) {
      // As `service` does for a service not installed yet: an earlier step (a package) may create
      // the file, which a dry run cannot see. apply checks again and fails if it is still missing.
      return {
        changed: true,
        summary: `${p.path} does not exist yet: will ${a.pending} once an earlier step creates it (apply fails if none does)`,
        // The backup copy holds content, mode and owner, so this undo is enough on its own.
        undo: { kind: 'file', path: p.path, backup: backupPath(env, p.path) },
      };
    }
  }
  const w = wanted(t, p, s, env.sensitive);
  const meta = metaChanges(p, s);
  if (w.content === null && meta.length && s.kind === 'file') {
    return { changed: true, summary: `${p.path}: ${meta.join(', ')}`, undo: { kind: 'file', path: p.path, mode: s.mode, owner: s.owner, group: s.group } };
  }
  if (w.content === null) return { changed: false, summary: w.what, undo: null };
  if (meta.length) w.what += `; ${meta.join(', ')}`;
  const diff = unifiedDiff(p.path, s.kind === 'file' ? (s.content ?? Buffer.alloc(0)) : null, w.content);
  // The undo names a root-only backup on the host, never the content (it may hold secrets).
  const undo: FileUndo =
    s.kind === 'absent' ? { kind: 'absent', path: p.path, created: s.missing } : { kind: 'file', path: p.path, mode: s.mode, owner: s.owner, group: s.group, backup: backupPath(env, p.path) };
  return { changed: true, action: s.kind === 'absent' ? 'create' : 'change', summary: w.what, diff, undo };
}

/** Makes the edit on the file as read at the step's turn (an earlier step may have created it since the plan). */
export async function applyTextEdit<P extends TextParams>(t: TextEditor<P>, ctx: StepContext, p: P, plan: Plan<FileUndo>, s: PathState): Promise<ApplyResult> {
  const w = wanted(t, p, s);
  const content = w.content !== null ? Buffer.from(w.content, 'utf8') : (s.content ?? Buffer.alloc(0));
  return { state: await applyPath(ctx, { path: p.path, state: 'present', content, mode: p.mode, owner: p.owner, group: p.group }, plan, s) };
}
