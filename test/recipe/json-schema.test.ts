import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { InputError, loadRecipe } from '../../src/index.js';
import { INVENTORY_SCHEMA_FILE, RECIPE_SCHEMA_FILE, schemaFiles } from '../tools/recipe-schema.js';
import { fixture, yaml } from './fixtures.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const RECIPES = join(ROOT, 'recipes');
const examples = readdirSync(RECIPES)
  .filter((f) => f.endsWith('.yml'))
  .sort();
const SCHEMA_LINE = '# yaml-language-server: $schema=../schema/recipe.schema.json';

// Strict, so a keyword the schema misspells or ajv does not know fails here rather than being ignored.
const ajv = new Ajv({ strict: true, allowUnionTypes: true, allErrors: true });
const validate = ajv.compile(JSON.parse(readFileSync(RECIPE_SCHEMA_FILE, 'utf8')));
const schemaSays = (text: string) => validate(parse(text));

/** Whether the real loader takes the recipe; `files` are put next to it (included recipes). */
async function loaderSays(text: string, files: Record<string, string> = {}): Promise<boolean> {
  const dir = fixture({ ...files, 'recipe.yml': text });
  try {
    await loadRecipe(join(dir, 'recipe.yml'));
    return true;
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return false;
  }
}

/** A recipe whose one step is `step` (lines, indented as list item content). */
const oneStep = (...step: string[]) => yaml('name: broken', 'vars:', '  svc: nginx', '  on: true', 'steps:', ...step.map((l, i) => (i === 0 ? `  - ${l}` : `    ${l}`)));

describe('the recipe JSON Schema', () => {
  it('the shipped schema files are the ones made from the schemas the loader uses (npm run recipe-schema)', () => {
    const files = schemaFiles();
    expect(Object.keys(files)).toContain(RECIPE_SCHEMA_FILE);
    for (const [file, text] of Object.entries(files)) expect(readFileSync(file, 'utf8'), file).toBe(text);
  });

  it('ships in the package', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[] };
    expect(pkg.files).toContain('schema');
  });

  it('has a branch for every step type, so a new type appears without touching the generator', async () => {
    const { stepTypes } = await import('../../src/steps/registry.js');
    const schema = JSON.parse(readFileSync(RECIPE_SCHEMA_FILE, 'utf8')) as { definitions: { step: { oneOf: Array<{ required: string[] }> } } };
    const typeKeys = schema.definitions.step.oneOf.map((b) => b.required.filter((k) => k !== 'name'));
    expect(typeKeys).toEqual(Object.keys(stepTypes).map((t) => [t]));
  });
});

describe('every example recipe', () => {
  it('there are examples', () => expect(examples.length).toBeGreaterThan(0));

  it.each(examples)('%s starts with the yaml-language-server line, passes the JSON Schema and loads', async (file) => {
    const text = readFileSync(join(RECIPES, file), 'utf8');
    expect(text.split('\n')[0]).toBe(SCHEMA_LINE);
    const ok = schemaSays(text);
    expect(validate.errors ?? [], file).toEqual([]);
    expect(ok).toBe(true);
    await expect(loadRecipe(join(RECIPES, file))).resolves.toMatchObject({ name: file.replace(/\.yml$/, '') });
  });
});

describe('the JSON Schema and the loader agree', () => {
  const refused: Array<[string, string]> = [
    ['an unknown step type key', oneStep('name: a', 'fil: { path: /x }')],
    ['a step with two type keys', oneStep('name: a', 'file: { path: /x }', 'command: { run: "true" }')],
    ['a step with no type key', oneStep('name: a', 'when: "true"')],
    ['a misspelled param', oneStep('name: a', 'file: { pth: /x }')],
    ['a misspelled common key', oneStep('name: a', 'notfy: [b]', 'file: { path: /x }')],
    ['a wrong type in a common key', oneStep('name: a', 'retry: { attempts: "many" }', 'file: { path: /x }')],
    ['a template where the loader reads the value itself (retry)', oneStep('name: a', 'retry: { attempts: "{{svc}}" }', 'file: { path: /x }')],
    ['a zero timeout', oneStep('name: a', 'timeout: 0s', 'file: { path: /x }')],
    ['a wrong type in a param', oneStep('name: a', 'service: { name: nginx, enabled: maybe }')],
    ['a value outside a param enum', oneStep('name: a', 'service: { name: nginx, state: running }')],
    ['a missing required param', oneStep('name: a', 'command: { rollback: "true" }')],
    ['a missing step name', oneStep('file: { path: /x }')],
    ['an empty step name', oneStep('name: ""', 'file: { path: /x }')],
    ['an include with a name', oneStep('name: a', 'include: { recipe: lib.yml }')],
    ['an include among handlers', yaml('name: broken', 'steps: []', 'handlers:', '  - include: { recipe: lib.yml }')],
    ['a recipe name with capitals', yaml('name: Broken', 'steps: []')],
    ['an unknown top-level key', yaml('name: broken', 'stpes: []', 'steps: []')],
    ['no steps', yaml('name: broken')],
    ['parallel 0', yaml('name: broken', 'defaults: { parallel: 0 }', 'steps: []')],
  ];
  const lib = { 'lib.yml': yaml('name: lib', 'steps:', '  - name: x', '    command: { run: "true" }') };

  it.each(refused)('both refuse %s', async (_what, text) => {
    expect(schemaSays(text)).toBe(false);
    expect(await loaderSays(text, lib)).toBe(false);
  });

  const accepted: Array<[string, string]> = [
    ['templates in params where a boolean, an enum or a pattern is expected', oneStep('name: a', 'service: { name: "{{svc}}", state: "{{svc}}", enabled: "{{on}}" }')],
    [
      'the short forms: retry: n, needs: one name, when: a boolean, timeout: seconds',
      yaml('name: ok', 'steps:', '  - name: a', '    command: { run: "true" }', '  - name: b', '    needs: a', '    when: true', '    retry: 3', '    timeout: 90', '    command: { run: "true" }'),
    ],
    [
      'an include, and defaults with durations',
      yaml(
        'name: ok',
        'defaults: { timeout: 1h30m, retry: { attempts: 2, delay: 0 }, parallel: 2 }',
        'steps:',
        '  - include: { recipe: lib.yml }',
        '  - name: a',
        '    file: { path: /x, mode: 644 }',
        'handlers: ~',
      ),
    ],
  ];

  it.each(accepted)('both accept %s', async (_what, text) => {
    const ok = schemaSays(text);
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
    expect(await loaderSays(text, lib)).toBe(true);
  });
});

describe('the inventory JSON Schema', () => {
  const check = new Ajv({ strict: true, allowUnionTypes: true, allErrors: true }).compile(JSON.parse(readFileSync(INVENTORY_SCHEMA_FILE, 'utf8')));
  it('accepts an inventory as the docs write one, and one bootstrap saved', () => {
    const doc = parse(
      'defaults: { user: deploy, port: 22, identity: ~/.ssh/id_ed25519, sudo: true }\nhosts:\n  web1: { address: 203.0.113.10, groups: [web], vars: { server_name: a.example.com } }\n  db1: { address: 203.0.113.20, port: 2222, groups: [db] }\n  newbox: { address: 127.0.0.5, port: 2222, user: root, identity: ~/.ssh/id_ed25519, vars: { site_name: blog-1, site_port: 8080 } }\ngroups:\n  web: { vars: { upstream_port: 8080 } }\n',
    );
    expect(check(doc), JSON.stringify(check.errors)).toBe(true);
  });
  it('refuses a misspelled key and a port that is no port', () => {
    expect(check(parse('hosts:\n  h1: { adress: 1.2.3.4 }\n'))).toBe(false);
    expect(check(parse('hosts:\n  h1: { address: 1.2.3.4, port: 70000 }\n'))).toBe(false);
  });
});
