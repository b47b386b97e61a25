import { z } from 'zod';
import { StepError } from '../../errors.js';
import { unifiedDiff } from '../../render/diff.js';
import { backupPath } from '../backup.js';
import { applyPath, pathStepParts, type FileUndo, type PathState } from '../file-state.js';
import { HIDDEN_OLD, type Plan, type PlanEnv, type StepType } from '../step.js';
import { fmtMode, modeSchema } from '../modes.js';
import { absolutePath, ownerName } from '../paths.js';

const regex = z
  .string()
  .min(1)
  .superRefine((s, ctx) => {
    try {
      new RegExp(s);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid regular expression: ${(e as Error).message}` });
    }
  });

export const lineSchema = z
  .object({
    path: absolutePath,
    line: z
      .string()
      .refine((s) => !/[\r\n]/.test(s), 'line must be a single line (no newline)')
      .optional(),
    match: regex.optional(),
    state: z.enum(['present', 'absent']).default('present'),
    after: regex.optional(),
    create: z.boolean().default(false),
    /** Metadata the file must have, as with `file` (e.g. 0440 for /etc/sudoers.d). */
    mode: modeSchema.optional(),
    owner: ownerName('owner').optional(),
    group: ownerName('group').optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, message, path: [path] });
    if (p.state === 'present' && p.line === undefined) issue('line', 'line is required with state: present');
    if (p.state === 'absent' && p.line === undefined && p.match === undefined) issue('line', 'state: absent needs line or match (the lines to remove)');
    if (p.state === 'absent' && p.after !== undefined) issue('after', 'after is only for state: present');
    if (p.state === 'absent' && p.create) issue('create', 'create is only for state: present');
  });

export type LineParams = z.output<typeof lineSchema>;

interface Line {
  text: string;
  /** '\n', '\r\n', or '' for a last line without a newline. */
  eol: string;
}

function split(s: string): Line[] {
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

const join = (lines: Line[]) => lines.map((l) => l.text + l.eol).join('');
const show = (s: string) => JSON.stringify(s);

/** The edited text and what was done; text is null when the file already is as wanted. */
export function editLines(text: string, p: LineParams, o: { sensitive?: boolean } = {}): { text: string | null; what: string } {
  const lines = split(text);
  if (p.state === 'absent') {
    const re = p.match !== undefined ? new RegExp(p.match) : undefined;
    const hit = (l: Line) => (re ? re.test(l.text) : l.text === p.line);
    const which = re ? `matching /${p.match}/` : `equal to ${show(p.line!)}`;
    const kept = lines.filter((l) => !hit(l));
    const n = lines.length - kept.length;
    if (!n) return { text: null, what: `no line ${which}` };
    return { text: join(kept), what: `remove ${n} line${n > 1 ? 's' : ''} ${which}` };
  }
  const line = p.line!;
  const lastIndex = (re: RegExp) => {
    for (let i = lines.length - 1; i >= 0; i--) if (re.test(lines[i]!.text)) return i;
    return -1;
  };
  if (p.match !== undefined) {
    const i = lastIndex(new RegExp(p.match));
    if (i >= 0) {
      const old = lines[i]!;
      if (old.text === line) return { text: null, what: `line ${i + 1} is ${show(line)}` };
      lines[i] = { ...old, text: line };
      // The line read from the host may hold the secret's previous value, which no mask knows.
      return { text: join(lines), what: `replace line ${i + 1} ${o.sensitive ? HIDDEN_OLD : show(old.text)} with ${show(line)}` };
    }
  }
  // Without a match, a line that is already there is enough (as Ansible's lineinfile does).
  const same = lines.findIndex((l) => l.text === line);
  if (same >= 0) return { text: null, what: `line ${same + 1} is ${show(line)}` };
  const eol = lines[0]?.eol === '\r\n' ? '\r\n' : '\n';
  let at = lines.length;
  let where = 'at the end';
  if (p.after !== undefined) {
    const k = lastIndex(new RegExp(p.after));
    if (k >= 0) {
      at = k + 1;
      where = `after line ${k + 1}`;
    } else where = `at the end (no line matches /${p.after}/)`;
  }
  if (at === lines.length && at > 0 && lines[at - 1]!.eol === '') lines[at - 1]!.eol = eol;
  lines.splice(at, 0, { text: line, eol });
  return { text: join(lines), what: `add ${show(line)} ${where}` };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function textOf(path: string, content: Buffer): string {
  try {
    if (content.includes(0)) throw new Error('NUL byte');
    return utf8.decode(content);
  } catch {
    throw new StepError(`${path} is not a text file (not UTF-8, or it has NUL bytes); line edits only text files`);
  }
}

/** The new content of the file, or null when it is as wanted; throws when it cannot be edited. */
function wanted(p: LineParams, s: PathState, sensitive = false): { content: string | null; what: string } {
  if (s.kind === 'link') throw new StepError(`${p.path} is a symlink to ${s.target}; give the real file as path`);
  if (s.kind === 'directory' || s.kind === 'other') throw new StepError(`${p.path} is a ${s.kind === 'other' ? 'special file' : 'directory'}, not a regular file`);
  if (s.kind === 'absent') {
    if (p.state === 'absent') return { content: null, what: `${p.path} does not exist` };
    if (!p.create) throw new StepError(`${p.path} does not exist; set create: true to create it`);
    return { content: `${p.line}\n`, what: `create ${p.path} with ${show(p.line!)}` };
  }
  const r = editLines(textOf(p.path, s.content ?? Buffer.alloc(0)), p, { sensitive });
  return { content: r.text, what: `${p.path}: ${r.what}` };
}

function metaChanges(p: LineParams, s: PathState): string[] {
  if (s.kind !== 'file') return [];
  const out: string[] = [];
  if (p.mode !== undefined && p.mode !== s.mode) out.push(`mode ${fmtMode(s.mode)} → ${fmtMode(p.mode)}`);
  if (p.owner !== undefined && p.owner !== s.owner) out.push(`owner ${s.owner} → ${p.owner}`);
  if (p.group !== undefined && p.group !== s.group) out.push(`group ${s.group} → ${p.group}`);
  return out;
}

export function planLine(p: LineParams, s: PathState, env: PlanEnv): Plan<FileUndo> {
  if (s.kind === 'absent' && p.state === 'present' && !p.create) {
    // As `service` does for a service not installed yet: an earlier step (a package) may create
    // the file, which a dry run cannot see. apply checks again and fails if it is still missing.
    const edit = p.match !== undefined ? `set the line matching /${p.match}/ to ${show(p.line!)}` : `add ${show(p.line!)}`;
    return {
      changed: true,
      summary: `${p.path} does not exist yet: will ${edit} once an earlier step creates it (apply fails if none does)`,
      // The backup copy holds content, mode and owner, so this undo is enough on its own.
      undo: { kind: 'file', path: p.path, backup: backupPath(env, p.path) },
    };
  }
  const w = wanted(p, s, env.sensitive);
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

export const lineStep: StepType<LineParams, PathState, FileUndo> = {
  type: 'line',
  schema: lineSchema,
  ...pathStepParts<LineParams>((p) => p.path),
  plan: planLine,
  async apply(ctx, p, plan, s) {
    // A file that did not exist when planned (an earlier step was to create it) still must now.
    const w = wanted(p, s);
    const content = w.content !== null ? Buffer.from(w.content, 'utf8') : (s.content ?? Buffer.alloc(0));
    return { state: await applyPath(ctx, { path: p.path, state: 'present', content, mode: p.mode, owner: p.owner, group: p.group }, plan, s) };
  },
};
