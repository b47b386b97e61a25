/**
 * Writes the JSON Schema of recipe files (schema/recipe.schema.json) from the zod schemas the
 * recipe loader checks recipes with, so editors (the `# yaml-language-server: $schema=…` line at
 * the top of each example recipe) check and complete what hostsmith itself accepts:
 * `npm run recipe-schema`. A test checks the shipped file is what this makes, and that the
 * schema and the loader agree on the examples and on broken recipes.
 *
 * What the loader checks beyond its zod schemas (template syntax and names, var declarations,
 * needs/notify targets, cron schedules, refinements across fields) is not in the JSON Schema.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { ignoreOverride, zodToJsonSchema, type Refs } from 'zod-to-json-schema';
import { DURATION_HINT } from '../../src/duration.js';
import { includeSchema, RECIPE_NAME, recipeSchema, retrySchema, stepCommonSchema } from '../../src/recipe/schema.js';
import { CUSTOM_TYPE_NAME } from '../../src/steps/define.js';
import { stepTypes } from '../../src/steps/registry.js';
import { inventorySchema } from '../../src/transport/targets.js';

export const SCHEMA_DIR = fileURLToPath(new URL('../../schema/', import.meta.url));
export const RECIPE_SCHEMA_FILE = join(SCHEMA_DIR, 'recipe.schema.json');

type Json = Record<string, unknown>;

const ref = (name: string): Json => ({ $ref: `#/definitions/${name}` });
const isMap = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

// ---- the loader's preprocessing and transforms, which zod-to-json-schema cannot see through ----

/** A zod schema's def, reached through `.optional()` / `.nullable()`. */
const unwrapped = (s: z.ZodTypeAny): z.ZodTypeDef => {
  while (s instanceof z.ZodOptional || s instanceof z.ZodNullable) s = s.unwrap();
  return s._def;
};

/**
 * The nodes whose JSON Schema is not the zod schema's input as zod-to-json-schema reads it: a
 * z.preprocess widens what is accepted (`retry: 3`, `needs: one-step`, `when: true`), a refinement
 * narrows it (the recipe name), and `steps`/`handlers` are checked one by one by the loader.
 */
function knownNodes(): Map<z.ZodTypeDef, () => Json> {
  const step = stepCommonSchema.shape;
  return new Map<z.ZodTypeDef, () => Json>([
    [unwrapped(recipeSchema.shape.name), () => ({ type: 'string', pattern: RECIPE_NAME.source })],
    // Steps of the recipe's own types (`customStep`) only where the recipe has `types:` (see WITHOUT_TYPES).
    [unwrapped(recipeSchema.shape.steps), () => ({ type: 'array', items: { anyOf: [ref('step'), ref('include'), ref('customStep')] } })],
    [unwrapped(recipeSchema.shape.handlers), () => ({ type: 'array', items: { anyOf: [ref('step'), ref('customStep')] } })],
    [retrySchema._def, () => ref('retry')],
    [unwrapped(step.when), () => ({ type: ['string', 'boolean'] })],
    [unwrapped(step.needs), () => ref('stepNames')],
    [unwrapped(step.notify), () => ref('stepNames')],
  ]);
}

/** A transform of any value into milliseconds (`duration(...)` in src/recipe/schema.ts), told by what it does. */
function durationKind(def: z.ZodTypeDef): 'duration' | 'durationOrZero' | undefined {
  const s = new z.ZodEffects(def as z.ZodEffectsDef);
  const ms = (v: unknown) => {
    const r = s.safeParse(v);
    return r.success ? r.data : undefined;
  };
  if (ms('1h30m') !== 5_400_000 || ms('2s') !== 2000 || ms(1.5) !== 1500) return undefined;
  return ms(0) === 0 ? 'durationOrZero' : 'duration';
}

function override(def: z.ZodTypeDef, refs: Refs): Json | typeof ignoreOverride {
  const d = def as z.ZodTypeDef & { typeName?: string; description?: string };
  const described = (j: Json): Json => (d.description ? { ...j, description: d.description } : j);
  const known = KNOWN.get(def);
  if (known) return described(known());
  if (d.typeName === z.ZodFirstPartyTypeKind.ZodEffects) {
    const e = def as z.ZodEffectsDef;
    if (e.effect.type === 'preprocess') {
      throw new Error(
        `${refs.currentPath.join('/')}: a z.preprocess widens what this field accepts, and the generator cannot see how; ` + 'say what it accepts in knownNodes() of test/tools/recipe-schema.ts',
      );
    }
    if ((e.schema._def as { typeName?: string }).typeName === z.ZodFirstPartyTypeKind.ZodUnknown) {
      const kind = durationKind(def);
      if (kind) return described(ref(kind));
    }
  }
  return ignoreOverride;
}

const KNOWN = knownNodes();

/** A zod schema as JSON Schema (draft-07), the loader's own reading of it, no $schema of its own. */
function convert(schema: z.ZodTypeAny): Json {
  const { $schema: _, ...json } = zodToJsonSchema(schema, { $refStrategy: 'none', pipeStrategy: 'input', effectStrategy: 'input', override }) as Json;
  return json;
}

// ---- templates in step params ----

/** A string holding a Handlebars expression. */
const TEMPLATE: Json = {
  type: 'string',
  pattern: '\\{\\{',
  description: 'A Handlebars template ({{…}}): the loader checks its syntax and names, the field itself is checked once it is rendered on the host',
};

const META = ['description', 'markdownDescription', 'title', 'default'];

/** Whether `s` lets every templated string through already. */
function acceptsTemplates(s: Json): boolean {
  if (Array.isArray(s.anyOf)) return s.anyOf.some((b) => isMap(b) && acceptsTemplates(b));
  if (s.$ref === ref('templated').$ref) return true;
  const types = s.type === undefined ? undefined : ([] as unknown[]).concat(s.type);
  if (types === undefined && s.enum === undefined && s.const === undefined) return true; // anything
  if (!types?.includes('string')) return false;
  return !['pattern', 'format', 'enum', 'const', 'maxLength'].some((k) => k in s) && !((s.minLength as number) > 2);
}

/** Only maps or lists: a template renders to a string, never to one of those. */
function containerOnly(s: Json): boolean {
  if (Array.isArray(s.anyOf)) return s.anyOf.every((b) => isMap(b) && containerOnly(b));
  const types = s.type === undefined ? [] : ([] as unknown[]).concat(s.type);
  return types.length > 0 && types.every((t) => t === 'object' || t === 'array');
}

/** The same node, with each field below it opened to templates. */
function withTemplatesBelow(s: Json): Json {
  const out: Json = { ...s };
  if (isMap(out.properties)) out.properties = Object.fromEntries(Object.entries(out.properties).map(([k, v]) => [k, templatable(v as Json)]));
  if (isMap(out.additionalProperties)) out.additionalProperties = templatable(out.additionalProperties);
  if (isMap(out.items)) out.items = templatable(out.items);
  if (Array.isArray(out.anyOf)) out.anyOf = out.anyOf.map((b) => withTemplatesBelow(b as Json));
  return out;
}

/**
 * A params field where the loader also takes a template: it skips a field's zod issue when the
 * value there is a string holding `{{` (a number, a boolean, an enum, a pattern… can only be
 * judged once rendered), see Loader.step in src/recipe/load.ts.
 */
function templatable(node: Json): Json {
  const s = withTemplatesBelow(node);
  if (acceptsTemplates(s) || containerOnly(s)) return s;
  const meta = Object.fromEntries(META.filter((k) => k in s).map((k) => [k, s[k]]));
  const rest = Object.fromEntries(Object.entries(s).filter(([k]) => !META.includes(k)));
  if (Array.isArray(s.anyOf) && Object.keys(rest).length === 1) return { ...meta, anyOf: [...s.anyOf, ref('templated')] };
  return { ...meta, anyOf: [rest, ref('templated')] };
}

// ---- the recipe ----

/**
 * A step of a custom type: the schema cannot know the types a recipe's modules give, nor their
 * params, so it takes any one key that is not a built-in type's (or `include`) beside the common
 * keys, and leaves the params to the loader (which checks them with the type's own zod schema).
 */
function customStep(builtins: string[], commonProps: Json, commonRequired: string[]): Json {
  const common = Object.keys(commonProps);
  return {
    description:
      "A step of a custom type from the recipe's `types:` modules: a name, the keys every step may have, and the type's key (its params are checked by the loader, with the type's own schema)",
    type: 'object',
    properties: commonProps,
    required: commonRequired,
    // At least one key beyond the common ones (the type's), and no built-in type key among them.
    not: { propertyNames: { enum: common } },
    propertyNames: { anyOf: [{ enum: common }, { pattern: CUSTOM_TYPE_NAME.source, not: { enum: [...builtins, 'include'] } }] },
  };
}

/** A recipe without `types:` has only built-in steps: its `steps` and `handlers` are held to them. */
const WITHOUT_TYPES: Json = {
  if: { properties: { types: { type: 'array', minItems: 1 } }, required: ['types'] },
  else: {
    properties: {
      steps: { type: 'array', items: { anyOf: [ref('step'), ref('include')] } },
      handlers: { anyOf: [{ type: 'null' }, { type: 'array', items: ref('step') }] },
    },
  },
};

const paramsName = (type: string) => `${type}Params`;

export function recipeJsonSchema(): string {
  const types = Object.keys(stepTypes);
  const common = convert(stepCommonSchema);
  const commonProps = common.properties as Json;
  const commonRequired = (common.required as string[] | undefined) ?? [];

  const branch = (type: string): Json => ({
    type: 'object',
    title: `${type} step`,
    properties: { ...commonProps, [type]: ref(paramsName(type)) },
    required: [...commonRequired, type],
    additionalProperties: false,
  });

  const retryObject = (retrySchema._def as z.ZodEffectsDef).schema;
  const definitions: Json = {
    step: {
      description: `A step (or handler): a name, the keys every step may have (${Object.keys(commonProps)
        .filter((k) => k !== 'name')
        .join(', ')}), and exactly one step type key: ${types.join(', ')}`,
      oneOf: types.map(branch),
    },
    customStep: customStep(types, commonProps, commonRequired),
    include: { description: "Another recipe's steps and handlers, run here; its step names get its recipe name as prefix", ...convert(includeSchema) },
    ...Object.fromEntries(types.map((t) => [paramsName(t), withTemplatesBelow(convert(stepTypes[t]!.schema))])),
    retry: {
      description: 'Try the step again when it fails: a number of attempts, or attempts, delay and backoff',
      anyOf: [{ type: 'integer', minimum: 1, description: 'short for { attempts: n }' }, convert(retryObject)],
    },
    stepNames: {
      description: 'A step name, or a list of them',
      anyOf: [
        { type: 'string', minLength: 1 },
        { type: 'array', items: { type: 'string', minLength: 1 } },
      ],
    },
    duration: {
      description: `A duration of more than 0: ${DURATION_HINT}`,
      anyOf: [
        { type: 'number', exclusiveMinimum: 0 },
        { type: 'string', pattern: '^(?=.*[1-9])\\s*(\\d+(\\.\\d+)?|(\\d+(\\.\\d+)?(ms|s|m|h|d))+)\\s*$' },
      ],
    },
    durationOrZero: {
      description: `A duration: ${DURATION_HINT}`,
      anyOf: [
        { type: 'number', minimum: 0 },
        { type: 'string', pattern: '^\\s*(\\d+(\\.\\d+)?|(\\d+(\\.\\d+)?(ms|s|m|h|d))+)\\s*$' },
      ],
    },
    templated: TEMPLATE,
  };

  const out = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://hostsmith.invalid/recipe.schema.json',
    title: 'hostsmith recipe',
    description: 'A hostsmith recipe: vars, steps and handlers. Generated from the schemas the loader checks recipes with (npm run recipe-schema).',
    ...convert(recipeSchema),
    ...WITHOUT_TYPES,
    definitions,
  };
  return JSON.stringify(out, null, 2) + '\n';
}

export const INVENTORY_SCHEMA_FILE = join(SCHEMA_DIR, 'inventory.schema.json');

/** The inventory, from the schema the loader checks inventories with. */
export function inventoryJsonSchema(): string {
  const out = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://hostsmith.invalid/inventory.schema.json',
    title: 'hostsmith inventory',
    description: 'Hosts, their groups and vars, and defaults for reaching them. Generated from the schema the loader checks inventories with (npm run recipe-schema).',
    ...convert(inventorySchema),
  };
  return JSON.stringify(out, null, 2) + '\n';
}

/** Every file under schema/ this tool writes, with its text. */
export function schemaFiles(): Record<string, string> {
  return { [RECIPE_SCHEMA_FILE]: recipeJsonSchema(), [INVENTORY_SCHEMA_FILE]: inventoryJsonSchema() };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const [file, text] of Object.entries(schemaFiles())) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
    process.stdout.write(`wrote ${file}\n`);
  }
}
