/**
 * Zod's issues as positions and messages written for the people who wrote the YAML: recipes,
 * inventories and config files all report their problems this way.
 */
import { z } from 'zod';
import { InputError } from './errors.js';
import { suggestion } from './render/template.js';
import { yamlSource, type PathIssue, type PathSeg, type YamlSource } from './yaml.js';

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
