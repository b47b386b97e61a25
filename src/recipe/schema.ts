import { CronExpressionParser } from 'cron-parser';
import { z } from 'zod';
import { InputError } from '../errors.js';
import { suggestion } from '../render/template.js';
import { DURATION_HINT, parseDuration } from './duration.js';
import { yamlSource, type PathIssue, type PathSeg, type YamlSource } from '../yaml.js';

// YAML with positions lives in src/yaml.ts; re-exported for the recipe modules.
export { displayPath, formatPath, YamlSource, type LinePos, type PathIssue, type PathSeg } from '../yaml.js';

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
    /** Lockout protection (SPEC §12), as --confirm: how long the host waits for the run to confirm. */
    confirm: duration('positive').optional(),
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
    /** Shell commands run over a new SSH connection after the steps when lockout protection is on; each must exit 0. */
    verify: z.array(z.string().min(1)).nullable().optional(),
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
  // Asked once per cron step and host (each host's params are parsed): the answer depends on the text alone.
  if (cronAnswers.has(expr)) return cronAnswers.get(expr);
  const why = cronProblemOf(expr);
  if (cronAnswers.size >= 1000) cronAnswers.clear();
  cronAnswers.set(expr, why);
  return why;
}

const cronAnswers = new Map<string, string | undefined>();

function cronProblemOf(expr: string): string | undefined {
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
 * A whole YAML file checked against a schema (inventory, config): its value and source, or one
 * InputError with every problem at its file:line:col, the same way recipes report them.
 * `bytes` are the file as read: bad bytes are refused like YAML errors.
 */
export function parseYamlFile<T>(file: string, bytes: Uint8Array, schema: z.ZodType<T, z.ZodTypeDef, unknown>, what: string): { data: T; src: YamlSource } {
  const r0 = yamlSource(file, bytes, what);
  if ('issues' in r0) throw new InputError(r0.issues);
  const { src } = r0;
  const r = schema.safeParse(src.value ?? {});
  if (!r.success) throw new InputError(zodIssues(r.error, [], schema).map((i) => src.issue(i)));
  return { data: r.data, src };
}

/** parseYamlFile's value alone. */
export function validYaml<T>(file: string, bytes: Uint8Array, schema: z.ZodType<T, z.ZodTypeDef, unknown>, what: string): T {
  return parseYamlFile(file, bytes, schema, what).data;
}
