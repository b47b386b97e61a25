/**
 * Inputs that could turn a recipe against the controller or a host, refused at load (exit 2,
 * file:line:col) before anything is contacted: an env name the shell cannot export, a `src`
 * outside the recipe's project; and a plan file never written through a link.
 */
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkPlanOut } from '../../src/engine/plan-file.js';
import { InputError } from '../../src/errors.js';
import { loadRecipe } from '../../src/index.js';

function project(files: Record<string, string>): string {
  const top = mkdtempSync(join(tmpdir(), 'hostsmith-proj-'));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(join(top, p, '..'), { recursive: true });
    writeFileSync(join(top, p), text);
  }
  return top;
}

async function problems(file: string): Promise<string[]> {
  try {
    await loadRecipe(file);
  } catch (e) {
    if (e instanceof InputError) return e.issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`);
    throw e;
  }
  return [];
}

describe('load-time refusals', () => {
  it('an env name that is not a shell variable name', async () => {
    const top = project({ 'recipes/r.yml': 'name: r\nsteps:\n  - name: C\n    command: { run: "true", env: { "A-B": "1", ok_1: "2", "1x": 3 } }\n' });
    const p = await problems(join(top, 'recipes/r.yml'));
    expect(p).toHaveLength(2);
    expect(p.join('\n')).toMatch(/steps\[0\]\.command\.env\.A-B: an environment variable name is letters/);
    expect(p.join('\n')).toMatch(/steps\[0\]\.command\.env\.1x: an environment variable name/);
  });

  it('a src outside the recipe project, relative or absolute or through a link, is refused; one in the project is read', async () => {
    const outside = project({ 'secret.txt': 'controller secret\n' });
    const top = project({
      'templates/ok.hbs': 'fine\n',
      'recipes/r.yml': [
        'name: r',
        'steps:',
        '  - name: Ok',
        '    template: { src: ok.hbs, dest: /etc/ok }',
        '  - name: Up',
        `    file: { path: /etc/a, src: "../../${outside.split('/').pop()}/secret.txt" }`,
        '  - name: Abs',
        `    template: { src: "${outside}/secret.txt", dest: /etc/b }`,
        '  - name: Link',
        '    file: { path: /etc/c, src: linked.txt }',
        '',
      ].join('\n'),
    });
    symlinkSync(join(outside, 'secret.txt'), join(top, 'recipes/linked.txt'));
    const p = await problems(join(top, 'recipes/r.yml'));
    expect(p).toEqual([
      expect.stringMatching(/steps\[1\]\.file\.src: .*outside the recipe's project/),
      expect.stringMatching(/steps\[2\]\.template\.src: .*outside the recipe's project/),
      expect.stringMatching(/steps\[3\]\.file\.src: .*outside the recipe's project/),
    ]);
  });

  it('plan --out refuses a symbolic link, and a folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostsmith-out-'));
    writeFileSync(join(dir, 'victim'), 'keep\n');
    symlinkSync(join(dir, 'victim'), join(dir, 'plan.json'));
    await expect(checkPlanOut(join(dir, 'plan.json'))).rejects.toThrow(/symbolic link/);
    await expect(checkPlanOut(dir)).rejects.toThrow(/not a regular file/);
    await expect(checkPlanOut(join(dir, 'new.json'))).resolves.toBeUndefined();
    expect(readFileSync(join(dir, 'victim'), 'utf8')).toBe('keep\n');
  });
});
