import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, expect } from 'vitest';
import { InputError, type InputIssue } from '../../src/errors.js';
import { loadRecipe } from '../../src/recipe/load.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A temp folder holding `files` (name → text); removed after the test file. */
export function fixture(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-recipe-test-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

/** YAML from lines, so tests can count lines and columns at a glance. */
export const yaml = (...lines: string[]) => lines.join('\n') + '\n';

/** The issues loadRecipe reports for `main` among `files`; fails when it loads fine. */
export async function loadIssues(files: Record<string, string>, main = 'recipe.yml'): Promise<InputIssue[]> {
  const dir = fixture(files);
  try {
    await loadRecipe(join(dir, main));
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return (e as InputError).issues;
  }
  throw new Error('expected the recipe to be rejected');
}

/** `line:col path: message`, for compact assertions. */
export const brief = (i: InputIssue) => `${i.line}:${i.col} ${i.path ?? ''}: ${i.message}`;
