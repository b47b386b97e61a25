import { relative, isAbsolute } from 'node:path';
import { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import { InputError, type InputIssue } from '../errors.js';
import { suggestion } from '../render/template.js';
import { DURATION_HINT, parseDuration } from './duration.js';

// ---- problems located by a path into the YAML document ----

export type PathSeg = string | number;

/**
 * A problem at a path into a YAML value. `at` says which position to report: the value
 * itself, the key that holds it (unknown keys), or the map that lacks it (missing fields).
 */
export interface PathIssue {
  path: PathSeg[];
  message: string;
  at?: 'value' | 'key' | 'parent';
}

/** `steps[2].template.mode`; keys that are not plain words are quoted: `env["MY VAR"]`. */
export function formatPath(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** A file name for messages: relative to the working directory when it is below it. */
export function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

export interface LinePos {
  line: number;
  col: number;
}

/** A YAML file parsed with positions kept, so every problem can be reported as file:line:col. */
export class YamlSource {
  readonly doc: Document;
  readonly value: unknown;
  /** YAML syntax errors; when there are any, `value` is not worth validating. */
  readonly errors: InputIssue[];
  private readonly lines = new LineCounter();

  constructor(
    /** The file name as shown in messages. */
    readonly file: string,
    private readonly text: string,
  ) {
    this.doc = parseDocument(text, { lineCounter: this.lines, prettyErrors: false, merge: true, uniqueKeys: true });
    this.errors = this.doc.errors.map((e) => ({
      file,
      ...this.lines.linePos(e.pos[0]),
      message: `invalid YAML: ${e.message.split('\n')[0]}`,
    }));
    this.value = this.errors.length ? undefined : this.doc.toJS({ maxAliasCount: 1000 });
  }

  private resolve(n: unknown): unknown {
    return isAlias(n) ? n.resolve(this.doc) : n;
  }

  /** The deepest node along `path`, how many segments matched, and the key node that led to it. */
  private locate(path: readonly PathSeg[]): { node: YamlNode | null; key: YamlNode | null; depth: number } {
    let node = this.resolve(this.doc.contents) as YamlNode | null;
    let key: YamlNode | null = null;
    let depth = 0;
    for (const seg of path) {
      let next: unknown;
      let nextKey: YamlNode | null = null;
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && String(isScalar(p.key) ? p.key.value : p.key) === String(seg));
        if (!pair) break;
        next = pair.value;
        nextKey = pair.key as YamlNode;
      } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
        next = node.items[seg];
      } else break;
      depth++;
      key = nextKey;
      node = (this.resolve(next) as YamlNode | null) ?? null;
      if (!node) break;
    }
    return { node, key, depth };
  }

  private start(n: YamlNode | null | undefined): LinePos | undefined {
    return n?.range ? this.lines.linePos(n.range[0]) : undefined;
  }

  pos(path: readonly PathSeg[], at: PathIssue['at'] = 'value'): LinePos {
    if (at === 'parent') return this.pos(path.slice(0, -1), 'key');
    const { node, key, depth } = this.locate(path);
    const complete = depth === path.length;
    const first = complete && at === 'value' ? (this.start(node) ?? this.start(key)) : (this.start(key) ?? this.start(node));
    return first ?? { line: 1, col: 1 };
  }

  issue(p: PathIssue): InputIssue {
    return { file: this.file, ...this.pos(p.path, p.at), path: formatPath(p.path), message: p.message };
  }

  /**
   * Where a position inside a string value (1-based line, 0-based column, as Handlebars gives
   * them) is in the file. Exact for one-line plain/quoted strings and literal blocks (`|`);
   * otherwise the string's own start.
   */
  posInString(path: readonly PathSeg[], line: number, column: number): LinePos {
    const { node, depth } = this.locate(path);
    if (depth !== path.length || !isScalar(node) || !node.range || typeof node.value !== 'string') return this.pos(path);
    const src = this.text.slice(node.range[0], node.range[1]);
    const value = node.value;
    if (node.type === 'PLAIN' || node.type === 'QUOTE_SINGLE' || node.type === 'QUOTE_DOUBLE') {
      const quoted = node.type !== 'PLAIN';
      const raw = quoted ? src.slice(1, -1) : src;
      if (line === 1 && raw === value && !value.includes('\n')) return this.lines.linePos(node.range[0] + (quoted ? 1 : 0) + column);
    } else if (node.type === 'BLOCK_LITERAL') {
      const lines = src.split('\n');
      const content = lines.slice(1);
      const indent = Math.min(...content.filter((l) => l.trim()).map((l) => l.length - l.trimStart().length));
      if (line <= content.length && Number.isFinite(indent)) {
        let offset = node.range[0] + lines[0]!.length + 1;
        for (let i = 0; i < line - 1; i++) offset += content[i]!.length + 1;
        return this.lines.linePos(offset + indent + column);
      }
    }
    return this.pos(path);
  }
}

// ---- zod issues as PathIssues ----

const typeWords: Record<string, string> = { object: 'a map', array: 'a list', null: 'an empty value', integer: 'an integer' };
const word = (t: string) => typeWords[t] ?? t;

/** Unwraps optional/default/effects layers to reach the schema that shapes the value. */
function unwrap(s: z.ZodTypeAny): z.ZodTypeAny {
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap();
    else if (s instanceof z.ZodDefault) s = s.removeDefault();
    else if (s instanceof z.ZodEffects) s = s.innerType();
    else if (s instanceof z.ZodLazy) s = s.schema;
    else if (s instanceof z.ZodPipeline) s = s._def.in;
    else return s;
  }
}

/** The keys an object schema at `path` knows, when the schema is simple enough to tell. */
export function knownKeys(schema: z.ZodTypeAny | undefined, path: readonly PathSeg[]): string[] | undefined {
  let s = schema && unwrap(schema);
  for (const seg of path) {
    if (!s) return undefined;
    if (s instanceof z.ZodObject && typeof seg === 'string') s = (s.shape as Record<string, z.ZodTypeAny>)[seg];
    else if (s instanceof z.ZodArray) s = s.element;
    else if (s instanceof z.ZodRecord) s = s.valueSchema;
    else return undefined;
    s = s && unwrap(s);
  }
  return s instanceof z.ZodObject ? Object.keys(s.shape as object) : undefined;
}

export function unknownKeyMessage(key: string, known: readonly string[] | undefined): string {
  if (!known?.length) return `unknown key "${key}"`;
  const hint = suggestion(key, known);
  return `unknown key "${key}"${hint || ` (expected one of: ${known.join(', ')})`}`;
}

/** Maps zod issues to PathIssues under `base`, with messages written for recipe authors. */
export function zodIssues(error: z.ZodError, base: readonly PathSeg[], schema?: z.ZodTypeAny): PathIssue[] {
  return error.issues.flatMap((i) => mapIssue(i, base, schema));
}

function mapIssue(i: z.ZodIssue, base: readonly PathSeg[], schema?: z.ZodTypeAny): PathIssue[] {
  const path = [...base, ...i.path];
  switch (i.code) {
    case 'unrecognized_keys':
      return i.keys.map((k) => ({ path: [...path, k], at: 'key' as const, message: unknownKeyMessage(k, knownKeys(schema, i.path)) }));
    case 'invalid_type':
      if (i.received === 'undefined') return [{ path, at: 'parent', message: `missing required field "${String(path[path.length - 1])}"` }];
      return [{ path, message: `expected ${word(i.expected)}, got ${word(i.received)}` }];
    case 'invalid_union': {
      // The member whose own type matched explains the failure best; if none did, say what fits.
      const deeper = i.unionErrors.filter((e) => !e.issues.some((x) => x.code === 'invalid_type' && x.path.length === i.path.length));
      if (deeper.length) return zodIssues(deeper[0]!, base, schema);
      const expected = [...new Set(i.unionErrors.flatMap((e) => e.issues.map((x) => (x.code === 'invalid_type' ? word(x.expected) : ''))))].filter(Boolean);
      const got = i.unionErrors[0]?.issues.find((x) => x.code === 'invalid_type');
      return [{ path, message: `expected ${expected.join(' or ') || 'another value'}${got?.code === 'invalid_type' ? `, got ${word(got.received)}` : ''}` }];
    }
    case 'invalid_enum_value':
      return [{ path, message: `must be one of: ${i.options.join(', ')} (got ${JSON.stringify(i.received)})${suggestion(String(i.received), i.options.map(String))}` }];
    case 'too_small':
      if (i.type === 'string' && Number(i.minimum) === 1) return [{ path, message: 'must not be empty' }];
      if (i.type === 'array') return [{ path, message: `needs at least ${i.minimum} item${Number(i.minimum) === 1 ? '' : 's'}` }];
      if (i.type === 'number') return [{ path, message: `must be ${i.inclusive ? 'at least' : 'more than'} ${i.minimum}` }];
      return [{ path, message: i.message }];
    case 'too_big':
      if (i.type === 'number') return [{ path, message: `must be ${i.inclusive ? 'at most' : 'less than'} ${i.maximum}` }];
      return [{ path, message: i.message }];
    default:
      return [{ path, message: i.message }];
  }
}

// ---- the recipe's own structure (step params are checked by each step type's schema) ----

export const RECIPE_NAME = /^[a-z0-9][a-z0-9-]*$/;

const duration = (min: 'zero' | 'positive') =>
  z.unknown().transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined || (min === 'positive' && ms === 0)) {
      const why = ms === 0 ? 'must be more than 0' : `invalid duration ${JSON.stringify(v)} (${DURATION_HINT})`;
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
      return z.NEVER;
    }
    return ms;
  });

/** `retry: 3` is short for `retry: { attempts: 3 }`. */
export const retrySchema = z.preprocess(
  (v) => (typeof v === 'number' ? { attempts: v } : v),
  z
    .object({
      attempts: z.number().int().min(1).optional(),
      delay: duration('zero').optional(),
      backoff: z.number().min(1).optional(),
    })
    .strict(),
);

/** A step name or a list of them. */
const stepNames = z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(z.string().min(1)));

export const stepCommonSchema = z
  .object({
    name: z.string().min(1),
    when: z.preprocess((v) => (typeof v === 'boolean' ? String(v) : v), z.string()).optional(),
    unless: z.string().optional(),
    fatal: z.boolean().optional(),
    retry: retrySchema.optional(),
    timeout: duration('positive').optional(),
    needs: stepNames.optional(),
    notify: stepNames.optional(),
    sudo: z.boolean().optional(),
  })
  .strict();

export const STEP_COMMON_KEYS: readonly string[] = Object.keys(stepCommonSchema.shape);

export const includeSchema = z
  .object({
    include: z
      .object({
        recipe: z.string().min(1),
        vars: z.record(z.unknown()).nullable().optional(),
      })
      .strict(),
  })
  .strict();

export const defaultsSchema = z
  .object({
    timeout: duration('positive').optional(),
    retry: retrySchema.optional(),
    sudo: z.boolean().optional(),
    parallel: z.number().int().min(1).optional(),
  })
  .strict();

export const recipeSchema = z
  .object({
    name: z.string().superRefine((v, ctx) => {
      if (!RECIPE_NAME.test(v)) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: `"${v}" must match [a-z0-9][a-z0-9-]* (lowercase letters, digits and dashes)` });
      }
    }),
    description: z.string().optional(),
    sudo: z.boolean().optional(),
    vars: z.record(z.unknown()).nullable().optional(),
    steps: z.array(z.unknown()),
    handlers: z.array(z.unknown()).nullable().optional(),
    defaults: defaultsSchema.nullable().optional(),
  })
  .strict();

export type StepCommon = z.output<typeof stepCommonSchema>;
export type RecipeTop = z.output<typeof recipeSchema>;
export type RetryInput = z.output<typeof retrySchema>;

// ---- cron schedules ----

export const CRON_NAMES: readonly string[] = ['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@hourly'];
const CRON_FIELDS = ['minute', 'hour', 'day of month', 'month', 'day of week'];
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

/**
 * Why `expr` is not a crontab schedule, or undefined when it is one. cron-parser also accepts
 * seconds and Quartz extensions (L, W, #, ?, H) that crontab rejects, so those are refused first.
 */
export function cronProblem(expr: string): string | undefined {
  const s = expr.trim();
  if (s.startsWith('@')) {
    if (CRON_NAMES.includes(s)) return undefined;
    if (s === '@reboot') return '@reboot has no run times and is not supported; give a time schedule';
    return `unknown schedule "${s}" (use five fields or one of ${CRON_NAMES.join(', ')})`;
  }
  const fields = s.split(/\s+/);
  if (fields.length !== 5) return `a cron schedule has five fields (${CRON_FIELDS.join(', ')}), got ${fields.length}`;
  for (const [i, f] of fields.entries()) {
    const names = i === 3 ? MONTHS : i === 4 ? DAYS : [];
    const bad = /[^\dA-Za-z*,/-]/.exec(f)?.[0] ?? (f.match(/[A-Za-z]+/g) ?? []).find((w) => !names.includes(w.toLowerCase()));
    if (bad !== undefined) return `invalid cron schedule "${s}": "${bad}" is not allowed in the ${CRON_FIELDS[i]} field`;
  }
  try {
    CronExpressionParser.parse(s);
    return undefined;
  } catch (e) {
    return `invalid cron schedule "${s}": ${e instanceof Error ? e.message : String(e)}`;
  }
}

/**
 * A whole YAML file checked against a schema (inventory, config): its value, or one InputError
 * with every problem at its file:line:col, the same way recipes report them.
 */
export function validYaml<T>(file: string, text: string, schema: z.ZodType<T, z.ZodTypeDef, unknown>): T {
  const src = new YamlSource(file, text);
  if (src.errors.length) throw new InputError(src.errors);
  const r = schema.safeParse(src.value ?? {});
  if (!r.success) throw new InputError(zodIssues(r.error, [], schema).map((i) => src.issue(i)));
  return r.data;
}
