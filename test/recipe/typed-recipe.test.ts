/**
 * Recipes written in TypeScript (`export default defineRecipe({...})`): loaded directly, through
 * the same checks as YAML, and equal to their YAML twin. Their static typing is tested by the type
 * checker over test/types/typed-recipe.ts.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { loadRecipe } from '../../src/recipe/load.js';

const ROOT = resolve(import.meta.dirname, '../..');

async function problems(file: string): Promise<string> {
  try {
    await loadRecipe(file);
  } catch (e) {
    if (e instanceof InputError) return e.message;
    throw e;
  }
  throw new Error(`${file} loaded without a problem`);
}

function module(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-typed-'));
  writeFileSync(join(dir, name), text);
  return join(dir, name);
}

describe('typed recipes', () => {
  it('recipes/motd.ts loads to exactly what recipes/motd.yml does', async () => {
    const ts = await loadRecipe(join(ROOT, 'recipes/motd.ts'));
    const yml = await loadRecipe(join(ROOT, 'recipes/motd.yml'));
    expect(ts.file).toMatch(/motd\.ts$/);
    // Where each step is written differs, and only that: a module's steps have no line.
    const bare = (r: typeof ts) => ({ ...r, file: '', steps: r.steps.map((s) => ({ ...s, loc: undefined })), handlers: r.handlers.map((s) => ({ ...s, loc: undefined })) });
    expect(bare(ts)).toEqual(bare(yml));
    expect(ts.steps.map((s) => s.loc)).toEqual(ts.steps.map(() => ({ file: ts.file, line: 0, col: 0 })));
  });

  it('a module recipe is checked as YAML is, its problems placed by path (no line of a file that does not exist)', async () => {
    const file = module('bad.ts', "export default { name: 'bad', steps: [{ name: 'A', file: { pth: '/x' } }, { name: 'B', command: { run: '{{nope}}' } }] };\n");
    const text = await problems(file);
    expect(text).toContain(`${file}: steps[0].file.pth: unknown key "pth" (did you mean "path"?)`);
    expect(text).toContain(`${file}: steps[1].command.run: unknown variable "nope"`);
    expect(text).not.toMatch(/bad\.ts:\d+:\d+/);
  });

  it('a module with no default export, or one that throws, is an input error that says so', async () => {
    expect(await problems(module('none.ts', 'export const x = 1;\n'))).toMatch(/a recipe module exports its recipe as its default export \(export default defineRecipe\(\{\.\.\.\}\)\), not nothing/);
    expect(await problems(module('list.mjs', 'export default [];\n'))).toMatch(/not an array/);
    expect(await problems(module('boom.mjs', "throw new Error('boom');\n"))).toMatch(/cannot load the recipe module: boom/);
  });

  it('only data is taken from the module: a function where a value goes is a problem, not code that runs', async () => {
    const file = module('fn.mjs', "export default { name: 'fn', steps: [{ name: 'A', command: { run: () => 'rm -rf /' } }] };\n");
    expect(await problems(file)).toMatch(/steps\[0\]\.command\.run: missing required field "run"/);
  });
});
