import { z } from 'zod';
import { DURATION_HINT, parseDuration } from '../duration.js';

// The schema checks every loader shares, and the cron step's own: re-exported for the recipe modules.
export { knownKeys, parseYamlFile, unknownKeyMessage, validYaml, zodIssues } from '../zod-issues.js';
export { CRON_NAMES, cronProblem } from '../steps/cron/schedule.js';

// YAML with positions lives in src/yaml.ts; re-exported for the recipe modules.
export { displayPath, formatPath, YamlSource, type LinePos, type PathIssue, type PathSeg } from '../yaml.js';

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
    /** What `hostsmith test` needs to know of this recipe beyond its steps. */
    test: z
      .object({
        /** More paths (absolute, a folder covers what is under it) whose changes are churn, not residue. */
        ignore: z.array(z.string().regex(/^\//, 'an ignored path is absolute (it starts with /)')).optional(),
        /** The kind of throwaway host the recipe needs: plain (sshd alone) or systemd (booted with systemd). */
        host: z.enum(['plain', 'systemd']).optional(),
        /** The throwaway hosts' network: private (the default: each its own, reaching the web through a proxy on this machine) or shared (this machine's). */
        net: z.enum(['shared', 'private']).optional(),
        /** How many sandbox hosts may run side by side: 1 for a recipe that takes a fixed port on every address on a shared network. */
        parallel: z.number().int().min(1).max(16).optional(),
      })
      .strict()
      .nullable()
      .optional()
      .describe('hostsmith test: more paths to leave out of the residue check, and the kind of sandbox host and network'),
    /** Modules of custom step types (relative to the recipe file), each exporting by default a step type or an array of them. */
    types: z
      .array(z.string().regex(/\.(ts|mts|cts|js|mjs|cjs)$/, 'a types module is a .ts, .mts, .cts, .js, .mjs or .cjs file'))
      .nullable()
      .optional()
      .describe('Modules of custom step types, relative to this recipe file (.ts or .js): each exports by default a step type made with defineStepType, or an array of them'),
  })
  .strict();

export type StepCommon = z.output<typeof stepCommonSchema>;
export type RecipeTop = z.output<typeof recipeSchema>;
export type RetryInput = z.output<typeof retrySchema>;
