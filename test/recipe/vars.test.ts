import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { convertVar, loadVarsFile, missingPromptVars, parseVarArgs, parseVarDecls, resolveVars } from '../../src/recipe/vars.js';
import type { VarSpec } from '../../src/recipe/types.js';
import { fixture, yaml } from './fixtures.js';

const recipeWith = (decls: Record<string, unknown>) => {
  const { vars, issues } = parseVarDecls(decls);
  expect(issues).toEqual([]);
  return { vars };
};

function inputError(f: () => unknown): InputError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return e as InputError;
  }
  throw new Error('expected an InputError');
}

describe('parseVarDecls', () => {
  it('reads map declarations and bare defaults, inferring the type from the default', () => {
    const { vars, issues } = parseVarDecls({
      server_name: { default: 'example.com', description: 'Public host name', prompt: true },
      port: { default: 3000 },
      workers: 4,
      debug: false,
      hosts: ['a', 'b'],
      labels: { app: 'web' }, // a map without declaration keys is a map default
      token: { required: true, secret: true },
      note: null,
      mode: { type: 'string', default: 644 },
    });
    expect(issues).toEqual([]);
    const types = Object.fromEntries(Object.values(vars).map((v) => [v.name, v.type]));
    expect(types).toEqual({
      server_name: 'string',
      port: 'number',
      workers: 'number',
      debug: 'boolean',
      hosts: 'list',
      labels: 'map',
      token: 'string',
      note: 'string',
      mode: 'string',
    });
    expect(vars.server_name).toEqual({ name: 'server_name', type: 'string', default: 'example.com', description: 'Public host name', required: false, secret: false, prompt: true });
    expect(vars.labels!.default).toEqual({ app: 'web' });
    expect(vars.token).toMatchObject({ required: true, secret: true });
    expect(vars.token).not.toHaveProperty('default');
    expect(vars.note).not.toHaveProperty('default');
    expect(vars.mode!.default).toBe('644');
  });

  it.each([
    [{ port: { type: 'int' } }, ['vars', 'port', 'type'], 'must be one of: string, number, boolean, list, map (got "int")'],
    [{ port: { type: 'number', default: 'x' } }, ['vars', 'port', 'default'], 'not a number'],
    [{ port: { required: 'yes' } }, ['vars', 'port', 'required'], 'expected boolean, got string'],
    [{ port: { pattern: '(' } }, ['vars', 'port', 'pattern'], expect.stringMatching(/^invalid regular expression/)],
    [{ port: { default: 'abc', pattern: '^\\d+$' } }, ['vars', 'port', 'default'], 'does not match pattern ^\\d+$'],
    [{ port: { default: 1, secrt: true } }, ['vars', 'port', 'secrt'], 'unknown key "secrt" (did you mean "secret"?)'],
    [{ 'my-var': 1 }, ['vars', 'my-var'], 'invalid var name "my-var" (use letters, digits and _, not starting with a digit)'],
    [{ steps: 1 }, ['vars', 'steps'], 'var name "steps" is reserved'],
    [{ default: 1 }, ['vars', 'default'], 'var name "default" is reserved'],
  ])('%j → %j: %s', (decls, path, message) => {
    expect(parseVarDecls(decls).issues).toEqual([expect.objectContaining({ path, message })]);
  });
});

describe('convertVar', () => {
  const spec = (type: VarSpec['type'], pattern?: string) => ({ type, pattern });
  it.each([
    ['number', '8080', 8080],
    ['number', ' -1.5 ', -1.5],
    ['number', '1e3', 1000],
    ['boolean', 'true', true],
    ['boolean', 'YES', true],
    ['boolean', '1', true],
    ['boolean', 'no', false],
    ['boolean', '0', false],
    ['boolean', 'False', false],
    ['list', 'a, b,c', ['a', 'b', 'c']],
    ['list', '', []],
    ['list', '[1, "x"]', [1, 'x']],
    ['map', '{"a": 1}', { a: 1 }],
    ['string', 'it\'s "x"', 'it\'s "x"'],
    ['string', 3000, '3000'],
    ['number', 3, 3],
    ['list', ['x'], ['x']],
  ] as const)('%s %j → %j', (type, raw, value) => {
    expect(convertVar(spec(type), raw)).toEqual({ value });
  });

  it.each([
    ['number', 'abc', 'not a number'],
    ['number', '', 'not a number'],
    ['number', '12px', 'not a number'],
    ['boolean', 'maybe', 'not a boolean (use true/false, yes/no or 1/0)'],
    ['list', '[1', 'not a list (invalid JSON list)'],
    ['map', 'a=1', 'not a map (use a JSON object like {"a":1})'],
    ['map', '[1]', 'not a map (use a JSON object like {"a":1})'],
    ['string', ['x'], 'not a string'],
    ['number', [1], 'not a number'],
  ] as const)('%s %j → %s', (type, raw, error) => {
    expect(convertVar(spec(type), raw)).toEqual({ error });
  });

  it('checks the pattern against the string form', () => {
    expect(convertVar(spec('number', '^[0-9]{4}$'), '8080')).toEqual({ value: 8080 });
    expect(convertVar(spec('number', '^[0-9]{4}$'), '80')).toEqual({ error: 'does not match pattern ^[0-9]{4}$' });
    expect(convertVar(spec('string', '^[^@]+@[^@]+$'), 'admin')).toEqual({ error: 'does not match pattern ^[^@]+@[^@]+$' });
  });
});

describe('resolveVars', () => {
  const recipe = recipeWith({
    server_name: { default: 'example.com' },
    port: { default: 3000 },
    admin_email: { required: true, pattern: '^[^@]+@[^@]+$' },
    db_password: { required: true, secret: true },
    optional: {},
    tags: { type: 'list' },
  });
  const required = { admin_email: 'a@b.c', db_password: 'hunter2' };

  it('takes command line over vars file over inventory over default, converting to the type', () => {
    const { values } = resolveVars(recipe, {
      cli: { ...required, port: '8080' },
      file: { port: 9090, server_name: 'file.example', tags: 'a,b' },
      inventory: { port: 7070, server_name: 'inv.example', optional: 'inv' },
    });
    expect(values).toEqual({
      server_name: 'file.example',
      port: 8080,
      admin_email: 'a@b.c',
      db_password: 'hunter2',
      optional: 'inv',
      tags: ['a', 'b'],
    });
  });

  it('resolves a var with no default and no value to null, and a null source value to the next source', () => {
    const { values } = resolveVars(recipe, { cli: required, file: { optional: null }, inventory: {} });
    expect(values.optional).toBeNull();
    expect(values.tags).toBeNull();
    expect(values.port).toBe(3000);
  });

  it('returns the secret values for masking', () => {
    expect(resolveVars(recipe, { cli: required }).secrets).toEqual(['hunter2']);
    const listSecret = recipeWith({ keys: { secret: true, type: 'list' } });
    expect(resolveVars(listSecret, { cli: { keys: 'k1,k2' } }).secrets).toEqual(['k1', 'k2']);
  });

  it('lists every problem at once: conversions, unknown names, missing required vars', () => {
    const err = inputError(() => resolveVars(recipe, { cli: { port: 'abc', server_nme: 'x', db_password: '', admin_email: 'nope' }, inventory: { tags: 5 } }));
    expect(err.issues.map((i) => i.message)).toEqual([
      '--var server_nme=x: unknown var "server_nme" (did you mean "server_name"?)',
      '--var port=abc: not a number',
      '--var admin_email=nope: does not match pattern ^[^@]+@[^@]+$',
      'inventory var tags: not a list (use a,b,c or a JSON list)',
    ]);
    const missing = inputError(() => resolveVars(recipe, {}));
    expect(missing.issues.map((i) => i.message)).toEqual([
      'missing required var "admin_email" (give it with --var admin_email=... or in a --vars-file)',
      'missing required var "db_password" (give it with --var db_password=... or in a --vars-file)',
    ]);
    expect(missing.exitCode).toBe(2);
  });

  it('never echoes a secret value in an error', () => {
    const r = recipeWith({ pin: { type: 'number', secret: true } });
    const err = inputError(() => resolveVars(r, { cli: { pin: 's3cret' } }));
    expect(err.message).toBe('--var pin=***: not a number');
  });

  it('ignores vars-file and inventory names the recipe does not declare', () => {
    expect(resolveVars(recipe, { cli: required, file: { other: 1 }, inventory: { other: 2 } }).values).not.toHaveProperty('other');
  });

  it('points at the vars file line:col of a bad value', async () => {
    const dir = fixture({ 'vars.yml': yaml('server_name: a.example', 'port: not-a-port') });
    const file = await loadVarsFile(join(dir, 'vars.yml'));
    expect(file).toEqual({ server_name: 'a.example', port: 'not-a-port' });
    const err = inputError(() => resolveVars(recipe, { cli: required, file }));
    expect(err.issues).toEqual([{ file: join(dir, 'vars.yml'), line: 2, col: 7, path: 'port', message: 'not a number' }]);
  });
});

describe('loadVarsFile', () => {
  it('rejects YAML errors and non-maps with positions', async () => {
    const dir = fixture({ 'bad.yml': 'a: [1\n', 'list.yml': '- a\n', 'empty.yml': '' });
    await expect(loadVarsFile(join(dir, 'bad.yml'))).rejects.toThrow(/bad\.yml:2:1: invalid YAML/);
    await expect(loadVarsFile(join(dir, 'list.yml'))).rejects.toThrow(/list\.yml:1:1: a vars file must be a map/);
    await expect(loadVarsFile(join(dir, 'empty.yml'))).resolves.toEqual({});
    await expect(loadVarsFile(join(dir, 'none.yml'))).rejects.toThrow(/none\.yml: cannot read vars file: ENOENT/);
  });
});

describe('parseVarArgs', () => {
  it('splits at the first =, last one wins', () => {
    expect(parseVarArgs(['a=1', 'b=x=y', 'c=', 'a=2'])).toEqual({ a: '2', b: 'x=y', c: '' });
  });
  it('reports every malformed argument', () => {
    const err = inputError(() => parseVarArgs(['novalue', '=x', 'ok=1']));
    expect(err.issues.map((i) => i.message)).toEqual(['--var novalue: expected name=value', '--var =x: expected name=value']);
  });
});

describe('missingPromptVars', () => {
  const recipe = recipeWith({
    server_name: { default: 'example.com', prompt: true },
    admin_email: { required: true },
    db_password: { required: true, secret: true },
    port: { default: 1, required: true },
    quiet: { default: true },
  });
  it('lists prompt vars and required vars without a value, in declaration order', () => {
    expect(missingPromptVars(recipe, { db_password: 'x' }).map((v) => v.name)).toEqual(['server_name', 'admin_email']);
    expect(missingPromptVars(recipe, { server_name: 'a', admin_email: 'b', db_password: 'c' })).toEqual([]);
    expect(missingPromptVars(recipe, { admin_email: null }).map((v) => v.name)).toEqual(['server_name', 'admin_email', 'db_password']);
  });
});
