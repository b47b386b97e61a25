import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { HostsmithError, type InputError } from '../../src/errors.js';
import { defineStepType } from '../../src/steps/define.js';
import { journaledTypes, usedTypes } from '../../src/recipe/custom-types.js';
import { loadRecipe } from '../../src/recipe/load.js';
import { stepType, withStepTypes } from '../../src/steps/registry.js';
import { RECIPE_SCHEMA_FILE } from '../tools/recipe-schema.js';
import { brief, fixture, loadIssues, yaml } from './fixtures.js';

// Fixture modules live in a temp folder with no node_modules: they reach zod by its file URL.
const ZOD = pathToFileURL(createRequire(import.meta.url).resolve('zod')).href;

/** A types module (.mjs) giving one step type per name, each with params { value: string }. */
const typesModule = (...names: string[]) => `import { z } from ${JSON.stringify(ZOD)};
const make = (type) => ({
  type,
  schema: z.object({ value: z.string().min(1) }).strict(),
  async check() { return { value: null }; },
  plan(p, s) { return { changed: s.value !== p.value, summary: type + ': ' + p.value, undo: { value: s.value } }; },
  async apply() { return {}; },
  async rollback() {},
  footprint: (p) => ({ reads: ['path:/etc/' + type], writes: ['path:/etc/' + type] }),
});
export default ${names.length === 1 ? `make(${JSON.stringify(names[0])})` : `[${names.map((n) => `make(${JSON.stringify(n)})`).join(', ')}]`};
`;

/** The same as TypeScript, with type annotations Node 20 could not strip itself. */
const tsModule = (name: string) => `import { z } from ${JSON.stringify(ZOD)};
interface State { value: string | null }
const schema = z.object({ value: z.string().min(1) }).strict();
type Params = z.output<typeof schema>;
export default {
  type: ${JSON.stringify(name)} as string,
  schema,
  async check(): Promise<State> { return { value: null }; },
  plan(p: Params, s: State) { return { changed: s.value !== p.value, summary: p.value, undo: { value: s.value } }; },
  async apply() { return {}; },
  async rollback() {},
  footprint: (_p: Params) => ({ reads: [] as string[], writes: [] as string[] }),
};
`;

const oneStepRecipe = (types: string[], ...step: string[]) => yaml('name: r', 'types:', ...types.map((t) => `  - ${t}`), 'steps:', ...step.map((l, i) => (i === 0 ? `  - ${l}` : `    ${l}`)));

describe('a recipe’s types: modules', () => {
  it('a .mjs and a .ts module both load, and their steps are validated and carried into the recipe', async () => {
    const dir = fixture({
      'types/a.mjs': typesModule('ini_value', 'motd_line'),
      'types/b.ts': tsModule('ts_kind'),
      'r.yml': yaml('name: r', 'types: [./types/a.mjs, ./types/b.ts]', 'steps:', '  - name: one', '    ini_value: { value: x }', '  - name: two', '    ts_kind: { value: y }'),
    });
    const r = await loadRecipe(join(dir, 'r.yml'));
    expect(r.steps.map((s) => [s.type, s.params])).toEqual([
      ['ini_value', { value: 'x' }],
      ['ts_kind', { value: 'y' }],
    ]);
    expect(r.types?.modules.map((m) => [m.path, m.types, m.sha256.length])).toEqual([
      [join(dir, 'types/a.mjs'), ['ini_value', 'motd_line'], 64],
      [join(dir, 'types/b.ts'), ['ts_kind'], 64],
    ]);
    expect(Object.keys(r.types?.types ?? {})).toEqual(['ini_value', 'motd_line', 'ts_kind']);
  });

  it('a step of a custom type with bad params is reported at its file:line:col, as a built-in’s is', async () => {
    const issues = await loadIssues({
      'types/a.mjs': typesModule('ini_value'),
      'recipe.yml': oneStepRecipe(['./types/a.mjs'], 'name: one', 'ini_value: { value: "", other: 1 }'),
    });
    expect(issues.map(brief)).toEqual(['6:25 steps[0].ini_value.value: must not be empty', '6:29 steps[0].ini_value.other: unknown key "other"']);
  });

  it('a missing module is reported at its entry in types:, with where it looked', async () => {
    const issues = await loadIssues({ 'recipe.yml': oneStepRecipe(['./types/nope.ts'], 'name: one', 'command: { run: "true" }') });
    expect(issues).toHaveLength(1);
    expect(brief(issues[0]!)).toMatch(/^3:5 types\[0\]: types module .*types\/nope\.ts not found$/);
  });

  it('a default export that is not a step type, or none, or a module that throws, is an input error at its entry', async () => {
    const issues = await loadIssues({
      'types/plain.mjs': 'export default { type: "x_kind", check() {} };\n',
      'types/none.mjs': 'export const y = 1;\n',
      'types/throws.mjs': 'throw new Error("broken on purpose");\n',
      'types/syntax.ts': 'export default {{;\n',
      'recipe.yml': oneStepRecipe(['./types/plain.mjs', './types/none.mjs', './types/throws.mjs', './types/syntax.ts', './types/x.yml'], 'name: one', 'command: { run: "true" }'),
    });
    const lines = issues.map(brief);
    expect(lines[0]).toMatch(/^3:5 types\[0\]: types module .*plain\.mjs: its default export is not a step type: step type "x_kind": its `schema` is not a zod schema/);
    expect(lines[1]).toMatch(/^4:5 types\[1\]: types module .*none\.mjs has no default export/);
    expect(lines[2]).toMatch(/^5:5 types\[2\]: types module .*throws\.mjs failed to load: broken on purpose/);
    expect(lines[3]).toMatch(/^6:5 types\[3\]: types module .*syntax\.ts failed to load/);
    expect(lines[4]).toBe('7:5 types[4]: a types module is a .ts, .mts, .cts, .js, .mjs or .cjs file');
    expect(lines).toHaveLength(5);
  });

  it('a type named as a built-in, as another module’s type, or as a key every step has, is refused at its entry', async () => {
    const issues = await loadIssues({
      'types/a.mjs': typesModule('file', 'ini_value'),
      'types/b.mjs': typesModule('ini_value', 'when'),
      'recipe.yml': oneStepRecipe(['./types/a.mjs', './types/b.mjs'], 'name: one', 'ini_value: { value: x }'),
    });
    expect(issues.map(brief)).toEqual([
      '3:5 types[0]: types module "./types/a.mjs" gives step type "file", which cannot be used: a built-in step type has that name',
      '4:5 types[1]: types module "./types/b.mjs" gives step type "ini_value", which cannot be used: types module "./types/a.mjs" gives one already',
      '4:5 types[1]: types module "./types/b.mjs" gives step type "when", which cannot be used: it is a key every step may have',
    ]);
  });

  it('types: in an included recipe is refused (declared once, by the recipe given); its steps may use the includer’s types', async () => {
    const issues = await loadIssues({
      'types/a.mjs': typesModule('ini_value'),
      'inc.yml': yaml('name: inc', 'types: [./types/a.mjs]', 'steps:', '  - name: in', '    ini_value: { value: x }'),
      'recipe.yml': oneStepRecipe(['./types/a.mjs'], 'include: { recipe: inc.yml }'),
    });
    expect(issues.map(brief)).toEqual(['2:1 types: types: is read from the recipe given to hostsmith only; declare the custom types there (the steps of an included recipe may use them)']);
  });
});

describe('custom types stay with their recipe', () => {
  it('a recipe loaded after another does not know the other’s types', async () => {
    const dir = fixture({
      'types/a.mjs': typesModule('ini_value'),
      'a.yml': oneStepRecipe(['./types/a.mjs'], 'name: one', 'ini_value: { value: x }'),
      'b.yml': yaml('name: b', 'steps:', '  - name: one', '    ini_value: { value: x }'),
    });
    const [a, b] = await Promise.allSettled([loadRecipe(join(dir, 'a.yml')), loadRecipe(join(dir, 'b.yml'))]);
    expect(a.status).toBe('fulfilled');
    expect(b.status).toBe('rejected');
    const issues = ((b as PromiseRejectedResult).reason as InputError).issues;
    expect(issues.map(brief)).toEqual([expect.stringMatching(/^4:5 steps\[0\]\.ini_value: unknown step type "ini_value" \(known types: command, file, /)]);
  });

  it('a run sees its own recipe’s types, concurrent runs each their own, and nothing outside a run', async () => {
    const dir = fixture({ 'types/a.mjs': typesModule('kind_a'), 'types/b.mjs': typesModule('kind_b') });
    const [a, b] = await Promise.all(['a', 'b'].map((n) => loadRecipe(writeRecipe(dir, n, oneStepRecipe([`./types/${n}.mjs`], 'name: one', `kind_${n}: { value: x }`)))));
    const seen = async (types: NonNullable<typeof a>['types']) =>
      withStepTypes(types?.types, async () => {
        await new Promise((done) => setTimeout(done, 5));
        return [stepType('kind_a')?.type, stepType('kind_b')?.type, stepType('file')?.type];
      });
    const [inA, inB] = await Promise.all([seen(a!.types), seen(b!.types)]);
    expect(inA).toEqual(['kind_a', undefined, 'file']);
    expect(inB).toEqual([undefined, 'kind_b', 'file']);
    expect(stepType('kind_a')).toBeUndefined();
    // A run of a recipe without types, started inside another's, sees none of the other's.
    expect(await withStepTypes(a!.types?.types, () => withStepTypes(undefined, async () => stepType('kind_a')))).toBeUndefined();
  });
});

describe('the modules a journaled run used (undo, recover)', () => {
  it('are imported again when unchanged, and refused (exit 2, naming the file and the fix) when gone or edited', async () => {
    const dir = fixture({ 'types/a.mjs': typesModule('ini_value'), 'r.yml': oneStepRecipe(['./types/a.mjs'], 'name: one', 'ini_value: { value: x }') });
    const r = await loadRecipe(join(dir, 'r.yml'));
    const refs = r.types!.modules;
    const again = await journaledTypes(refs, 'run-1', 'undo');
    expect(Object.keys(again!.types)).toEqual(['ini_value']);

    writeFileSync(join(dir, 'types/a.mjs'), typesModule('ini_value') + '// edited\n');
    const changed = await journaledTypes(refs, 'run-1', 'undo').catch((e: unknown) => e);
    expect(changed).toBeInstanceOf(HostsmithError);
    expect((changed as HostsmithError).exitCode).toBe(2);
    expect((changed as Error).message).toMatch(
      /^undo refused: the custom step types module .*types\/a\.mjs has changed since run run-1 .*Restore the module as it was at the run .*then run `hostsmith undo run-1` again/,
    );

    const gone = await journaledTypes([{ ...refs[0]!, path: join(dir, 'types/gone.mjs') }], 'run-1', 'recover').catch((e: unknown) => e);
    expect((gone as HostsmithError).exitCode).toBe(2);
    expect((gone as Error).message).toMatch(/^recover refused: run run-1 used custom step types from .*types\/gone\.mjs, which cannot be read now/);
  });

  it('only the modules whose types the run has steps of are asked for', () => {
    const ref = (path: string, ...types: string[]) => ({ path, sha256: 'x', types });
    const run = { hosts: [{ steps: [{ type: 'file' }, { type: 'kind_b' }] }, { steps: [] }] };
    expect(usedTypes([ref('/a.ts', 'kind_a'), ref('/b.ts', 'kind_c', 'kind_b')], run)).toEqual([ref('/b.ts', 'kind_c', 'kind_b')]);
    expect(usedTypes(undefined, run)).toEqual([]);
  });
});

describe('the recipe JSON Schema and custom types', () => {
  const validate = new Ajv({ strict: true, allowUnionTypes: true }).compile(JSON.parse(readFileSync(RECIPE_SCHEMA_FILE, 'utf8')));
  const ok = (text: string) => validate(parse(text));
  const custom = ['name: one', 'ini_value: { value: x }', 'when: "true"'];

  it('takes a step of an unknown key, with any params, only in a recipe with types:', () => {
    expect(ok(oneStepRecipe(['./types/a.mjs'], ...custom))).toBe(true);
    expect(ok(yaml('name: r', 'handlers:', '  - name: h', '    ini_value: [1, 2]', 'types: [./t.ts]', 'steps: []'))).toBe(true);
    expect(ok(yaml('name: r', 'steps:', '  - name: one', '    ini_value: { value: x }'))).toBe(false);
    expect(ok(yaml('name: r', 'types: []', 'steps:', '  - name: one', '    ini_value: { value: x }'))).toBe(false);
  });

  it('still holds built-in steps to their params, and a step to one type key, in a recipe with types:', () => {
    expect(ok(oneStepRecipe(['./types/a.mjs'], 'name: one', 'file: { pth: /x }'))).toBe(false);
    expect(ok(oneStepRecipe(['./types/a.mjs'], 'name: one', 'file: { path: /x }', 'ini_value: {}'))).toBe(false);
    expect(ok(oneStepRecipe(['./types/a.mjs'], 'name: one', 'when: "true"'))).toBe(false);
    expect(ok(oneStepRecipe(['./types/a.mjs'], 'name: one', 'Not-A-Word: {}'))).toBe(false);
    expect(ok(oneStepRecipe(['./types/a.yml'], ...custom))).toBe(false);
  });
});

describe('defineStepType', () => {
  it('returns the type it is given, and refuses what is not one', () => {
    const t = {
      type: 'x_kind',
      schema: { safeParse: () => ({}) },
      check: async () => 1,
      plan: () => ({ changed: false, summary: '', undo: null }),
      apply: async () => ({}),
      rollback: async () => {},
      footprint: () => ({ reads: [], writes: [] }),
    };
    expect(defineStepType(t as never)).toBe(t);
    expect(() => defineStepType({ ...t, rollback: undefined } as never)).toThrow('defineStepType: step type "x_kind": `rollback` is missing or not a function');
    expect(() => defineStepType({ ...t, type: 'X Kind' } as never)).toThrow(/not a lowercase word/);
  });
});

function writeRecipe(dir: string, name: string, text: string): string {
  const file = join(dir, `${name}.yml`);
  writeFileSync(file, text);
  return file;
}
