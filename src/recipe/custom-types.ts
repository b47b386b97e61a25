/**
 * A recipe's `types:` modules: imported (TypeScript through tsx, since Node 20 cannot strip types
 * itself), each default export judged as a step type, and fingerprinted by the sha256 of the
 * module's source. The journal keeps the path and the digest, so `undo` and `recover` take a run
 * back with the very code that made its changes — or refuse, when that code is gone or changed.
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { errorMessage, HostsmithError } from '../errors.js';
import { stepTypeProblem } from '../steps/define.js';
import type { StepType } from '../steps/step.js';
import { sha256 } from '../steps/step.js';
import { displayPath } from '../yaml.js';

/** What the journal keeps of a module (run-started `types`). */
export interface TypeModuleRef {
  /** Absolute path of the module. */
  path: string;
  /** sha256 of its source as it was imported. */
  sha256: string;
  /** The type names it gave. */
  types: string[];
}

/** A recipe's custom types: the modules, and every type by its recipe key. */
export interface CustomTypes {
  modules: TypeModuleRef[];
  types: Record<string, StepType>;
}

export const TYPE_MODULE_EXTENSIONS = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs'];
const TYPESCRIPT = new Set(['.ts', '.mts', '.cts']);

/**
 * Imports one module and returns its types, or why it cannot be used. The source's digest goes in
 * the module's URL: Node keeps one instance per URL for the life of the process, and a module
 * edited since an earlier import must not be served as it was when its digest says otherwise.
 */
/**
 * A module's default export, imported as Node would (TypeScript through tsx). `digest` busts
 * Node's module cache, so a file changed since it was first imported in this process is read anew.
 */
export async function importDefault(path: string, digest: string): Promise<unknown> {
  const url = `${pathToFileURL(path).href}?sha256=${digest}`;
  let ns: Record<string, unknown>;
  if (TYPESCRIPT.has(extname(path))) {
    const { tsImport } = await import('tsx/esm/api');
    ns = await tsImport(url, import.meta.url);
  } else ns = await import(url);
  let value = ns.default;
  // A .ts file outside an ESM package is compiled to CommonJS by tsx: its default export arrives wrapped once more.
  if (value && typeof value === 'object' && (value as { __esModule?: unknown }).__esModule === true) value = 'default' in value ? (value as { default: unknown }).default : undefined;
  return value;
}

export async function importTypeModule(path: string): Promise<{ sha256: string; types: StepType[] } | { error: string }> {
  const ext = extname(path);
  if (!TYPE_MODULE_EXTENSIONS.includes(ext)) return { error: `a types module is a .ts, .mts, .cts, .js, .mjs or .cjs file, not "${ext || 'no extension'}"` };
  let source: Buffer;
  try {
    source = await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { error: code === 'ENOENT' ? `types module ${displayPath(path)} not found` : `cannot read types module ${displayPath(path)}: ${errorMessage(e)}` };
  }
  const digest = sha256(source);
  let value: unknown;
  try {
    value = await importDefault(path, digest);
  } catch (e) {
    return { error: `types module ${displayPath(path)} failed to load: ${errorMessage(e)}` };
  }
  if (value === undefined) return { error: `types module ${displayPath(path)} has no default export (export default a step type, or an array of them)` };
  const list = Array.isArray(value) ? value : [value];
  if (!list.length) return { error: `types module ${displayPath(path)} exports an empty array` };
  for (const [i, t] of list.entries()) {
    const why = stepTypeProblem(t);
    if (why) return { error: `types module ${displayPath(path)}: its default export${Array.isArray(value) ? ` [${i}]` : ''} is not a step type: ${why} (build it with defineStepType from hostsmith)` };
  }
  return { sha256: digest, types: list as StepType[] };
}

/**
 * The journaled modules whose types the run has steps (or handlers) of: a module the run never
 * used a type of is not needed to take it back, and is not asked for.
 */
export function usedTypes(refs: readonly TypeModuleRef[] | undefined, run: { hosts: ReadonlyArray<{ steps: ReadonlyArray<{ type: string }> }> }): TypeModuleRef[] {
  const used = new Set(run.hosts.flatMap((h) => h.steps.map((s) => s.type)));
  return (refs ?? []).filter((ref) => ref.types.some((t) => used.has(t)));
}

/**
 * The custom types a journaled run used, imported again for `undo` or `recover`; throws (exit 2)
 * when a module is gone, changed since the run, or no longer gives the types the run used.
 */
export async function journaledTypes(refs: readonly TypeModuleRef[] | undefined, runId: string, command: 'undo' | 'recover'): Promise<CustomTypes | undefined> {
  if (!refs?.length) return undefined;
  const out: CustomTypes = { modules: [], types: {} };
  const again = `then run \`hostsmith ${command} ${runId}\` again`;
  for (const ref of refs) {
    const shown = displayPath(ref.path);
    let now: Buffer;
    try {
      now = await readFile(ref.path);
    } catch (e) {
      throw new HostsmithError(
        `${command} refused: run ${runId} used custom step types from ${shown}, which cannot be read now (${errorMessage(e)}); its steps are taken back by that module's rollback. Put the module back at that path as it was at the run (sha256 ${ref.sha256}), ${again}. Nothing was contacted or changed.`,
        2,
      );
    }
    const digest = sha256(now);
    if (digest !== ref.sha256) {
      throw new HostsmithError(
        `${command} refused: the custom step types module ${shown} has changed since run ${runId} (sha256 now ${digest.slice(0, 12)}…, at the run ${ref.sha256.slice(0, 12)}…): its steps must be taken back by the code that made them. Restore the module as it was at the run (from version control: the version whose sha256 is ${ref.sha256}), ${again}. Nothing was contacted or changed.`,
        2,
      );
    }
    const r = await importTypeModule(ref.path);
    if ('error' in r) throw new HostsmithError(`${command} refused: run ${runId} used custom step types, and ${r.error}. Nothing was contacted or changed.`, 2);
    for (const t of r.types) out.types[t.type] = t;
    const lost = ref.types.filter((name) => !out.types[name]);
    if (lost.length) throw new HostsmithError(`${command} refused: ${shown} no longer gives the step type(s) ${lost.join(', ')} run ${runId} used. Nothing was contacted or changed.`, 2);
    out.modules.push({ path: ref.path, sha256: digest, types: r.types.map((t) => t.type) });
  }
  return out;
}
