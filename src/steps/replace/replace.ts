import { z } from 'zod';
import { pathStepParts, type FileUndo, type PathState } from '../file-state.js';
import { modeSchema } from '../modes.js';
import { absolutePath, ownerName } from '../paths.js';
import type { Plan, PlanEnv, StepType } from '../step.js';
import { applyTextEdit, type Edit, lineAt, planTextEdit, regexSchema, type TextEditor } from '../text-edit.js';

export const replaceSchema = z
  .object({
    path: absolutePath,
    /** Run over the whole text with the g and m flags: ^ and $ match at each line. */
    regexp: regexSchema,
    /** What each match becomes: $1, $<name>, $& and $$ as in JavaScript's String.replace. */
    replace: z.string().default(''),
    /** The region starts after the first match of this. */
    after: regexSchema.optional(),
    /** The region ends before the first match of this (that follows `after`'s). */
    before: regexSchema.optional(),
    mode: modeSchema.optional(),
    owner: ownerName('owner').optional(),
    group: ownerName('group').optional(),
  })
  .strict();

export type ReplaceParams = z.output<typeof replaceSchema>;

const re = (source: string, from = 0) => Object.assign(new RegExp(source, 'gm'), { lastIndex: from });

/**
 * The replacement of one match, as String.replace spells it ($$, $&, $`, $', $1…$99, $<name>):
 * worked out here so each match can be compared with what it becomes.
 */
export function expand(template: string, match: string, captures: Array<string | undefined>, offset: number, text: string, named?: Record<string, string | undefined>): string {
  return template.replace(/\$(\$|&|`|'|\d{1,2}|<[^>]*>)/g, (all, t: string) => {
    if (t === '$') return '$';
    if (t === '&') return match;
    if (t === '`') return text.slice(0, offset);
    if (t === "'") return text.slice(offset + match.length);
    if (t.startsWith('<')) return named ? (named[t.slice(1, -1)] ?? '') : all;
    // $nn when there are that many groups, else $n and the digit after it as text, else as is.
    const two = Number(t);
    if (t.length === 2 && two >= 1 && two <= captures.length) return captures[two - 1] ?? '';
    const one = Number(t[0]);
    if (one >= 1 && one <= captures.length) return (captures[one - 1] ?? '') + t.slice(1);
    return all;
  });
}

/** Where the replacing happens: the whole text, or the part of it `after` and `before` bound; null when they match nothing. */
function region(text: string, p: ReplaceParams): { from: number; to: number; where: string } | null {
  let from = 0;
  let to = text.length;
  const bounds: string[] = [];
  if (p.after !== undefined) {
    const m = re(p.after).exec(text);
    if (!m) return null;
    from = m.index + m[0].length;
    bounds.push(`after line ${lineAt(text, m.index)}`);
  }
  if (p.before !== undefined) {
    const m = re(p.before, from).exec(text);
    if (!m) return null;
    to = m.index;
    bounds.push(`before line ${lineAt(text, m.index)}`);
  }
  return { from, to, where: bounds.length ? ` ${bounds.join(' and ')}` : '' };
}

const plural = (n: number, one: string, many = `${one}es`) => `${n} ${n === 1 ? one : many}`;

function lineList(lines: number[]): string {
  const uniq = [...new Set(lines)];
  const shown = uniq.slice(0, 8).join(', ');
  return `${uniq.length === 1 ? 'line' : 'lines'} ${shown}${uniq.length > 8 ? ` and ${uniq.length - 8} more` : ''}`;
}

/** The edited text and what was done; text is null when nothing matches or every match already reads as wanted. */
export function editReplace(text: string, p: ReplaceParams): Edit {
  const what = `/${p.regexp}/`;
  const r = region(text, p);
  if (!r) {
    const missing = [p.after !== undefined ? `after /${p.after}/` : '', p.before !== undefined ? `before /${p.before}/` : ''].filter(Boolean).join(' / ');
    return { text: null, what: `no region to replace in: ${missing} matches nothing` };
  }
  const part = text.slice(r.from, r.to);
  let matches = 0;
  const changed: number[] = [];
  const out = part.replace(re(p.regexp), (...args: unknown[]) => {
    // (match, ...captures, offset, text[, groups]): groups is there only when the regex names some.
    const named = typeof args.at(-1) === 'object' ? (args.pop() as Record<string, string | undefined> | undefined) : undefined;
    const whole = args.pop() as string;
    const offset = args.pop() as number;
    const [match, ...captures] = args as [string, ...Array<string | undefined>];
    const sub = expand(p.replace, match, captures, offset, whole, named);
    matches++;
    if (sub !== match) changed.push(lineAt(text, r.from + offset));
    return sub;
  });
  if (!matches) return { text: null, what: `nothing matches ${what}${r.where}` };
  // Line numbers, never the matched text: the old text may hold a secret no mask knows.
  if (!changed.length) return { text: null, what: `${plural(matches, 'match')} of ${what}${r.where} already read as wanted` };
  return { text: text.slice(0, r.from) + out + text.slice(r.to), what: `replace ${plural(changed.length, 'match')} of ${what}${r.where} (${lineList(changed)})` };
}

const editor: TextEditor<ReplaceParams> = {
  type: 'replace',
  // Nothing to replace in a file that is not there, but an earlier step (a package) may bring it.
  whenAbsent: (p) => ({ pending: `replace what matches /${p.regexp}/`, missing: `${p.path} does not exist; replace edits an existing file` }),
  edit: (text, p) => editReplace(text, p),
};

export function planReplace(p: ReplaceParams, s: PathState, env: PlanEnv): Plan<FileUndo> {
  return planTextEdit(editor, p, s, env);
}

export const replaceStep: StepType<ReplaceParams, PathState, FileUndo> = {
  type: 'replace',
  schema: replaceSchema,
  ...pathStepParts<ReplaceParams>((p) => p.path),
  plan: planReplace,
  apply: (ctx, p, plan, s) => applyTextEdit(editor, ctx, p, plan, s),
};
