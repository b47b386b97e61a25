import { flag } from '../accounts.js';
import { z } from 'zod';
import { pathStepParts, type FileUndo, type PathState } from '../file-state.js';
import { HIDDEN_OLD, type Plan, type PlanEnv, type StepType } from '../step.js';
import { modeSchema } from '../modes.js';
import { absolutePath, ownerName } from '../paths.js';
import { applyTextEdit, eolOf, joinLines as join, lastMatch, type Line, planTextEdit, regexSchema as regex, splitLines as split, type TextEditor } from '../text-edit.js';

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
    create: flag.default(false),
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
  const lastIndex = (re: RegExp) => lastMatch(lines, re);
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
  const eol = eolOf(lines);
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

const editor: TextEditor<LineParams> = {
  type: 'line',
  whenAbsent(p) {
    if (p.state === 'absent') return { text: null, what: `${p.path} does not exist` };
    if (p.create) return { text: `${p.line}\n`, what: `create ${p.path} with ${show(p.line!)}` };
    const pending = p.match !== undefined ? `set the line matching /${p.match}/ to ${show(p.line!)}` : `add ${show(p.line!)}`;
    return { pending, missing: `${p.path} does not exist; set create: true to create it` };
  },
  edit: editLines,
};

export function planLine(p: LineParams, s: PathState, env: PlanEnv): Plan<FileUndo> {
  return planTextEdit(editor, p, s, env);
}

export const lineStep: StepType<LineParams, PathState, FileUndo> = {
  type: 'line',
  schema: lineSchema,
  ...pathStepParts<LineParams>((p) => p.path),
  plan: planLine,
  // A file that did not exist when planned (an earlier step was to create it) still must now.
  apply: (ctx, p, plan, s) => applyTextEdit(editor, ctx, p, plan, s),
};
