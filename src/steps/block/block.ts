import { flag } from '../accounts.js';
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { pathStepParts, type FileUndo, type PathState } from '../file-state.js';
import { modeSchema } from '../modes.js';
import { absolutePath, ownerName } from '../paths.js';
import type { Plan, PlanEnv, StepType } from '../step.js';
import { applyTextEdit, type Edit, eolOf, joinLines, lastMatch, type Line, planTextEdit, regexSchema, splitLines, type TextEditor } from '../text-edit.js';

/** Where a block goes when its markers are not in the file: after/before the last line matching a regex, or at an end. */
const place = z.union([z.literal('EOF'), z.literal('BOF'), regexSchema]);

const singleLine = (what: string) => z.string().refine((s) => !/[\r\n]/.test(s), `${what} must be a single line (no newline)`);

export const blockSchema = z
  .object({
    path: absolutePath,
    /** The lines between the markers; one final newline is not a line of its own (YAML's `|`). */
    block: z.string().optional(),
    /** A line with {mark} in it, which becomes BEGIN and END. */
    marker: singleLine('marker')
      .refine((s) => s.includes('{mark}'), 'marker must hold {mark} (it becomes BEGIN and END, so the two markers differ)')
      .optional(),
    /** The name in the default marker (default: the step's name). */
    name: singleLine('name').pipe(z.string().min(1)).optional(),
    state: z.enum(['present', 'absent']).default('present'),
    insertafter: place.optional(),
    insertbefore: place.optional(),
    create: flag.default(false),
    mode: modeSchema.optional(),
    owner: ownerName('owner').optional(),
    group: ownerName('group').optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, message, path: [path] });
    if (p.state === 'present' && p.block === undefined) issue('block', 'block is required with state: present');
    if (p.state === 'absent' && p.block !== undefined) issue('block', 'block is only for state: present (absent removes the markers and what is between them)');
    if (p.insertafter !== undefined && p.insertbefore !== undefined) issue('insertbefore', 'give insertafter or insertbefore, not both');
    if (p.state === 'absent' && p.insertafter !== undefined) issue('insertafter', 'insertafter is only for state: present');
    if (p.state === 'absent' && p.insertbefore !== undefined) issue('insertbefore', 'insertbefore is only for state: present');
    if (p.state === 'absent' && p.create) issue('create', 'create is only for state: present');
    if (p.marker !== undefined && p.name !== undefined) issue('name', 'name only goes into the default marker: give marker or name, not both');
  });

export type BlockParams = z.output<typeof blockSchema>;

/** The params with the step's name, which the default marker holds (a type sees it in its env or context, not its params). */
type Named = BlockParams & { step: string };

/** The BEGIN and END marker lines of the step's block. */
export function markersOf(p: Named): { begin: string; end: string } {
  const marker = p.marker ?? `# {mark} MANAGED BY hostsmith: ${p.name ?? p.step}`;
  // A step name is free text: a newline in it would make a marker two lines, never found again.
  if (/[\r\n]/.test(marker)) throw new StepError(`the block's marker ${JSON.stringify(marker)} is more than one line; give a one-line name or marker`);
  return { begin: marker.replaceAll('{mark}', 'BEGIN'), end: marker.replaceAll('{mark}', 'END') };
}

/** The block's lines: one final newline ends the last line rather than adding an empty one. */
function blockLines(block: string): string[] {
  if (block === '') return [];
  return block.replace(/\r?\n$/, '').split(/\r?\n/);
}

const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;

/** Where the markers are: both found, the END after the BEGIN, or none; anything else is refused. */
function findBlock(lines: Line[], begin: string, end: string, path: string): { from: number; to: number } | null {
  const b = lines.findIndex((l) => l.text === begin);
  const e = b < 0 ? lines.findIndex((l) => l.text === end) : lines.findIndex((l, i) => i > b && l.text === end);
  if (b < 0 && e < 0) return null;
  // Half a block is a file edited by hand (or by something else): which lines are ours is a guess.
  if (b < 0) throw new StepError(`${path}: line ${e + 1} is the block's END marker ${JSON.stringify(end)} with no BEGIN marker before it; fix the file by hand`);
  if (e < 0) throw new StepError(`${path}: line ${b + 1} is the block's BEGIN marker ${JSON.stringify(begin)} with no END marker after it; fix the file by hand`);
  return { from: b, to: e };
}

/** The edited text and what was done; text is null when the file already is as wanted. */
export function editBlock(text: string, p: Named): Edit {
  const { begin, end } = markersOf(p);
  const lines = splitLines(text);
  const found = findBlock(lines, begin, end, p.path);
  const name = JSON.stringify(begin);
  const span = (f: { from: number; to: number }) => `lines ${f.from + 1}–${f.to + 1}`;
  if (p.state === 'absent') {
    if (!found) return { text: null, what: `no block ${name}` };
    lines.splice(found.from, found.to - found.from + 1);
    return { text: joinLines(lines), what: `remove block ${name} at ${span(found)} (${plural(found.to - found.from - 1, 'line')} and its markers)` };
  }
  const body = blockLines(p.block ?? '');
  const inner = [begin, ...body, end];
  if (inner.slice(1, -1).some((l) => l === begin || l === end)) throw new StepError(`the block holds its own marker line; it could not be found again`);
  const eol = eolOf(lines);
  if (found) {
    const now = lines.slice(found.from, found.to + 1).map((l) => l.text);
    if (now.length === inner.length && now.every((t, i) => t === inner[i])) return { text: null, what: `block ${name} at ${span(found)} is as wanted` };
    // The END marker keeps its own line end: a file that ended without a newline still does.
    const last = lines[found.to]!.eol;
    const fresh = inner.map((t, i) => ({ text: t, eol: i === inner.length - 1 ? last : eol }));
    lines.splice(found.from, found.to - found.from + 1, ...fresh);
    return { text: joinLines(lines), what: `replace block ${name} at ${span(found)} (${plural(found.to - found.from - 1, 'line')} → ${plural(body.length, 'line')})` };
  }
  let at = lines.length;
  let where = 'at the end';
  const anchor = p.insertafter ?? p.insertbefore;
  if (p.insertbefore === 'BOF') [at, where] = [0, 'at the beginning'];
  else if (anchor !== undefined && anchor !== 'EOF') {
    const k = lastMatch(lines, new RegExp(anchor));
    if (k < 0) where = `at the end (no line matches /${anchor}/)`;
    else if (p.insertafter !== undefined) [at, where] = [k + 1, `after line ${k + 1}`];
    else [at, where] = [k, `before line ${k + 1}`];
  }
  if (at === lines.length && at > 0 && lines[at - 1]!.eol === '') lines[at - 1]!.eol = eol;
  lines.splice(at, 0, ...inner.map((t) => ({ text: t, eol })));
  return { text: joinLines(lines), what: `add block ${name} (${plural(body.length, 'line')}) ${where}` };
}

const editor: TextEditor<Named> = {
  type: 'block',
  whenAbsent(p) {
    if (p.state === 'absent') return { text: null, what: `${p.path} does not exist` };
    const { begin } = markersOf(p);
    const n = plural(blockLines(p.block ?? '').length, 'line');
    if (p.create) return { text: editBlock('', p).text, what: `create ${p.path} with block ${JSON.stringify(begin)} (${n})` };
    return { pending: `add block ${JSON.stringify(begin)} (${n})`, missing: `${p.path} does not exist; set create: true to create it` };
  },
  // The summary names lines and counts, never old text: nothing there can quote a secret.
  edit: (text, p) => editBlock(text, p),
};

export function planBlock(p: BlockParams, s: PathState, env: PlanEnv): Plan<FileUndo> {
  return planTextEdit(editor, { ...p, step: env.step }, s, env);
}

export const blockStep: StepType<BlockParams, PathState, FileUndo> = {
  type: 'block',
  schema: blockSchema,
  ...pathStepParts<BlockParams>((p) => p.path),
  plan: planBlock,
  apply: (ctx, p, plan, s) => applyTextEdit(editor, ctx, { ...p, step: ctx.step }, plan, s),
};
