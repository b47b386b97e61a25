import { readFile, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { formatIssue } from '../errors.js';
import { decodeText, displayPath } from '../yaml.js';

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
      if ((await stat(c)).isFile()) {
        await confined(recipeDir, src, c);
        return c;
      }
    } catch (e) {
      if (e instanceof OutsideProject) throw e;
      // try the next place
    }
  }
  return null;
}

/** A source outside the recipe's project: refused, as `../../../etc/shadow` would be sent to every host. */
export class OutsideProject extends Error {}

/**
 * A source must be in the recipe's project: its folder or that folder's parent (where recipes/
 * and templates/ sit side by side), links resolved. What a recipe reads from the controller is
 * sent to hosts and shown in diffs, so a recipe from elsewhere cannot reach the controller's
 * own files (~/.ssh, /etc/shadow) by a relative or absolute path.
 */
async function confined(recipeDir: string, src: string, file: string): Promise<void> {
  const real = await realpath(file);
  const roots = await Promise.all([recipeDir, dirname(recipeDir)].map((d) => realpath(d).catch(() => resolve(d))));
  if (roots.some((r) => real === r || real.startsWith(r.endsWith(sep) ? r : `${r}${sep}`))) return;
  throw new OutsideProject(`"${src}" is ${real}, outside the recipe's project (${roots[1]}): sources are read from the recipe's folder and its parent only`);
}

/**
 * A step's source as bytes. A file's are sent as they are; a template's must be UTF-8 text
 * (a leading byte-order mark is dropped): anything else is refused at the place of its first bad byte.
 */
export async function readSource(recipeDir: string, src: string, kind: 'templates' | 'files'): Promise<{ path: string; content: Buffer }> {
  const path = await findSource(recipeDir, src, kind).catch((e: unknown) => {
    if (e instanceof OutsideProject) throw new Error(e.message);
    throw e;
  });
  if (!path) throw new Error(`cannot find "${src}" (looked in ${sourceCandidates(recipeDir, src, kind).join(', ')})`);
  const content = await readFile(path);
  if (kind === 'files') return { path, content };
  const d = decodeText(displayPath(path), content, { what: 'template' });
  if ('issue' in d) throw new Error(formatIssue(d.issue));
  return { path, content: Buffer.from(d.text, 'utf8') };
}
