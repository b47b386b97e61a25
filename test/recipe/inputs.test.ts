/**
 * Bad bytes, aliases and empty host fields in every input file: inventory, config, vars file,
 * template source (issue 6, items 13–15). The recipe itself is covered in load.test.ts.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/cli/config.js';
import { InputError } from '../../src/errors.js';
import { readSource } from '../../src/recipe/sources.js';
import { loadRecipe } from '../../src/recipe/load.js';
import { loadVarsFile, resolveVars } from '../../src/recipe/vars.js';
import { loadInventory, resolveTargets } from '../../src/transport/targets.js';
import { decodeText } from '../../src/yaml.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function dirWith(files: Record<string, string | Buffer>): string {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-inputs-'));
  dirs.push(dir);
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), content);
  }
  return dir;
}

const bytes = (...parts: Array<string | number[]>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

/** `line:col path: message` of each issue of the InputError `f` throws. */
async function issues(f: () => unknown): Promise<string[]> {
  try {
    await f();
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    expect(e.exitCode).toBe(2);
    for (const i of e.issues) expect(i.line, `${i.message} has no line`).toBeGreaterThan(0);
    return e.issues.map((i) => `${i.line}:${i.col} ${i.path ?? ''}: ${i.message}`);
  }
  throw new Error('expected an InputError');
}

const inventory = (text: string | Buffer) => {
  const dir = dirWith({ 'inv.yml': text });
  return () => loadInventory(join(dir, 'inv.yml'));
};
const config = (text: string | Buffer) => {
  const dir = dirWith({ 'hostsmith.config.yml': text });
  return () => loadConfig(dir, { XDG_CONFIG_HOME: join(dir, 'no-user-config') });
};

/**
 * Where a strict decoder itself says the first bad sequence starts, by brute force: the first
 * prefix a streaming decode refuses reveals the bad byte, and the sequence it belongs to starts
 * at the last prefix before it that decodes whole.
 */
function reference(b: Uint8Array): number {
  const ok = (n: number, stream: boolean) => {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(0, n), { stream });
      return true;
    } catch {
      return false;
    }
  };
  let q = 1;
  while (q <= b.length && ok(q, true)) q++;
  if (q > b.length) q = b.length; // only cut short at the end
  let p = q - 1;
  while (!ok(p, false)) p--;
  return p;
}

describe('decodeText names the byte a strict decoder stops at', () => {
  const badByte = (r: ReturnType<typeof decodeText>) => ('issue' in r ? /^not UTF-8: byte 0x([0-9a-f]{2})/.exec(r.issue.message)?.[1] : undefined);

  it('on random bytes, mostly text with some high bytes', () => {
    let seed = 42;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const strict = new TextDecoder('utf-8', { fatal: true });
    for (let n = 0; n < 3000; n++) {
      const b = Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 12) }, () => (rand() < 0.6 ? 0x20 + Math.floor(rand() * 90) : 0x80 + Math.floor(rand() * 128))));
      const r = decodeText('f', b, { what: 'template' });
      let ok = true;
      try {
        strict.decode(b);
      } catch {
        ok = false;
      }
      expect('text' in r, b.toString('hex')).toBe(ok);
      if (ok) continue;
      const at = reference(b);
      expect(badByte(r), b.toString('hex')).toBe(b[at]!.toString(16).padStart(2, '0'));
      // one line of text: the column is the characters before the bad byte, plus one
      expect('issue' in r && r.issue.col, b.toString('hex')).toBe(strict.decode(b.subarray(0, at)).length + 1);
    }
  });

  it('on every edge of the encoding', () => {
    for (const good of [[0x7f], [0xc2, 0x80], [0xdf, 0xbf], [0xe0, 0xa0, 0x80], [0xed, 0x9f, 0xbf], [0xee, 0x80, 0x80], [0xf0, 0x90, 0x80, 0x80], [0xf4, 0x8f, 0xbf, 0xbf]]) {
      expect('text' in decodeText('f', Buffer.from(good), { what: 'template' })).toBe(true);
    }
    for (const bad of [
      [0x80],
      [0xc0, 0x80],
      [0xc1, 0xbf],
      [0xe0, 0x9f, 0xbf],
      [0xed, 0xa0, 0x80],
      [0xf0, 0x8f, 0xbf, 0xbf],
      [0xf4, 0x90, 0x80, 0x80],
      [0xf5, 0x80, 0x80, 0x80],
      [0xff],
      [0xe2, 0x82],
    ]) {
      const r = decodeText('f', Buffer.from([0x61, ...bad]), { what: 'template' });
      expect(r, Buffer.from(bad).toString('hex')).toEqual({ issue: expect.objectContaining({ line: 1, col: 2 }) });
      expect(badByte(r)).toBe(bad[0]!.toString(16).padStart(2, '0'));
    }
  });

  it('a U+FFFD written in the file is text; the bad byte after it is still found at its place', () => {
    expect(decodeText('f', bytes('a: \ufffd\n'), { what: 'recipe', yaml: true })).toEqual({ text: 'a: \ufffd\n' });
    expect(decodeText('f', bytes([0xef, 0xbb, 0xbf], 'x: \ufffd\ufffd\ny: \ufffd', [0x80], '\n'), { what: 'recipe', yaml: true })).toEqual({
      issue: { file: 'f', line: 2, col: 5, message: 'not UTF-8: byte 0x80 (in 80 0a) cannot be decoded; save the recipe as UTF-8' },
    });
  });
});

describe('decodeText', () => {
  it('drops a byte-order mark, keeps everything else as written', () => {
    expect(decodeText('f', bytes([0xef, 0xbb, 0xbf], 'a: é\n'), { what: 'recipe' })).toEqual({ text: 'a: é\n' });
    // only the first one is a byte-order mark
    expect(decodeText('f', bytes([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf], 'x'), { what: 'template' })).toEqual({ text: '\ufeffx' });
  });

  it('reports the earlier of a control character and a bad byte', () => {
    expect(decodeText('f', bytes('a\nb', [0], 'c', [0xff]), { what: 'template' })).toEqual({ issue: expect.objectContaining({ line: 2, col: 2, message: expect.stringMatching(/^a NUL byte/) }) });
    expect(decodeText('f', bytes('a\nb', [0xff], 'c', [0]), { what: 'template' })).toEqual({
      issue: expect.objectContaining({ line: 2, col: 2, message: expect.stringMatching(/^not UTF-8: byte 0xff/) }),
    });
    // ESC is text in a template, not in YAML
    expect(decodeText('f', bytes([0x1b], '[1m'), { what: 'template' })).toEqual({ text: '\x1b[1m' });
    expect(decodeText('f', bytes('a: ', [0x1f]), { what: 'recipe', yaml: true })).toEqual({
      issue: { file: 'f', line: 1, col: 4, message: 'control character U+001F; write it as an escape in a double-quoted string ("\\x1f") or remove it' },
    });
    // a file with a NUL anywhere is called binary, whatever comes first
    expect(decodeText('f', bytes([0x1f, 0x8b, 0x08, 0x00]), { what: 'recipe', yaml: true })).toEqual({
      issue: { file: 'f', line: 1, col: 1, message: 'control character U+001F; is this a binary file? The recipe must be text' },
    });
  });
});

describe('inventory: aliases and bad bytes (items 13, 15)', () => {
  it.each([
    { name: 'an undefined alias', text: 'hosts:\n  web1: *web\n', want: ['2:9 : invalid YAML: alias *web refers to no anchor (an anchor &web must come before it)'] },
    {
      name: 'an alias bomb',
      text: `defaults:\n  vars:\n    a: &a [${Array(25).fill('x').join(',')}]\n    b: &b [${Array(25).fill('*a').join(',')}]\n    c: &c [${Array(25).fill('*b').join(',')}]\nhosts: {}\n`,
      want: [expect.stringMatching(/^5:\d+ : invalid YAML: aliases expand to more than 10000 values from alias \*b on/)],
    },
    {
      name: 'a Latin-1 byte',
      text: bytes('hosts:\n  web1: { address: m', [0xfc], 'nchen.example }\n'),
      want: ['2:21 : not UTF-8: byte 0xfc (in fc 6e 63 68) cannot be decoded; save the inventory as UTF-8'],
    },
    { name: 'a NUL byte', text: bytes('hosts:\n  web1: {}\n', [0]), want: ['3:1 : a NUL byte; is this a binary file? The inventory must be text'] },
    {
      name: 'a host written twice',
      text: 'hosts:\n  web1: { address: 10.0.0.1 }\n  db1: { address: 10.0.0.2 }\n  web1: { address: 10.0.0.3 }\n',
      want: ['4:3 : invalid YAML: duplicate key "web1" (first at line 2)'],
    },
    {
      name: 'keys that become one in the value (1 and "1", in a flow map)',
      text: 'hosts:\n  web1: { address: 10.0.0.1, vars: { 1: a, "1": b } }\n',
      want: ['2:44 : invalid YAML: duplicate key "1" (first at line 2)'],
    },
  ])('$name: exit 2 at its place', async ({ text, want }) => {
    expect(await issues(inventory(text))).toEqual(want);
  });

  it('a byte-order mark is accepted', async () => {
    const inv = await inventory(bytes([0xef, 0xbb, 0xbf], 'hosts:\n  web1: { address: 10.0.0.1 }\n'))();
    expect(resolveTargets({ hosts: 'web1', inventory: inv })[0]).toMatchObject({ host: '10.0.0.1' });
  });
});

describe('inventory: empty, blank or multi-line host fields (item 14)', () => {
  it.each([
    { name: 'an empty address', text: 'hosts:\n  web1:\n    address: ""\n', want: '3:14 hosts.web1.address: an address must not be empty' },
    { name: 'a blank address', text: 'hosts:\n  web1: { address: "   " }\n', want: '2:20 hosts.web1.address: an address must not be empty or blank' },
    {
      name: 'an address with a newline',
      text: 'hosts:\n  web1: { address: "10.0.0.1\\nevil" }\n',
      want: '2:20 hosts.web1.address: an address must not hold a line break or control character (got "10.0.0.1\\nevil")',
    },
    { name: 'an address with spaces around it', text: 'hosts:\n  web1: { address: " 10.0.0.1" }\n', want: '2:20 hosts.web1.address: an address has spaces around it (got " 10.0.0.1")' },
    { name: 'an address that is an option', text: 'hosts:\n  web1: { address: -oProxyCommand=x }\n', want: '2:20 hosts.web1.address: an address must not start with "-" (got "-oProxyCommand=x")' },
    { name: 'an empty user', text: 'hosts:\n  web1: { address: 10.0.0.1, user: "" }\n', want: '2:36 hosts.web1.user: a user must not be empty' },
    {
      name: 'a user with a tab',
      text: 'hosts:\n  web1: { address: 10.0.0.1, user: "ro\\tot" }\n',
      want: '2:36 hosts.web1.user: a user must not hold a line break or control character (got "ro\\tot")',
    },
    { name: 'a blank identity', text: 'hosts:\n  web1: { address: 10.0.0.1, identity: " " }\n', want: '2:40 hosts.web1.identity: an identity file must not be empty or blank' },
    { name: 'an empty default user', text: 'defaults: { user: "" }\nhosts: { web1: {} }\n', want: '1:19 defaults.user: a user must not be empty' },
    { name: 'an empty default identity', text: 'defaults: { identity: "" }\n', want: '1:23 defaults.identity: an identity file must not be empty' },
    { name: 'a default port out of range', text: 'defaults: { port: 0 }\n', want: '1:19 defaults.port: must be at least 1' },
    { name: 'an empty host name', text: 'hosts:\n  "": {}\n', want: '2:7 hosts[""]: a host name must not be empty' },
    {
      name: 'a host name that must be its address but cannot',
      text: 'hosts:\n  web 1: { port: 22 }\n',
      want: '2:10 hosts["web 1"]: host "web 1" has no address, and its name cannot be one (spaces or a leading "-"); give it an address',
    },
    { name: 'an empty group name in a host', text: 'hosts:\n  web1: { address: 10.0.0.1, groups: [""] }\n', want: '2:39 hosts.web1.groups[0]: a group name must not be empty' },
  ])('$name: exit 2 at its line, before any target is made', async ({ text, want }) => {
    expect(await issues(inventory(text))).toEqual([want]);
  });

  it('good fields still load', async () => {
    const inv = await inventory('defaults: { user: deploy }\nhosts:\n  "db primary": { address: 10.0.0.2, identity: "keys/my key" }\n  web1: {}\n')();
    expect(resolveTargets({ inventory: inv }).map((t) => [t.name, t.host, t.user])).toEqual([
      ['db primary', '10.0.0.2', 'deploy'],
      ['web1', 'web1', 'deploy'],
    ]);
  });
});

describe('config: aliases, bad bytes and empty paths', () => {
  it.each([
    { name: 'an undefined alias', text: 'concurrency: *n\n', want: ['1:14 : invalid YAML: alias *n refers to no anchor (an anchor &n must come before it)'] },
    { name: 'an alias inside its anchor', text: 'retry: &r { attempts: 1, delay: *r }\n', want: ['1:33 : invalid YAML: alias *r is inside the value its anchor names, which would never end'] },
    { name: 'a bad byte', text: bytes('state_dir: ./st', [0xe4], 'te\n'), want: ['1:16 : not UTF-8: byte 0xe4 (in e4 74 65 0a) cannot be decoded; save the config as UTF-8'] },
    { name: 'an empty state_dir', text: 'state_dir: ""\n', want: ['1:12 state_dir: must not be empty (leave the key out for the default)'] },
    { name: 'a known_hosts with a newline', text: 'known_hosts: "a\\nb"\n', want: ['1:14 known_hosts: must not hold a line break or control character (got "a\\nb")'] },
  ])('$name: exit 2 at its place', async ({ text, want }) => {
    expect(await issues(config(text))).toEqual(want);
  });

  it('a byte-order mark is accepted', () => {
    expect(config(bytes([0xef, 0xbb, 0xbf], 'concurrency: 3\n'))()).toMatchObject({ concurrency: 3 });
  });
});

describe('vars file and template sources', () => {
  it('a vars file with a bad byte or an undefined alias is refused at its place', async () => {
    const dir = dirWith({ 'a.yml': bytes('a: 1\nb: "', [0xa9], '"\n'), 'b.yml': 'a: 1\nb: *x\n' });
    expect(await issues(() => loadVarsFile(join(dir, 'a.yml')))).toEqual(['2:5 : not UTF-8: byte 0xa9 (in a9 22 0a) cannot be decoded; save the vars file as UTF-8']);
    expect(await issues(() => loadVarsFile(join(dir, 'b.yml')))).toEqual(['2:4 : invalid YAML: alias *x refers to no anchor (an anchor &x must come before it)']);
  });

  it('a vars file with a key written twice is refused at the second one', async () => {
    const dir = dirWith({ 'v.yml': 'port: 80\nname: web\nport: 8080\n' });
    expect(await issues(() => loadVarsFile(join(dir, 'v.yml')))).toEqual(['3:1 : invalid YAML: duplicate key "port" (first at line 1)']);
  });

  it('readSource refuses a template that is not text, drops its byte-order mark, and passes a file’s bytes as they are', async () => {
    const blob = Buffer.from([0xef, 0xbb, 0xbf, 0, 0xff, 0x80]);
    const dir = dirWith({ 'templates/bad.hbs': bytes('x\ny', [0xff]), 'templates/bom.hbs': bytes([0xef, 0xbb, 0xbf], 'hi'), 'files/blob': blob });
    await expect(readSource(dir, 'bad.hbs', 'templates')).rejects.toThrow(/bad\.hbs:2:2: not UTF-8: byte 0xff/);
    expect((await readSource(dir, 'bom.hbs', 'templates')).content.toString('utf8')).toBe('hi');
    expect((await readSource(dir, 'blob', 'files')).content).toEqual(blob);
  });
});

describe('var values checked far from their file still name their place', () => {
  it('an inventory var of the wrong type is reported at its line in the inventory; a missing required var at its declaration', async () => {
    const dir = dirWith({
      'inv.yml': 'defaults: { vars: { port: 80 } }\nhosts:\n  web1: { vars: { port: eighty } }\n  web2: {}\n',
      'recipe.yml': 'name: r\nvars:\n  port: { type: number }\n  pw: { required: true }\nsteps: []\n',
    });
    const recipe = await loadRecipe(join(dir, 'recipe.yml'));
    const [web1, web2] = resolveTargets({ inventory: await loadInventory(join(dir, 'inv.yml')) });
    expect(await issues(() => resolveVars(recipe, { inventory: web1!.vars, cli: { pw: 'x' } }))).toEqual(['3:25 hosts.web1.vars.port: inventory var port: not a number']);
    expect(await issues(() => resolveVars(recipe, { inventory: web2!.vars }))).toEqual(['4:3 vars.pw: missing required var "pw" (give it with --var pw=... or in a --vars-file)']);
    const err = (() => {
      try {
        resolveVars(recipe, { inventory: web1!.vars });
      } catch (e) {
        return e as InputError;
      }
      throw new Error('expected an InputError');
    })();
    expect(err.issues.map((i) => i.file)).toEqual([join(dir, 'inv.yml'), join(dir, 'recipe.yml')]);
  });
});
