import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { errorMessage, InputError, type InputIssue } from '../errors.js';
import { HELPER_NAMES, SCOPE_ROOTS, suggestion } from '../render/template.js';
import { unknownKeyMessage } from './schema.js';
import { displayPath, placeOf, yamlSource, type PathIssue, type PathSeg, type YamlSource } from '../yaml.js';
import type { Recipe, VarSpec, VarType } from './types.js';

export const VAR_TYPES: readonly VarType[] = ['string', 'number', 'boolean', 'list', 'map'];
const DECL_KEYS = ['default', 'type', 'required', 'pattern', 'secret', 'prompt', 'description'];
const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Names a var would shadow in templates (scope roots, helpers) or could never be read by (literals).
const RESERVED = new Set<string>([...SCOPE_ROOTS, ...HELPER_NAMES, 'this', 'true', 'false', 'null', 'undefined']);

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function typeOf(v: unknown): VarType | undefined {
  if (typeof v === 'string') return 'string';
  if (typeof v === 'number') return 'number';
  if (typeof v === 'boolean') return 'boolean';
  if (Array.isArray(v)) return 'list';
  if (isMap(v)) return 'map';
  return undefined;
}

const NUMBER = /^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/;
const BOOLEANS: Record<string, boolean> = { true: true, yes: true, '1': true, false: false, no: false, '0': false };

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return undefined;
  }
}

/** The text a var's `pattern` is matched against. */
function stringForm(v: unknown): string {
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/**
 * Converts a value to a var's type. Strings (command line, prompts, vars files) are parsed;
 * other values must already have the type. The result is checked against `pattern`.
 */
export function convertVar(spec: Pick<VarSpec, 'type' | 'pattern'>, v: unknown): { value: unknown } | { error: string } {
  let value: unknown;
  const s = typeof v === 'string' ? v.trim() : undefined;
  switch (spec.type) {
    case 'string':
      if (typeof v === 'number' || typeof v === 'boolean') value = String(v);
      else if (typeof v === 'string') value = v;
      else return { error: 'not a string' };
      break;
    case 'number':
      if (typeof v === 'number') value = v;
      else if (s !== undefined && NUMBER.test(s)) value = Number(s);
      else return { error: 'not a number' };
      break;
    case 'boolean':
      if (typeof v === 'boolean') value = v;
      else if ((s !== undefined || typeof v === 'number') && String(s ?? v).toLowerCase() in BOOLEANS) value = BOOLEANS[String(s ?? v).toLowerCase()];
      else return { error: 'not a boolean (use true/false, yes/no or 1/0)' };
      break;
    case 'list':
      if (Array.isArray(v)) value = v;
      else if (s?.startsWith('[')) {
        value = parseJson(s);
        if (!Array.isArray(value)) return { error: 'not a list (invalid JSON list)' };
      } else if (s !== undefined) value = s === '' ? [] : s.split(',').map((x) => x.trim());
      else return { error: 'not a list (use a,b,c or a JSON list)' };
      break;
    case 'map':
      if (isMap(v)) value = v;
      else if (s !== undefined && isMap(parseJson(s))) value = parseJson(s);
      else return { error: 'not a map (use a JSON object like {"a":1})' };
      break;
  }
  if (spec.pattern !== undefined && !new RegExp(spec.pattern).test(stringForm(value))) {
    return { error: `does not match pattern ${spec.pattern}` };
  }
  return { value };
}

/**
 * Reads a recipe's `vars:` map. A map value is a declaration when it is empty or has a
 * declaration key (default, type, ...) or a near miss of one; any other value, maps
 * included, is a bare default.
 */
export function parseVarDecls(raw: unknown, base: readonly PathSeg[] = ['vars']): { vars: Record<string, VarSpec>; issues: PathIssue[] } {
  const vars: Record<string, VarSpec> = {};
  const issues: PathIssue[] = [];
  if (!isMap(raw)) return { vars, issues };
  for (const [name, decl] of Object.entries(raw)) {
    const at = (...p: PathSeg[]) => [...base, name, ...p];
    if (!VAR_NAME.test(name)) issues.push({ path: at(), at: 'key', message: `invalid var name "${name}" (use letters, digits and _, not starting with a digit)` });
    else if (RESERVED.has(name)) issues.push({ path: at(), at: 'key', message: `var name "${name}" is reserved` });

    // A misspelt declaration key (`requird`) must not turn the declaration into a map default.
    // `{}` declares a var with nothing set; a map default is written `{ default: {...} }` then.
    const keys = isMap(decl) ? Object.keys(decl) : [];
    const isDecl = isMap(decl) && (keys.length === 0 || keys.some((k) => DECL_KEYS.includes(k) || suggestion(k, DECL_KEYS) !== ''));
    if (!isDecl) {
      vars[name] = { name, type: typeOf(decl) ?? 'string', required: false, secret: false, prompt: false };
      if (decl !== null && decl !== undefined) vars[name].default = decl;
      continue;
    }
    for (const k of keys) {
      if (!DECL_KEYS.includes(k)) issues.push({ path: at(k), at: 'key', message: unknownKeyMessage(k, DECL_KEYS) });
    }
    const flag = (k: string): boolean => {
      const v = decl[k];
      if (v === undefined || v === null) return false;
      if (typeof v !== 'boolean') issues.push({ path: at(k), message: `expected boolean, got ${typeOf(v) ?? 'an empty value'}` });
      return v === true;
    };
    const text = (k: string): string | undefined => {
      const v = decl[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'string') issues.push({ path: at(k), message: `expected string, got ${typeOf(v)}` });
      return typeof v === 'string' ? v : undefined;
    };
    const spec: VarSpec = { name, type: 'string', required: flag('required'), secret: flag('secret'), prompt: flag('prompt') };
    const description = text('description');
    if (description !== undefined) spec.description = description;
    const pattern = text('pattern');
    if (pattern !== undefined) {
      try {
        new RegExp(pattern);
        spec.pattern = pattern;
      } catch (e) {
        issues.push({ path: at('pattern'), message: `invalid regular expression: ${errorMessage(e).replace(/^Invalid regular expression: /, '')}` });
      }
    }
    const type = text('type');
    if (type !== undefined && !VAR_TYPES.includes(type as VarType)) {
      issues.push({ path: at('type'), message: `must be one of: ${VAR_TYPES.join(', ')} (got "${type}")${suggestion(type, VAR_TYPES)}` });
    }
    const dflt = decl.default;
    spec.type = VAR_TYPES.includes(type as VarType) ? (type as VarType) : (typeOf(dflt) ?? 'string');
    if (dflt !== undefined && dflt !== null) {
      const r = convertVar(spec, dflt);
      if ('error' in r) issues.push({ path: at('default'), message: r.error });
      else spec.default = r.value;
    }
    vars[name] = spec;
  }
  return { vars, issues };
}

// Vars files remember where each value came from, so resolveVars can point at the line.
const origins = new WeakMap<object, YamlSource>();

/** Reads a vars file: a YAML map of var name to value. */
export async function loadVarsFile(path: string): Promise<Record<string, unknown>> {
  const file = displayPath(resolve(path));
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new InputError([{ file, message: `cannot read vars file: ${errorMessage(e)}` }]);
  }
  const r = yamlSource(file, bytes, 'vars file');
  if ('issues' in r) throw new InputError(r.issues);
  const { src } = r;
  const value = src.value ?? {};
  if (!isMap(value)) throw new InputError([{ file, line: 1, col: 1, message: 'a vars file must be a map of var names to values' }]);
  origins.set(value, src);
  return value;
}

/** `--var name=value` arguments; the last one wins for a repeated name. */
export function parseVarArgs(list: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const issues: InputIssue[] = [];
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0) issues.push({ message: `--var ${item}: expected name=value` });
    else out[item.slice(0, eq).trim()] = item.slice(eq + 1);
  }
  if (issues.length) throw new InputError(issues);
  return out;
}

export interface VarSources {
  cli?: Record<string, string>;
  file?: Record<string, unknown>;
  inventory?: Record<string, unknown>;
}

const given = (src: Record<string, unknown> | undefined, name: string) => src !== undefined && Object.prototype.hasOwnProperty.call(src, name) && src[name] !== null && src[name] !== undefined;

/**
 * Final var values: command line > vars file > inventory > default. Command-line names the
 * recipe does not declare are an error (a typo guard); a vars file or inventory may carry
 * vars for other recipes, so theirs are ignored.
 */
export function resolveVars(recipe: Pick<Recipe, 'vars'>, sources: VarSources): { values: Record<string, unknown>; secrets: string[] } {
  const issues: InputIssue[] = [];
  const values: Record<string, unknown> = {};
  const secrets: string[] = [];
  const declared = Object.keys(recipe.vars);
  for (const [name, raw] of Object.entries(sources.cli ?? {})) {
    if (!recipe.vars[name]) {
      const known = declared.length ? suggestion(name, declared) || ` (declared: ${declared.join(', ')})` : ' (the recipe declares no vars)';
      issues.push({ message: `--var ${name}=${raw}: unknown var "${name}"${known}` });
    }
  }
  for (const spec of Object.values(recipe.vars)) {
    const { name } = spec;
    let value: unknown = spec.default ?? null;
    const take = (v: unknown, report: (error: string) => InputIssue) => {
      const r = convertVar(spec, v);
      if ('error' in r) issues.push(report(r.error));
      else value = r.value;
    };
    if (given(sources.cli, name)) {
      take(sources.cli![name], (error) => ({ message: `--var ${name}=${spec.secret ? '***' : sources.cli![name]}: ${error}` }));
    } else if (given(sources.file, name)) {
      const src = origins.get(sources.file!);
      take(sources.file![name], (error) => (src ? { ...src.issue({ path: [name], message: error }) } : { message: `vars file: ${name}: ${error}` }));
    } else if (given(sources.inventory, name)) {
      take(sources.inventory![name], (error) => ({ ...placeOf(sources.inventory, name), message: `inventory var ${name}: ${error}` }));
    } else if (spec.required && (value === null || value === undefined)) {
      issues.push({ ...placeOf(recipe.vars, name), message: `missing required var "${name}" (give it with --var ${name}=... or in a --vars-file)` });
    }
    values[name] = value;
    if (spec.secret) secrets.push(...leafStrings(value));
  }
  if (issues.length) throw new InputError(issues);
  return { values, secrets };
}

function leafStrings(v: unknown): string[] {
  if (v === null || v === undefined || v === '') return [];
  if (Array.isArray(v)) return v.flatMap(leafStrings);
  if (isMap(v)) return Object.values(v).flatMap(leafStrings);
  return [String(v)];
}

/**
 * Vars the CLI should ask for on a TTY: those marked `prompt: true`, and required ones
 * without a default, that `given` (the values from command line, vars file and inventory,
 * before defaults) does not already set. Declaration order.
 */
export function missingPromptVars(recipe: Pick<Recipe, 'vars'>, givenValues: Record<string, unknown>): VarSpec[] {
  return Object.values(recipe.vars).filter((spec) => {
    if (given(givenValues, spec.name)) return false;
    return spec.prompt || (spec.required && (spec.default === undefined || spec.default === null));
  });
}
