import { readFile, stat } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { errorMessage, InputError, type InputIssue } from '../errors.js';
import { checkTemplate, suggestion, templateNames, type TemplateRef } from '../render/template.js';
import { builtinStepType, stepTypes } from '../steps/registry.js';
import { CUSTOM_TYPE_NAME } from '../steps/define.js';
import type { StaticEnv, StepType } from '../steps/step.js';
import { importDefault, importTypeModule, TYPE_MODULE_EXTENSIONS, type CustomTypes } from './custom-types.js';
import { stringify as stringifyYaml } from 'yaml';
import { sha256 } from '../steps/step.js';
import {
  defaultsSchema,
  displayPath,
  formatPath,
  includeSchema,
  recipeSchema,
  STEP_COMMON_KEYS,
  stepCommonSchema,
  unknownKeyMessage,
  YamlSource,
  zodIssues,
  type PathIssue,
  type PathSeg,
  type RetryInput,
} from './schema.js';
import { OutsideProject, findSource, sourceCandidates } from './sources.js';
import type { Recipe, RetrySpec, StepSpec, VarSpec } from './types.js';
import { convertVar, parseVarDecls } from './vars.js';
import { decodeText, MAX_YAML_BYTES, notePlaces } from '../yaml.js';

type Where = Omit<InputIssue, 'message'>;

interface Ref {
  name: string;
  where: Where;
}

/** A step on its way to a StepSpec: cross-references are resolved once every file is read. */
interface Draft {
  spec: StepSpec;
  needs?: Ref[];
  notify: Ref[];
  retry?: RetryInput;
  /** The `retry` of the nearest recipe `defaults:` that has one. */
  retryDefaults?: RetryInput;
  /** Where the step's name is, and where its `needs` are (its name when it has none). */
  at: Where;
  needsAt: Where;
  /** The outermost include that brought the step in. */
  site?: Where;
}

interface Part {
  name: string;
  file: string;
  dir: string;
  description?: string;
  sudo?: boolean;
  vars: Record<string, VarSpec>;
  defaults: { timeoutMs?: number; retry?: RetryInput; sudo?: boolean; parallel?: number; confirmMs?: number };
  verify?: string[];
  test?: { ignore?: string[]; host?: 'plain' | 'systemd'; net?: 'shared' | 'private'; parallel?: number };
  steps: Draft[];
  handlers: Draft[];
}

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const BASE_RETRY: RetrySpec = { attempts: 1, delayMs: 0, backoff: 1 };

function retrySpec(r: RetryInput | undefined): Partial<RetrySpec> {
  const out: Partial<RetrySpec> = {};
  if (r?.attempts !== undefined) out.attempts = r.attempts;
  if (r?.delay !== undefined) out.delayMs = r.delay;
  if (r?.backoff !== undefined) out.backoff = r.backoff;
  return out;
}

function valueAt(v: unknown, path: readonly PathSeg[]): unknown {
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[seg];
  }
  return v;
}

const isFile = (p: string) =>
  stat(p).then(
    (s) => s.isFile(),
    () => false,
  );

const stringList = (v: unknown): string[] | undefined => (typeof v === 'string' ? [v] : Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined);

/** What `steps.<name>` holds for each step that ran (see engine/run.ts). */
const STEP_RESULT_FIELDS = ['stdout', 'stderr', 'changed', 'status', 'summary'];

class Loader {
  readonly issues: InputIssue[] = [];
  /**
   * The recipe's own types (`types:` of the recipe given), this loader's alone: another recipe
   * loaded in the same process never sees them (the engine scopes them to the run the same way).
   */
  readonly custom: CustomTypes = { modules: [], types: {} };

  /** A step type by its recipe key: a built-in, else one of this recipe's own. */
  private typeOf(key: string): StepType | undefined {
    return builtinStepType(key) ?? (Object.prototype.hasOwnProperty.call(this.custom.types, key) ? this.custom.types[key] : undefined);
  }

  private typeNames(): string[] {
    return [...Object.keys(stepTypes), ...Object.keys(this.custom.types)];
  }

  private knownTypes(): string {
    return this.typeNames().join(', ');
  }

  /** Imports the recipe's `types:` modules (before its steps are read, so they are checked against them). */
  private async loadTypes(src: YamlSource, list: unknown, dir: string): Promise<void> {
    if (!Array.isArray(list)) return; // the recipe schema said what is wrong
    const from = new Map<string, string>();
    for (const [i, entry] of list.entries()) {
      // What is not a module path the recipe schema reported already.
      if (typeof entry !== 'string' || !TYPE_MODULE_EXTENSIONS.includes(extname(entry))) continue;
      const path = ['types', i];
      const file = resolve(dir, entry);
      if (this.custom.modules.some((m) => m.path === file)) {
        this.report(src, { path, message: `types module "${entry}" is listed twice` });
        continue;
      }
      const r = await importTypeModule(file);
      if ('error' in r) {
        this.report(src, { path, message: r.error });
        continue;
      }
      const names: string[] = [];
      for (const t of r.types) {
        const clash = builtinStepType(t.type)
          ? 'a built-in step type has that name'
          : from.has(t.type)
            ? `${from.get(t.type)} gives one already`
            : STEP_COMMON_KEYS.includes(t.type) || t.type === 'include'
              ? 'it is a key every step may have'
              : !CUSTOM_TYPE_NAME.test(t.type)
                ? 'it is not a lowercase word'
                : undefined;
        if (clash) {
          this.report(src, { path, message: `types module "${entry}" gives step type "${t.type}", which cannot be used: ${clash}` });
          continue;
        }
        from.set(t.type, `types module "${entry}"`);
        this.custom.types[t.type] = t;
        names.push(t.type);
      }
      this.custom.modules.push({ path: file, sha256: r.sha256, types: names });
    }
  }
  private readonly stepRefs: Array<{ where: Omit<InputIssue, 'message'>; ref: TemplateRef }> = [];
  private readonly fileOrder = new Map<string, number>();
  /** Recipes read from a module: the lines of their problems are of the YAML made from them, so not shown. */
  readonly modules = new Set<string>();

  report(src: YamlSource, p: PathIssue): void {
    this.issues.push(src.issue(p));
  }

  private where(src: YamlSource, path: PathSeg[], at: PathIssue['at'] = 'value'): Where {
    return { file: src.file, ...src.pos(path, at), path: formatPath(path) };
  }

  /** Reads one recipe file; included recipes are read recursively and flattened into it. */
  async part(file: string, stack: string[], outerNames: ReadonlySet<string>): Promise<Part | undefined> {
    const read = await this.read(file, 'recipe');
    if (!read) return undefined;
    const { shown, text } = read;
    const src = new YamlSource(shown, text);
    if (src.errors.length) {
      this.issues.push(...src.errors);
      return undefined;
    }
    const raw = src.value;
    if (!isMap(raw)) {
      this.issues.push({ file: shown, line: 1, col: 1, message: 'a recipe must be a map with at least name and steps' });
      return undefined;
    }
    const top = recipeSchema.safeParse(raw);
    if (!top.success) for (const i of zodIssues(top.error, [], recipeSchema)) this.report(src, i);

    const { vars, issues } = parseVarDecls(raw.vars);
    for (const i of issues) this.report(src, i);
    notePlaces(
      vars,
      Object.keys(vars).map((name) => [name, this.where(src, ['vars', name], 'key')]),
    );
    const names = new Set([...outerNames, ...Object.keys(vars)]);
    // A string default is a template too (rendered by the engine, in declaration order).
    for (const [name, spec] of Object.entries(vars)) {
      if (typeof spec.default !== 'string') continue;
      const decl = (raw.vars as Record<string, unknown>)[name];
      this.checkStrings(src, spec.default, isMap(decl) ? ['vars', name, 'default'] : ['vars', name], names);
    }
    const defaults = defaultsSchema.safeParse(raw.defaults ?? {});
    const part: Part = {
      name: typeof raw.name === 'string' ? raw.name : '',
      file,
      dir: dirname(file),
      vars,
      defaults: {},
      steps: [],
      handlers: [],
    };
    if (typeof raw.description === 'string') part.description = raw.description;
    if (typeof raw.sudo === 'boolean') part.sudo = raw.sudo;
    if (defaults.success) {
      const d = defaults.data;
      part.defaults = { timeoutMs: d.timeout, retry: d.retry, sudo: d.sudo, parallel: d.parallel, confirmMs: d.confirm };
    }
    if (isMap(raw.test)) {
      const t = raw.test;
      part.test = {};
      if (Array.isArray(t.ignore)) part.test.ignore = t.ignore.filter((x): x is string => typeof x === 'string');
      if (t.host === 'plain' || t.host === 'systemd') part.test.host = t.host;
      if (typeof t.parallel === 'number') part.test.parallel = t.parallel;
      if (t.net === 'shared' || t.net === 'private') part.test.net = t.net;
    }
    if (Array.isArray(raw.verify)) {
      part.verify = [];
      for (const [i, v] of raw.verify.entries()) {
        if (typeof v !== 'string') continue;
        this.checkStrings(src, v, ['verify', i], names);
        part.verify.push(v);
      }
    }

    if (raw.types !== undefined && raw.types !== null) {
      // One registry per recipe, filled before any step is read: the types of an included recipe
      // could otherwise name a type its includer's earlier steps were already checked without.
      if (stack.length)
        this.report(src, {
          path: ['types'],
          at: 'key',
          message: 'types: is read from the recipe given to hostsmith only; declare the custom types there (the steps of an included recipe may use them)',
        });
      else await this.loadTypes(src, raw.types, dirname(file));
    }

    const nested = [...stack, file];
    for (const key of ['steps', 'handlers'] as const) {
      const list = raw[key];
      if (!Array.isArray(list)) continue;
      for (const [i, item] of list.entries()) {
        const path = [key, i];
        if (isMap(item) && 'include' in item) {
          if (key === 'handlers') {
            this.report(src, { path: [...path, 'include'], at: 'key', message: 'include is only allowed in steps' });
            continue;
          }
          const inc = await this.include(src, item, path, part, nested, names);
          part.steps.push(...inc.steps);
          part.handlers.push(...inc.handlers);
        } else {
          const d = await this.step(src, item, path, part, names, key === 'handlers');
          if (d) part[key].push(d);
        }
      }
    }

    // The nearest recipe's defaults win: included steps already carry their own recipe's.
    for (const d of [...part.steps, ...part.handlers]) {
      if (part.defaults.timeoutMs !== undefined) d.spec.timeoutMs ??= part.defaults.timeoutMs;
      if (part.defaults.retry !== undefined) d.retryDefaults ??= part.defaults.retry;
      const sudo = part.sudo ?? part.defaults.sudo;
      if (stack.length && sudo !== undefined) d.spec.sudo ??= sudo;
    }
    return part;
  }

  private async step(src: YamlSource, item: unknown, path: PathSeg[], part: Part, names: ReadonlySet<string>, handler: boolean): Promise<Draft | undefined> {
    if (!isMap(item)) {
      this.report(src, { path, message: `a ${handler ? 'handler' : 'step'} must be a map with a name and one type key (${this.knownTypes()})` });
      return undefined;
    }
    const keys = Object.keys(item);
    const typeKeys = keys.filter((k) => this.typeOf(k));
    const other = keys.filter((k) => !STEP_COMMON_KEYS.includes(k) && !this.typeOf(k));
    for (const k of other) {
      const message = typeKeys.length
        ? unknownKeyMessage(k, [...STEP_COMMON_KEYS, ...typeKeys])
        : `unknown step type "${k}"${suggestion(k, this.typeNames()) || ` (known types: ${this.knownTypes()})`}`;
      this.report(src, { path: [...path, k], at: 'key', message });
    }
    if (typeKeys.length === 0 && other.length === 0) {
      this.report(src, { path, message: `a step needs exactly one type key: ${this.knownTypes()}` });
    } else if (typeKeys.length > 1) {
      this.report(src, { path: [...path, typeKeys[1]!], at: 'key', message: `a step has exactly one type key, this one has ${typeKeys.join(', ')}` });
    }

    const common = Object.fromEntries(keys.filter((k) => STEP_COMMON_KEYS.includes(k)).map((k) => [k, item[k]]));
    const parsed = stepCommonSchema.safeParse(common);
    if (!parsed.success) for (const i of zodIssues(parsed.error, path, stepCommonSchema)) this.report(src, i);
    const c = parsed.success ? parsed.data : undefined;

    const type = typeKeys.length === 1 ? typeKeys[0]! : undefined;
    if (type) {
      const schema = this.typeOf(type)!.schema;
      const r = schema.safeParse(item[type]);
      // A field that is a template can only be judged once rendered (the engine checks again then).
      const templated = (p: PathSeg[]) => {
        const v = valueAt(item, p.slice(path.length));
        return typeof v === 'string' && v.includes('{{');
      };
      if (!r.success) for (const i of zodIssues(r.error, [...path, type], schema)) if (!templated(i.path)) this.report(src, i);
    }
    await this.checkStepStrings(src, item, path, part.dir, names);

    if (typeof item.name !== 'string' || !item.name) return undefined;
    const spec: StepSpec = {
      name: item.name,
      type: type ?? '',
      params: type ? item[type] : undefined,
      fatal: c?.fatal ?? true,
      needs: [],
      notify: [],
      // A module recipe has no line of its own for a step: its YAML was made from the object.
      loc: { file: part.file, ...(this.modules.has(src.file) ? { line: 0, col: 0 } : src.pos(path)) },
      dir: part.dir,
    };
    if (c?.when !== undefined) spec.when = c.when;
    if (c?.unless !== undefined) spec.unless = c.unless;
    if (c?.timeout !== undefined) spec.timeoutMs = c.timeout;
    if (c?.sudo !== undefined) spec.sudo = c.sudo;
    const refs = (key: 'needs' | 'notify'): Ref[] | undefined => {
      const v = stringList(item[key]);
      if (!v) return undefined;
      const one = typeof item[key] === 'string';
      return v.map((name, k) => ({ name, where: this.where(src, one ? [...path, key] : [...path, key, k]) }));
    };
    const at = this.where(src, [...path, 'name']);
    const draft: Draft = { spec, notify: refs('notify') ?? [], at, needsAt: 'needs' in item ? this.where(src, [...path, 'needs']) : at };
    const needs = refs('needs');
    if (needs) draft.needs = needs;
    if (c?.retry) draft.retry = c.retry;
    return draft;
  }

  /** Every string of a step is a template: syntax, helpers and names are checked here. */
  private async checkStepStrings(src: YamlSource, item: Record<string, unknown>, path: PathSeg[], dir: string, names: ReadonlySet<string>): Promise<void> {
    for (const [k, v] of Object.entries(item)) {
      if (k === 'name' || k === 'needs' || k === 'notify') continue;
      this.checkStrings(src, v, [...path, k], names);
    }
    // The step type's own checks (a cron schedule, a template's source and names), on the raw params.
    for (const [key, raw] of Object.entries(item)) {
      const type = this.typeOf(key);
      if (!type?.staticCheck || !isMap(raw)) continue;
      const at = (p: Array<string | number>): PathSeg[] => [...path, key, ...p];
      const env: StaticEnv = {
        findSource: async (srcName, kind) => {
          const file = await findSource(dir, srcName, kind).catch((e: unknown) => {
            if (e instanceof OutsideProject) return { outside: e.message };
            throw e;
          });
          if (file && typeof file === 'object') return { looked: [], why: file.outside };
          return file ? { file } : { looked: sourceCandidates(dir, srcName, kind).map(displayPath) };
        },
        checkTemplate: (file, p, local) => this.checkTemplateFile(file, at(p), new Set([...names, ...local])),
      };
      for (const problem of await type.staticCheck(raw, env)) {
        // A field its schema already refused is not reported twice.
        const where = formatPath(at(problem.path));
        if (!this.issues.some((i) => i.file === src.file && i.path === where)) this.report(src, { path: at(problem.path), message: problem.message });
      }
    }
  }

  /**
   * Reads a recipe or template file as UTF-8 text, numbering it for the order of messages; a
   * failure (unreadable, too large, bytes that are not text) is an issue.
   */
  private async read(file: string, what: 'recipe' | 'template', fieldPath?: PathSeg[]): Promise<{ shown: string; text: string } | undefined> {
    const shown = displayPath(file);
    if (!this.fileOrder.has(shown)) this.fileOrder.set(shown, this.fileOrder.size);
    const at = fieldPath ? { path: formatPath(fieldPath) } : {};
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (e) {
      this.issues.push({ file: shown, ...at, message: `cannot read ${what}: ${errorMessage(e)}` });
      return undefined;
    }
    if (what === 'recipe' && RECIPE_MODULE_EXTENSIONS.includes(extname(file))) return this.readModule(file, shown, bytes);
    const d = decodeText(shown, bytes, what === 'recipe' ? { what, yaml: true, maxBytes: MAX_YAML_BYTES } : { what });
    if ('issue' in d) {
      this.issues.push({ ...d.issue, ...at });
      return undefined;
    }
    return { shown, text: d.text };
  }

  /**
   * A recipe written in TypeScript or JavaScript (`export default defineRecipe({...})`): its
   * default export, as the YAML text it stands for, so it goes through every check a YAML recipe
   * does. Problems are then placed by path in the recipe (`steps[2].file.mode`), not by line.
   */
  private async readModule(file: string, shown: string, bytes: Buffer): Promise<{ shown: string; text: string } | undefined> {
    let value: unknown;
    try {
      value = await importDefault(file, sha256(bytes));
    } catch (e) {
      this.issues.push({ file: shown, message: `cannot load the recipe module: ${errorMessage(e)}` });
      return undefined;
    }
    if (!isMap(value)) {
      this.issues.push({
        file: shown,
        message: `a recipe module exports its recipe as its default export (export default defineRecipe({...})), not ${value === undefined ? 'nothing' : Array.isArray(value) ? 'an array' : `a ${typeof value}`}`,
      });
      return undefined;
    }
    this.modules.add(shown);
    // Only data survives: functions, symbols and undefined are dropped here, as YAML could not hold them.
    return { shown, text: stringifyYaml(JSON.parse(JSON.stringify(value)) as unknown) };
  }

  private async checkTemplateFile(file: string, fieldPath: PathSeg[], names: ReadonlySet<string>): Promise<void> {
    const read = await this.read(file, 'template', fieldPath);
    if (!read) return;
    const { shown, text } = read;
    for (const p of checkTemplate(text, names)) {
      this.issues.push({ file: shown, line: p.line, col: p.column + 1, path: formatPath(fieldPath), message: p.message });
    }
  }

  private checkStrings(src: YamlSource, value: unknown, path: PathSeg[], names: ReadonlySet<string>): void {
    if (typeof value === 'string') {
      const problems = checkTemplate(value, names);
      for (const p of problems) {
        this.issues.push({ file: src.file, ...src.posInString(path, p.line, p.column), path: formatPath(path), message: p.message });
      }
      // `steps.<name>` can only be checked once every step name is known: kept for then.
      if (!problems.length && value.includes('{{')) {
        for (const r of templateNames(value)) {
          if (r.parts[0] === 'steps' && r.parts.length > 1) this.stepRefs.push({ where: { file: src.file, ...src.posInString(path, r.line, r.column), path: formatPath(path) }, ref: r });
        }
      }
    } else if (Array.isArray(value)) value.forEach((v, i) => this.checkStrings(src, v, [...path, i], names));
    else if (isMap(value)) for (const [k, v] of Object.entries(value)) this.checkStrings(src, v, [...path, k], names);
  }

  private async include(src: YamlSource, item: Record<string, unknown>, path: PathSeg[], parent: Part, stack: string[], names: ReadonlySet<string>): Promise<{ steps: Draft[]; handlers: Draft[] }> {
    const none = { steps: [], handlers: [] };
    const r = includeSchema.safeParse(item);
    if (!r.success) {
      for (const i of zodIssues(r.error, path, includeSchema)) this.report(src, i);
      if (typeof (item.include as { recipe?: unknown } | null)?.recipe !== 'string') return none;
    }
    const inc = item.include as { recipe: string; vars?: unknown };
    const recipePath = [...path, 'include', 'recipe'];
    const target = resolve(parent.dir, inc.recipe);
    if (stack.includes(target)) {
      const chain = [...stack.slice(stack.indexOf(target)), target].map(displayPath).join(' → ');
      this.report(src, { path: recipePath, message: `include cycle: ${chain}` });
      return none;
    }
    if (!(await isFile(target))) {
      this.report(src, { path: recipePath, message: `included recipe "${inc.recipe}" not found (looked for ${displayPath(target)})` });
      return none;
    }
    const part = await this.part(target, stack, names);
    if (!part) return none;

    const given = isMap(inc.vars) ? inc.vars : {};
    for (const [k, v] of Object.entries(given)) {
      const spec = part.vars[k];
      const varPath = [...path, 'include', 'vars', k];
      if (!spec) {
        const hint = suggestion(k, Object.keys(part.vars));
        this.report(src, { path: varPath, at: 'key', message: `included recipe "${part.name}" declares no var "${k}"${hint}` });
      } else if (v !== null && !(typeof v === 'string' && v.includes('{{'))) {
        const c = convertVar(spec, v);
        if ('error' in c) this.report(src, { path: varPath, message: c.error });
      }
    }
    const scopeVars: Record<string, unknown> = {};
    for (const spec of Object.values(part.vars)) {
      scopeVars[spec.name] = spec.default ?? null;
      const value = given[spec.name];
      if (value !== undefined && value !== null) scopeVars[spec.name] = value;
      else if (spec.required && (spec.default === undefined || spec.default === null)) {
        this.report(src, { path: [...path, 'include'], at: 'key', message: `included recipe "${part.name}" needs var "${spec.name}" (set it in include.vars)` });
      }
    }

    const site = this.where(src, [...path, 'include'], 'key');
    const prefix = `${part.name}/`;
    const rename = (d: Draft): Draft => ({
      ...d,
      spec: { ...d.spec, name: prefix + d.spec.name, scopeVars: { ...scopeVars, ...d.spec.scopeVars } },
      needs: d.needs?.map((n) => ({ ...n, name: prefix + n.name })),
      notify: d.notify.map((n) => ({ ...n, name: prefix + n.name })),
      site,
    });
    return { steps: part.steps.map(rename), handlers: part.handlers.map(rename) };
  }

  /** Names, needs and notify across the flattened recipe; fills the defaults. */
  finish(root: Part): { steps: StepSpec[]; handlers: StepSpec[] } {
    const seen = new Map<string, Draft>();
    const sitesReported = new Set<string>();
    for (const d of [...root.steps, ...root.handlers]) {
      const first = seen.get(d.spec.name);
      if (!first) {
        seen.set(d.spec.name, d);
        continue;
      }
      // The same step twice from one file means its recipe was included twice.
      const sameSource = first.at.file === d.at.file && first.at.line === d.at.line && first.at.col === d.at.col;
      const here = sameSource && d.site ? d.site : d.at;
      const there = sameSource && first.site ? first.site : first.at;
      const more = sameSource ? '; is a recipe included twice?' : '';
      if (sameSource && d.site) {
        const site = `${here.file}:${here.line}:${here.col}`;
        if (sitesReported.has(site)) continue;
        sitesReported.add(site);
      }
      this.issues.push({ ...here, message: `duplicate step name "${d.spec.name}" (first at ${there.file}:${there.line}:${there.col}${more})` });
    }
    const stepNames = new Set(root.steps.map((d) => d.spec.name));
    const handlerNames = new Set(root.handlers.map((d) => d.spec.name));
    for (const { where, ref } of this.stepRefs) {
      const [, name, field] = ref.parts;
      const all = [...stepNames, ...handlerNames];
      // Inside an included recipe its own steps are named without the prefix (the engine aliases them).
      if (!all.includes(name!) && !all.some((n) => n.endsWith(`/${name}`))) {
        this.issues.push({ ...where, message: `"${ref.original}": no step named "${name}"${suggestion(name!, all)}` });
      } else if (field !== undefined && !STEP_RESULT_FIELDS.includes(field)) {
        this.issues.push({ ...where, message: `"${ref.original}": a step result has ${STEP_RESULT_FIELDS.join(', ')}, not "${field}"${suggestion(field, STEP_RESULT_FIELDS)}` });
      }
    }

    const resolveRefs = (refs: Ref[], want: Set<string>, what: 'step' | 'handler', self?: string): string[] => {
      const out: string[] = [];
      for (const r of refs) {
        if (r.name === self) this.issues.push({ ...r.where, message: `a ${what} cannot need itself` });
        else if (want.has(r.name)) out.push(r.name);
        else if ((what === 'step' ? handlerNames : stepNames).has(r.name)) {
          this.issues.push({ ...r.where, message: `"${r.name}" is a ${what === 'step' ? 'handler' : 'step'}, not a ${what}` });
        } else this.issues.push({ ...r.where, message: `unknown ${what} "${r.name}"${suggestion(r.name, want)}` });
      }
      return out;
    };

    const finishOne = (d: Draft, previous: string | undefined, pool: Set<string>, what: 'step' | 'handler'): StepSpec => {
      const needs = d.needs ? resolveRefs(d.needs, pool, what, d.spec.name) : previous !== undefined ? [previous] : [];
      const notify = resolveRefs(d.notify, handlerNames, 'handler');
      const given = d.retryDefaults ?? root.defaults.retry;
      if (given === undefined && d.retry === undefined) return { ...d.spec, needs, notify };
      const retry = { ...BASE_RETRY, ...retrySpec(given), ...retrySpec(d.retry) };
      return { ...d.spec, needs, notify, retry };
    };
    const steps = root.steps.map((d, i) => finishOne(d, root.steps[i - 1]?.spec.name, stepNames, 'step'));
    const handlers = root.handlers.map((d) => finishOne(d, undefined, handlerNames, 'handler'));
    this.findCycles(steps, root.steps);
    this.findCycles(handlers, root.handlers);
    return { steps, handlers };
  }

  /** Reports each `needs` cycle once, naming it, at the `needs` of its first step. */
  private findCycles(specs: StepSpec[], drafts: Draft[]): void {
    const byName = new Map<string, number>();
    specs.forEach((s, i) => byName.has(s.name) || byName.set(s.name, i)); // duplicates are reported elsewhere
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const reported = new Set<string>();
    const visit = (name: string): void => {
      state.set(name, 'open');
      stack.push(name);
      for (const next of specs[byName.get(name)!]!.needs) {
        if (!byName.has(next)) continue;
        if (state.get(next) === 'open') {
          const cycle = stack.slice(stack.indexOf(next));
          if (cycle.some((n) => reported.has(n))) continue;
          cycle.forEach((n) => reported.add(n));
          const first = cycle.reduce((a, b) => (byName.get(a)! <= byName.get(b)! ? a : b));
          this.issues.push({ ...drafts[byName.get(first)!]!.needsAt, message: `needs cycle: ${cycleText(cycle, first)}` });
        } else if (!state.has(next)) visit(next);
      }
      stack.pop();
      state.set(name, 'done');
    };
    for (const s of specs) if (!state.has(s.name)) visit(s.name);
  }

  sorted(): InputIssue[] {
    // A file included twice is checked twice: its problems are reported once.
    const key = (i: InputIssue) => `${i.file}|${i.line}|${i.col}|${i.path}|${i.message}`;
    const unique = new Map<string, InputIssue>();
    for (const i of this.issues) if (!unique.has(key(i))) unique.set(key(i), this.modules.has(i.file ?? '') ? withoutPlace(i) : i);
    const order = (f: string | undefined) => this.fileOrder.get(f ?? '') ?? -1;
    return [...unique.values()].sort((a, b) => order(a.file) - order(b.file) || (a.line ?? 0) - (b.line ?? 0) || (a.col ?? 0) - (b.col ?? 0));
  }
}

function withoutPlace(i: InputIssue): InputIssue {
  const { line: _l, col: _c, ...rest } = i;
  return rest;
}

/** Recipe files that are modules (typed recipes) rather than YAML. */
export const RECIPE_MODULE_EXTENSIONS = ['.ts', '.mts', '.js', '.mjs'];

/** A cycle where each step needs the next and the last needs the first: "A" → "B" → "A". */
function cycleText(cycle: string[], first: string): string {
  const i = cycle.indexOf(first);
  const rotated = [...cycle.slice(i), ...cycle.slice(0, i)];
  return [...rotated, first].map((n) => JSON.stringify(n)).join(' → ');
}

/**
 * Loads and validates a recipe: YAML with positions, the recipe structure, each step type's
 * params, templates (syntax and names, template files included), cron schedules, includes,
 * names, needs and notify. Every problem is collected and thrown as one InputError.
 */
export async function loadRecipe(file: string): Promise<Recipe> {
  const abs = resolve(file);
  const loader = new Loader();
  const root = await loader.part(abs, [], new Set());
  const flat = root ? loader.finish(root) : undefined;
  if (loader.issues.length || !root || !flat) throw new InputError(loader.sorted());

  const d = root.defaults;
  const recipe: Recipe = {
    name: root.name,
    file: abs,
    dir: root.dir,
    sudo: root.sudo ?? d.sudo ?? false,
    vars: root.vars,
    steps: flat.steps,
    handlers: flat.handlers,
    defaults: { parallel: d.parallel ?? 1 },
    verify: root.verify ?? [],
  };
  if (root.test) recipe.test = root.test;
  if (d.confirmMs !== undefined) recipe.defaults.confirmMs = d.confirmMs;
  if (root.description !== undefined) recipe.description = root.description;
  if (d.timeoutMs !== undefined) recipe.defaults.timeoutMs = d.timeoutMs;
  if (d.retry !== undefined) recipe.defaults.retry = { ...BASE_RETRY, ...retrySpec(d.retry) };
  if (d.sudo !== undefined) recipe.defaults.sudo = d.sudo;
  if (loader.custom.modules.length) recipe.types = loader.custom;
  return recipe;
}
