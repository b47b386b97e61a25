import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';

/**
 * Where a step's `src` file is looked up (SPEC §2): from the recipe's folder; a bare name also in
 * `templates/` (or `files/`) in the recipe's folder and in its parent, so recipes/web.yml finds
 * templates/site.conf.hbs at the project's top.
 */
export function sourceCandidates(recipeDir: string, src: string, kind: 'templates' | 'files'): string[] {
  if (isAbsolute(src)) return [src];
  const out = [resolve(recipeDir, src)];
  if (!src.includes('/')) out.push(join(recipeDir, kind, src), join(dirname(recipeDir), kind, src));
  return out;
}

export async function findSource(recipeDir: string, src: string, kind: 'templates' | 'files'): Promise<string | null> {
  for (const c of sourceCandidates(recipeDir, src, kind)) {
    try {
      if ((await stat(c)).isFile()) return c;
    } catch {
      // try the next place
    }
  }
  return null;
}

export async function readSource(recipeDir: string, src: string, kind: 'templates' | 'files'): Promise<{ path: string; content: Buffer }> {
  const path = await findSource(recipeDir, src, kind);
  if (!path) throw new Error(`cannot find "${src}" (looked in ${sourceCandidates(recipeDir, src, kind).join(', ')})`);
  return { path, content: await readFile(path) };
}
