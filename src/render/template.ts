import Handlebars from 'handlebars';
import { RenderError } from '../errors.js';
import { quote } from '../shell/script.js';

/** Names every scope has besides the vars (see buildScope). */
export const SCOPE_ROOTS = ['vars', 'facts', 'steps'] as const;

const isEmpty = (v: unknown) => v === null || v === undefined || v === '';
const truthy = (v: unknown) => (Array.isArray(v) ? v.length > 0 : Boolean(v));

// Facts and CLI values are strings while literals in templates may be numbers
// (`{{eq facts.os.version_id 12}}`), so a number and a string compare by their text.
function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  const mixed = (typeof a === 'number' && typeof b === 'string') || (typeof a === 'string' && typeof b === 'number');
  return mixed && String(a) === String(b);
}

function numeric(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) return Number(v);
  return undefined;
}

function compare(a: unknown, b: unknown): number {
  const na = numeric(a);
  const nb = numeric(b);
  if (na !== undefined && nb !== undefined) return na - nb;
  const sa = String(a);
  const sb = String(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

interface Helper {
  fn: (...args: unknown[]) => unknown;
  min: number;
  max: number;
}

const helpers: Record<string, Helper> = {
  eq: { fn: (a, b) => same(a, b), min: 2, max: 2 },
  ne: { fn: (a, b) => !same(a, b), min: 2, max: 2 },
  lt: { fn: (a, b) => compare(a, b) < 0, min: 2, max: 2 },
  gt: { fn: (a, b) => compare(a, b) > 0, min: 2, max: 2 },
  and: { fn: (...xs) => xs.every(truthy), min: 1, max: Infinity },
  or: { fn: (...xs) => xs.some(truthy), min: 1, max: Infinity },
  not: { fn: (a) => !truthy(a), min: 1, max: 1 },
  default: { fn: (...xs) => xs.find((x) => !isEmpty(x)) ?? xs[xs.length - 1], min: 2, max: Infinity },
  json: { fn: (v) => JSON.stringify(v ?? null), min: 1, max: 1 },
  quote: { fn: (v) => quote(isEmpty(v) ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v)), min: 1, max: 1 },
};

/** Handlebars' own helpers, with the argument counts they accept. */
const builtins: Record<string, { min: number; max: number }> = {
  if: { min: 1, max: 1 },
  unless: { min: 1, max: 1 },
  each: { min: 1, max: 1 },
  with: { min: 1, max: 1 },
  lookup: { min: 2, max: 2 },
};

export const HELPER_NAMES: readonly string[] = [...Object.keys(helpers), ...Object.keys(builtins)];

const hb = Handlebars.create();
// Handlebars' `log` prints its argument on the controller's stdout: unmasked secrets, and a line
// that breaks --json. Templates render text; they do not print.
hb.unregisterHelper('log');
for (const [name, h] of Object.entries(helpers)) {
  // Handlebars passes its options object last; helpers only see the template's arguments.
  hb.registerHelper(name, (...args: unknown[]) => h.fn(...args.slice(0, -1)));
}
const compileOptions = {
  strict: true,
  noEscape: true,
  knownHelpers: Object.fromEntries(Object.keys(helpers).map((n) => [n, true])),
};

// ---- static analysis of the Handlebars AST ----

interface Pos {
  line: number;
  column: number;
}
interface HbNode {
  type: string;
  loc?: { start: Pos };
  [k: string]: unknown;
}
interface HbPath extends HbNode {
  type: 'PathExpression';
  data: boolean;
  depth: number;
  parts: string[];
  original: string;
}

/** A name a template reads from the top-level scope. line is 1-based, column 0-based (Handlebars). */
export interface TemplateRef {
  parts: string[];
  /** The path as a user writes it: `steps.[Seed db].stdout`. */
  original: string;
  line: number;
  column: number;
  /** A helper argument: Handlebars lets its last segment be missing (so `default` works). */
  argument: boolean;
}

export interface TemplateProblem {
  message: string;
  line: number;
  column: number;
}

interface Analysis {
  refs: TemplateRef[];
  problems: TemplateProblem[];
}

const posOf = (n: HbNode): Pos => n.loc?.start ?? { line: 1, column: 0 };
/** A path as a user would write it; Handlebars' own `original` drops the [ ] around segments. */
const pathText = (p: HbPath): string => (p.data ? '@' : '') + '../'.repeat(p.depth) + p.parts.map((s) => (/^[\w$-]+$/.test(s) ? s : `[${s}]`)).join('.');
const isScoped = (p: HbPath) => /^\.|^this\b/.test(p.original);
const simpleName = (n: unknown): string | undefined => {
  const p = n as HbPath;
  return p?.type === 'PathExpression' && !p.data && p.depth === 0 && p.parts.length === 1 && !isScoped(p) ? p.parts[0] : undefined;
};

function analyse(program: HbNode): Analysis {
  const out: Analysis = { refs: [], problems: [] };
  // contexts: one entry per context-changing block; true = the top-level scope.
  const walk = (node: HbNode, contexts: boolean[], params: ReadonlySet<string>): void => {
    switch (node.type) {
      case 'Program':
        for (const s of node.body as HbNode[]) walk(s, contexts, params);
        return;
      case 'MustacheStatement':
        call(node, contexts, params);
        return;
      case 'BlockStatement': {
        call(node, contexts, params);
        const name = simpleName(node.path);
        const keepsContext = name === 'if' || name === 'unless';
        const program = node.program as HbNode | undefined;
        if (program) {
          const inner = new Set([...params, ...((program.blockParams as string[] | undefined) ?? [])]);
          walk(program, keepsContext ? contexts : [...contexts, false], inner);
        }
        if (node.inverse) walk(node.inverse as HbNode, contexts, params);
        return;
      }
      case 'PartialStatement':
      case 'PartialBlockStatement':
      case 'Decorator':
      case 'DecoratorBlock':
        out.problems.push({ message: 'partials and decorators are not supported', ...posOf(node) });
        return;
      default:
        return; // content and comments
    }
  };

  const call = (node: HbNode, contexts: boolean[], params: ReadonlySet<string>): void => {
    const args = (node.params as HbNode[]) ?? [];
    const hash = ((node.hash as HbNode | undefined)?.pairs as HbNode[] | undefined) ?? [];
    const name = simpleName(node.path);
    const helper = name !== undefined && !params.has(name) ? (helpers[name] ?? builtins[name]) : undefined;
    if (helper) {
      if (args.length < helper.min || args.length > helper.max) {
        const want = helper.min === helper.max ? `${helper.min}` : helper.max === Infinity ? `at least ${helper.min}` : `${helper.min} to ${helper.max}`;
        out.problems.push({ message: `helper "${name}" takes ${want} argument${want === '1' ? '' : 's'}, got ${args.length}`, ...posOf(node) });
      }
    } else if (args.length || hash.length) {
      const p = node.path as HbNode;
      const what = p.type === 'PathExpression' ? pathText(p as HbPath) : p.type;
      out.problems.push({ message: `unknown helper "${what}" (helpers: ${Object.keys(helpers).join(' ')})`, ...posOf(p) });
    } else {
      expr(node.path as HbNode, false, contexts, params);
    }
    for (const a of args) expr(a, true, contexts, params);
    for (const pair of hash) expr(pair.value as HbNode, true, contexts, params);
  };

  const expr = (e: HbNode, argument: boolean, contexts: boolean[], params: ReadonlySet<string>): void => {
    if (e.type === 'SubExpression') return call(e, contexts, params);
    if (e.type !== 'PathExpression') return; // literals
    const p = e as HbPath;
    let parts = p.parts;
    if (p.data) {
      if (parts[0] !== 'root' || parts.length < 2) return; // @index, @key, ... come from blocks
      parts = parts.slice(1);
    } else {
      const ctx = contexts[contexts.length - 1 - p.depth];
      if (ctx !== true) return; // inside each/with the context is an item we cannot know statically
      if (p.depth === 0 && !isScoped(p) && params.has(parts[0]!)) return;
    }
    if (!parts.length) return; // `this`
    out.refs.push({ parts, original: pathText(p), ...posOf(p), argument });
  };

  walk(program, [true], new Set());
  return out;
}

// ---- parsing and compiling, cached by text ----

interface Compiled {
  ast: HbNode;
  analysis: Analysis;
  fn?: Handlebars.TemplateDelegate;
}

const cache = new Map<string, Compiled>();
const CACHE_MAX = 2000;

class SyntaxProblem extends Error {
  constructor(readonly problem: TemplateProblem) {
    super(problem.message);
  }
}

const TOKENS: Record<string, string> = {
  INVALID: 'text inside {{ }}',
  CLOSE: '"}}"',
  CLOSE_UNESCAPED: '"}}}"',
  OPEN: '"{{"',
  OPEN_ENDBLOCK: '"{{/" (no block is open)',
  EQUALS: '"="',
};

/** Handlebars parse errors are multi-line with an ASCII caret; keep one line that says where. */
function syntaxProblem(e: unknown): TemplateProblem {
  const msg = e instanceof Error ? e.message : String(e);
  const parse = /^Parse error on line (\d+):\n(.*)\n(-*)\^\n(.*)/s.exec(msg);
  if (parse) {
    const [, line, snippet, dashes, expecting] = parse;
    const column = line === '1' && !snippet!.startsWith('...') ? dashes!.length : 0;
    const got = /got '(\w+)'/.exec(expecting!)?.[1];
    const what = got === 'EOF' ? 'unexpected end of template (a block or {{ not closed?)' : `unexpected ${TOKENS[got ?? ''] ?? got?.toLowerCase() ?? 'text'}`;
    return { message: `template syntax error near "${snippet}": ${what}`, line: Number(line), column };
  }
  const lexical = /^Lexical error on line (\d+)\. (.*?)\n/s.exec(msg);
  if (lexical) return { message: `template syntax error: ${lexical[2]}`, line: Number(lexical[1]), column: 0 };
  const ex = e as { lineNumber?: number; column?: number };
  return { message: `template syntax error: ${msg.replace(/ - \d+:\d+$/, '')}`, line: ex.lineNumber ?? 1, column: ex.column ?? 0 };
}

function parsed(text: string): Compiled {
  let c = cache.get(text);
  if (c) return c;
  let ast: HbNode;
  try {
    ast = hb.parse(text) as unknown as HbNode;
  } catch (e) {
    throw new SyntaxProblem(syntaxProblem(e));
  }
  c = { ast, analysis: analyse(ast) };
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(text, c);
  return c;
}

/** The top-level names a template reads (static; names inside each/with blocks are not included). */
export function templateNames(text: string): TemplateRef[] {
  return parsed(text).analysis.refs;
}

/**
 * Load-time check of one template: syntax, helpers and their argument counts, and names whose
 * first segment is neither a declared var nor vars/facts/steps (also `vars.<undeclared>`).
 */
export function checkTemplate(text: string, declared: ReadonlySet<string>): TemplateProblem[] {
  if (!text.includes('{{')) return [];
  let c: Compiled;
  try {
    c = parsed(text);
  } catch (e) {
    if (e instanceof SyntaxProblem) return [e.problem];
    throw e;
  }
  const problems = [...c.analysis.problems];
  for (const r of c.analysis.refs) {
    const [head, second] = r.parts;
    const known = declared.has(head!) || (SCOPE_ROOTS as readonly string[]).includes(head!);
    if (!known) problems.push({ message: `unknown variable "${head}"${suggestion(head!, [...declared])}`, line: r.line, column: r.column });
    else if (head === 'vars' && second !== undefined && !declared.has(second)) {
      problems.push({ message: `unknown variable "vars.${second}"${suggestion(second, [...declared])}`, line: r.line, column: r.column });
    }
  }
  return problems.sort((a, b) => a.line - b.line || a.column - b.column);
}

/** ` (did you mean "x"?)` when one candidate is a small edit away. */
export function suggestion(word: string, candidates: Iterable<string>): string {
  if (word.length < 3) return ''; // every short name is a small edit away from another
  let best: string | undefined;
  let bestD = Math.max(1, Math.min(3, Math.ceil(word.length / 3)));
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d <= bestD && c !== word) {
      best = c;
      bestD = d - 1;
    }
  }
  return best === undefined ? '' : ` (did you mean "${best}"?)`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

// ---- rendering ----

export interface Where {
  step?: string;
  field?: string;
}

function renderError(where: Where, message: string): RenderError {
  const prefix = [where.step !== undefined ? `step "${where.step}"` : '', where.field ?? ''].filter(Boolean);
  return new RenderError([...prefix, message].join(': '));
}

const has = (o: unknown, k: string) => o !== null && typeof o === 'object' && Object.prototype.hasOwnProperty.call(o, k);

/** The first top-level name that does not resolve in `scope`, with a hint from the keys next to it. */
function unresolved(refs: TemplateRef[], scope: Record<string, unknown>): string | undefined {
  for (const r of refs) {
    let cur: unknown = scope;
    for (let i = 0; i < r.parts.length; i++) {
      const part = r.parts[i]!;
      if (!has(cur, part)) {
        if (r.argument && i > 0 && i === r.parts.length - 1) break;
        const keys = cur !== null && typeof cur === 'object' ? Object.keys(cur) : [];
        return `unknown variable "${r.original}"${suggestion(part, keys)}`;
      }
      cur = (cur as Record<string, unknown>)[part];
    }
  }
  return undefined;
}

/** Turns what Handlebars threw at run time (inside each/with blocks) into one readable line. */
function runtimeMessage(e: unknown, ast: HbNode): string {
  const ex = e as { message?: string; lineNumber?: number; column?: number };
  const msg = ex?.message ?? String(e);
  const notDefined = /^"(.*)" not defined in /.exec(msg);
  if (notDefined) {
    const path = ex.lineNumber !== undefined ? findPath(ast, ex.lineNumber, ex.column ?? 0) : undefined;
    return `unknown variable "${path ?? notDefined[1]}"`;
  }
  const reading = /^Cannot read properties of (undefined|null) \(reading '(.*)'\)/.exec(msg);
  if (reading) return `unknown variable: cannot look up "${reading[2]}" in ${reading[1]}`;
  const inPrimitive = /^Cannot use 'in' operator to search for '(.*)' in /.exec(msg);
  if (inPrimitive) return `unknown variable "${inPrimitive[1]}"`;
  return msg.replace(/ - \d+:\d+$/, '');
}

function findPath(node: unknown, line: number, column: number): string | undefined {
  if (!node || typeof node !== 'object') return undefined;
  const n = node as HbNode;
  if (n.type === 'PathExpression' && n.loc?.start.line === line && n.loc.start.column === column) return pathText(n as HbPath);
  for (const v of Object.values(n)) {
    const found = Array.isArray(v) ? v.map((x) => findPath(x, line, column)).find(Boolean) : findPath(v, line, column);
    if (found) return found;
  }
  return undefined;
}

/**
 * Renders one template string. Strict: every top-level name must resolve in `scope` (a helper
 * argument's last segment may be missing, so `{{default vars.x "y"}}` and
 * `{{default facts.os.codename "?"}}` work, but an undeclared bare name is still an error).
 */
export function render(text: string, scope: Record<string, unknown>, where: Where = {}): string {
  if (!text.includes('{{')) return text;
  let c: Compiled;
  try {
    c = parsed(text);
  } catch (e) {
    if (e instanceof SyntaxProblem) throw renderError(where, `${e.problem.message} (line ${e.problem.line})`);
    throw e;
  }
  const problem = c.analysis.problems[0];
  if (problem) throw renderError(where, problem.message);
  const missing = unresolved(c.analysis.refs, scope);
  if (missing) throw renderError(where, missing);
  c.fn ??= hb.compile(c.ast as unknown as Parameters<typeof hb.compile>[0], compileOptions);
  try {
    return c.fn(scope);
  } catch (e) {
    throw renderError(where, runtimeMessage(e, c.ast));
  }
}

const join = (field: string | undefined, key: string) => (field ? `${field}.${key}` : key);

/** Renders every string in a nested value; `where.field` follows the path it descends. */
export function renderDeep(value: unknown, scope: Record<string, unknown>, where: Where = {}): unknown {
  if (typeof value === 'string') return render(value, scope, where);
  if (Array.isArray(value)) return value.map((v, i) => renderDeep(v, scope, { ...where, field: `${where.field ?? ''}[${i}]` }));
  if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, renderDeep(v, scope, { ...where, field: join(where.field, k) })]));
  }
  return value;
}

/** The scope templates see: each var by its own name and under `vars`, plus facts and step results. */
export function buildScope(values: Record<string, unknown>, facts: unknown, steps: unknown): Record<string, unknown> {
  return { ...values, vars: values, facts, steps };
}

/**
 * Renders a step's scopeVars one by one, each seeing the ones before it, so an included recipe's
 * defaults may refer to its own earlier vars (`log_dir: "{{app_dir}}/log"`).
 */
export function renderScopeVars(scopeVars: Record<string, unknown>, values: Record<string, unknown>, facts: unknown, steps: unknown, where: Where = {}): Record<string, unknown> {
  const out: Record<string, unknown> = { ...values };
  for (const [k, v] of Object.entries(scopeVars)) {
    out[k] = renderDeep(v, buildScope(out, facts, steps), { ...where, field: join(where.field, k) });
  }
  return out;
}
