/**
 * The malformed-input corpus (issue 6, standing tests): recipes, inventories and configs that are
 * broken in every way we could think of. Each one, run through the BUILT CLI (`npm run build`
 * first), must exit 2 with a file:line:col in its message, never "unexpected error", and must not
 * contact any host: `plan` points at a TCP listener on loopback that counts connections.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostsmith, type CliResult } from '../e2e/cli.js';

type Bytes = string | Buffer;
interface Case {
  name: string;
  /** Files of the case, by path; the first is the one under test. */
  files: Record<string, Bytes>;
}

const b = (...parts: Array<string | number[]>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));
const lines = (...l: string[]) => l.join('\n') + '\n';

// ---- recipes ----

/** A good recipe that uses most features; truncations and mutations start from it. */
const GOOD = lines(
  'name: web',
  'description: "A web server"',
  'vars:',
  '  port: { default: 8080, type: number }',
  '  site: { default: example.com, pattern: "^[a-z.]+$" }',
  'defaults: { timeout: 5m, retry: { attempts: 2, delay: 1s } }',
  'steps:',
  '  - name: Hello',
  '    command: { run: "echo hi {{site}}", creates: /tmp/hello }',
  '  - name: Config',
  '    file: { path: /tmp/site.conf, content: "port={{port}}\\n", mode: "0644" }',
  '    notify: Reload',
  '  - name: Cron',
  '    cron: { name: tick, schedule: "*/5 * * * *", command: /bin/true }',
  '    needs: [Hello]',
  'handlers:',
  '  - name: Reload',
  '    command: { run: "echo reload" }',
);

const top = (...steps: string[]) => lines('name: web', 'steps:', ...steps);
const step = (body: string, more: string[] = []) => ['  - name: S', `    ${body}`, ...more.map((m) => `    ${m}`)];
const r = (name: string, text: Bytes, extra: Record<string, Bytes> = {}): Case => ({ name, files: { 'recipe.yml': text, ...extra } });

function truncations(): Case[] {
  // Cut right after each opening quote or brace: the YAML can never be complete there.
  const cuts: number[] = [];
  for (let i = 0; i < GOOD.length; i++) if (GOOD[i] === '{' || (GOOD[i] === '"' && GOOD.slice(0, i).split('"').length % 2 === 1)) cuts.push(i + 1);
  const picked = cuts.filter((_, i) => i % 2 === 0).slice(0, 10);
  return [
    ...picked.map((n) => r(`truncated at byte ${n}`, GOOD.slice(0, n))),
    r('truncated inside a multi-byte character', b('name: web\ndescription: "caf', [0xc3])),
    r('truncated after "steps:"', 'name: web\nsteps:'),
    r('truncated in the middle of a key', 'name: web\nsteps:\n  - nam'),
    r('truncated after a step name', 'name: web\nsteps:\n  - name: A\n'),
    r('truncated in a literal block of a flow map', 'name: web\nsteps:\n  - name: A\n    command: { run: |\n'),
  ];
}

const yamlSyntax: Case[] = [
  r('unclosed double quote', top(...step('command: { run: "echo }'))),
  r('unclosed single quote', top(...step("command: { run: 'echo }"))),
  r('unclosed flow map', top(...step('command: { run: echo'))),
  r('unclosed flow list', lines('name: web', 'steps: [', '')),
  r('a stray closing bracket', lines('name: web', 'steps: []]')),
  r('bad indentation', lines('name: web', 'steps:', '  - name: A', '   command: { run: x }')),
  r('a tab as indentation', lines('name: web', 'steps:', '\t- name: A', '\t  command: { run: x }')),
  r('a tab inside the step indentation', lines('name: web', 'steps:', '  - name: A', '  \tcommand: { run: x }')),
  r('duplicate top-level key', lines('name: web', 'name: other', 'steps: []')),
  r('duplicate key in a step', top(...step('command: { run: x }', ['command: { run: y }']))),
  r('duplicate key in a flow map', top(...step('command: { run: x, run: y }'))),
  r('duplicate var', lines('name: web', 'vars:', '  a: 1', '  a: 2', 'steps: []')),
  r('duplicate keys that differ only in type', lines('name: web', 'vars:', '  1: a', '  "1": b', 'steps: []')),
  r('two YAML documents', lines('name: web', 'steps: []', '---', 'name: other')),
  r('a sequence and a map at the same level', lines('name: web', 'steps:', '  - name: A', '  command: x')),
  r('a key without a value separator', lines('name: web', 'steps []')),
  r('a directive in the middle', lines('name: web', '%YAML 1.2', 'steps: []')),
];

const aliases: Case[] = [
  r('an undefined alias', top(...step('command: { run: *cmd }'))),
  r('an alias before its anchor', lines('name: web', 'description: *d', 'x: &d text', 'steps: []')),
  r('an alias inside its own anchor', lines('name: web', 'vars:', '  a: &a { b: *a }', 'steps: []')),
  r(
    'an alias bomb (billion laughs)',
    lines(
      'name: web',
      'vars:',
      '  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]',
      ...'bcdefghi'.split('').map((c, i) => `  ${c}: &${c} [${Array(9).fill(`*${'abcdefghi'[i]}`).join(',')}]`),
      'steps: []',
    ),
  ),
  r(
    'an alias bomb through merges',
    lines(
      'name: web',
      'vars:',
      '  a: &a { x: [1,2,3,4,5,6,7,8,9,10] }',
      ...Array.from(
        { length: 12 },
        (_, i) =>
          `  m${i}: &m${i} { k${i}: [${Array(10)
            .fill(i === 0 ? '*a' : `*m${i - 1}`)
            .join(', ')}] }`,
      ),
      'steps: []',
    ),
  ),
  r('a merge of a plain value', lines('name: web', 'vars: { <<: 3 }', 'steps: []')),
  r('a merge of a list of plain values', lines('name: web', 'vars: { <<: [1, 2] }', 'steps: []')),
  r('a list as a key', lines('name: web', '? [a, b]', ': 1', 'steps: []')),
  r('an alias to a map used as a key', lines('name: web', 'vars:', '  m: &m { a: 1 }', '  *m : 2', 'steps: []')),
  r('an unknown tag', lines('name: web', 'description: !vault abc', 'steps: []')),
  r('a binary tag', lines('name: web', 'description: !!binary aGk=', 'steps: []')),
  r('a set tag', lines('name: web', 'vars: { s: !!set { a, b } }', 'steps: []')),
];

const RECIPE_HEAD = 'name: web\nsteps:\n  - name: A\n    command: { run: "';
const bytes: Case[] = [
  r('a Latin-1 byte', b(RECIPE_HEAD, 'caf', [0xe9], '" }\n')),
  r('a Windows-1252 smart quote', b(RECIPE_HEAD, [0x93], 'hi', [0x94], '" }\n')),
  r('a lone continuation byte', b(RECIPE_HEAD, [0x80], '" }\n')),
  r('an overlong encoding', b(RECIPE_HEAD, [0xc0, 0xaf], '" }\n')),
  r('an encoded surrogate', b(RECIPE_HEAD, [0xed, 0xb0, 0x80], '" }\n')),
  r('a code point above U+10FFFF', b(RECIPE_HEAD, [0xf4, 0x90, 0x80, 0x80], '" }\n')),
  r('a 0xFF byte in a comment', b('name: web # caf', [0xff], '\nsteps: []\n')),
  r('a UTF-16LE file with its BOM', Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('name: web\nsteps: []\n', 'utf16le')])),
  r('a UTF-16BE file with its BOM', Buffer.from([0xfe, 0xff, ...[...Buffer.from('name: web\n', 'utf16le')].map((_, i, a) => a[i ^ 1]!)])),
  r('a NUL byte', b(RECIPE_HEAD, 'a', [0], 'b" }\n')),
  r('a NUL byte at the end', b('name: web\nsteps: []\n', [0])),
  r('a gzip file', Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])),
  r('a PNG file', Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52])),
  r('an ELF binary', Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0])),
  r('an escape character', b(RECIPE_HEAD, [0x1b], '[31mred" }\n')),
  r('a bell character', b('name: web', [0x07], '\nsteps: []\n')),
  r('a UTF-8 BOM, then a bad byte', b([0xef, 0xbb, 0xbf], 'name: web\nsteps: []\ndescription: ', [0xfe], '\n')),
];

const huge: Case[] = [
  r('a file over the size limit', `name: web\nsteps: []\n# ${'x'.repeat(4 * 1024 * 1024)}\n`),
  r(
    'a large file with an error at its end',
    lines('name: web', 'steps:', ...Array.from({ length: 1500 }, (_, i) => `  - name: S${i}\n    command: { run: "echo ${i}" }`), '  - name: Last', '    command: { run: "unclosed'),
  ),
  r('a very long line with an unknown key at its end', lines('name: web', `description: "${'d'.repeat(300_000)}"`, 'stepz: []')),
  r('nesting 200 levels deep', lines('name: web', `vars: { a: ${'['.repeat(200)}${']'.repeat(200)} }`, 'steps: []')),
  r('nesting 5000 levels deep', lines('name: web', `vars: { a: ${'{a: '.repeat(5000)}1${'}'.repeat(5000)} }`, 'steps: []')),
  r('a million-character key', lines('name: web', `${'k'.repeat(1_000_000)}: 1`, 'steps: []')),
  r('thousands of duplicate-free keys and one duplicate', lines('name: web', 'vars:', ...Array.from({ length: 8000 }, (_, i) => `  v${i}: ${i}`), '  v5: again', 'steps: []')),
];

const structure: Case[] = [
  r('an empty file', ''),
  r('only a comment', '# nothing here\n'),
  r('a list at the top', '- name: web\n- steps: []\n'),
  r('a plain value at the top', 'web\n'),
  r('missing name', 'steps: []\n'),
  r('missing steps', 'name: web\n'),
  r('name is a number', 'name: 42\nsteps: []\n'),
  r('name with capitals and spaces', 'name: My Web\nsteps: []\n'),
  r('steps is a map', 'name: web\nsteps: { a: 1 }\n'),
  r('steps is a string', 'name: web\nsteps: none\n'),
  r('handlers is a string', 'name: web\nsteps: []\nhandlers: none\n'),
  r('an unknown top-level key', 'name: web\nsteps: []\nhost: web1\n'),
  r('description is a list', 'name: web\ndescription: [a]\nsteps: []\n'),
  r('sudo is a string', 'name: web\nsudo: "yes"\nsteps: []\n'),
  r('defaults has an unknown key', 'name: web\ndefaults: { timeut: 5m }\nsteps: []\n'),
  r('defaults.timeout is not a duration', 'name: web\ndefaults: { timeout: soon }\nsteps: []\n'),
  r('defaults.parallel is 0', 'name: web\ndefaults: { parallel: 0 }\nsteps: []\n'),
  r('defaults.retry has 0 attempts', 'name: web\ndefaults: { retry: { attempts: 0 } }\nsteps: []\n'),
  r('vars is a list', 'name: web\nvars: [a, b]\nsteps: []\n'),
];

const steps: Case[] = [
  r('a step that is a string', top('  - just do it')),
  r('a step that is a list', top('  - [a, b]')),
  r('a step without a name', top('  - command: { run: x }')),
  r('a step with an empty name', top('  - name: ""', '    command: { run: x }')),
  r('a step with a number as name', top('  - name: 7', '    command: { run: x }')),
  r('a step without a type', top('  - name: A')),
  r('a step with two types', top(...step('command: { run: x }', ['file: { path: /a }']))),
  r('an unknown step type', top(...step('shell: { run: x }'))),
  r('an unknown common key', top(...step('command: { run: x }', ['retries: 3']))),
  r('fatal is a string', top(...step('command: { run: x }', ['fatal: "no"']))),
  r('timeout is not a duration', top(...step('command: { run: x }', ['timeout: forever']))),
  r('timeout is 0', top(...step('command: { run: x }', ['timeout: 0s']))),
  r('retry has 0 attempts', top(...step('command: { run: x }', ['retry: 0']))),
  r('retry has an unknown key', top(...step('command: { run: x }', ['retry: { tries: 2 }']))),
  r('when is a list', top(...step('command: { run: x }', ['when: [a]']))),
  r('needs an unknown step', top(...step('command: { run: x }', ['needs: [Nope]']))),
  r('needs itself', top(...step('command: { run: x }', ['needs: S']))),
  r('a needs cycle of two', top('  - name: A', '    command: { run: x }', '    needs: B', '  - name: B', '    command: { run: x }', '    needs: A')),
  r(
    'a needs cycle of three',
    top('  - name: A', '    command: { run: x }', '    needs: C', '  - name: B', '    command: { run: x }', '    needs: A', '  - name: C', '    command: { run: x }', '    needs: B'),
  ),
  r('notify an unknown handler', top(...step('command: { run: x }', ['notify: Reload']))),
  r('notify a step', top('  - name: A', '    command: { run: x }', '  - name: B', '    command: { run: x }', '    notify: A')),
  r('duplicate step names', top('  - name: A', '    command: { run: x }', '  - name: A', '    command: { run: y }')),
  r('needs is a map', top(...step('command: { run: x }', ['needs: { a: 1 }']))),
  r('sudo is a number', top(...step('command: { run: x }', ['sudo: 1']))),
];

const params: Case[] = [
  r('command.run is a list', top(...step('command: { run: [a, b] }'))),
  r('command without run', top(...step('command: { creates: /a }'))),
  r('command.env is a list', top(...step('command: { run: x, env: [A=1] }'))),
  r('command has an unknown key', top(...step('command: { run: x, shell: bash }'))),
  r('a mode with a 9', top(...step('file: { path: /a, content: x, mode: "0999" }'))),
  r('a symbolic mode', top(...step('file: { path: /a, content: x, mode: "u+rwx" }'))),
  r('a mode that is too long', top(...step('file: { path: /a, content: x, mode: "012345" }'))),
  r('a relative file path', top(...step('file: { path: etc/motd, content: x }'))),
  r('a bad file state', top(...step('file: { path: /a, state: gone }'))),
  r('file with content and src', top(...step('file: { path: /a, content: x, src: y }'))),
  r('a missing file src', top(...step('file: { path: /a, src: nowhere.bin }'))),
  r('a missing template src', top(...step('template: { src: nowhere.hbs, dest: /a }'))),
  r('a relative template dest', top(...step('template: { src: t.hbs, dest: a }')), { 'templates/t.hbs': 'x\n' }),
  r('a template with a syntax error', top(...step('template: { src: t.hbs, dest: /a }')), { 'templates/t.hbs': 'a\n{{#if x}}\n' }),
  r('a template with an unknown var', top(...step('template: { src: t.hbs, dest: /a }')), { 'templates/t.hbs': 'port {{prot}}\n' }),
  r('a template that is not UTF-8', top(...step('template: { src: t.hbs, dest: /a }')), { 'templates/t.hbs': b('caf', [0xe9], '\n') }),
  r('a template with a NUL byte', top(...step('template: { src: t.hbs, dest: /a }')), { 'templates/t.hbs': b('a', [0], 'b\n') }),
  r('a template that is a PNG', top(...step('template: { src: t.hbs, dest: /a }')), { 'templates/t.hbs': Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]) }),
  r('a bad line regex', top(...step('line: { path: /etc/hosts, line: x, match: "([a-z" }'))),
  r('a bad line after regex', top(...step('line: { path: /etc/hosts, line: x, after: "*x" }'))),
  r('a line with a newline', top(...step('line: { path: /etc/hosts, line: "a\\nb" }'))),
  r('cron with six fields', top(...step('cron: { name: t, schedule: "0 * * * * *", command: /bin/true }'))),
  r('cron with minute 61', top(...step('cron: { name: t, schedule: "61 * * * *", command: /bin/true }'))),
  r('cron @reboot', top(...step('cron: { name: t, schedule: "@reboot", command: /bin/true }'))),
  r('cron with a Quartz L', top(...step('cron: { name: t, schedule: "0 0 L * *", command: /bin/true }'))),
  r('cron with an unknown day name', top(...step('cron: { name: t, schedule: "0 0 * * fun", command: /bin/true }'))),
  r('cron with an unescaped %', top(...step('cron: { name: t, schedule: "@daily", command: "date +%F" }'))),
  r('a bad package name', top(...step('package: { install: ["Nginx!"] }'))),
  r('a package with nothing to do', top(...step('package: {}'))),
  r('a bad service state', top(...step('service: { name: nginx, state: running }'))),
  r('a bad service name', top(...step('service: { name: "ngi nx", state: started }'))),
  r('a group with a bad gid', top(...step('group: { name: web, gid: -1 }'))),
  r('a user with an unknown key', top(...step('user: { name: deploy, homedir: /home/d }'))),
];

const templates: Case[] = [
  r('an unknown var in a string', top(...step('command: { run: "echo {{nope}}" }'))),
  r('an unclosed mustache', top(...step('command: { run: "echo {{site" }'))),
  r('an unknown helper', top(...step('command: { run: "echo {{shout site}}" }')).replace('steps:', 'vars: { site: a }\nsteps:')),
  r('a reference to an unknown step', top(...step('command: { run: "echo {{steps.Nope.stdout}}" }'))),
  r('a reference to an unknown result field', top('  - name: A', '    command: { run: x }', '  - name: B', '    command: { run: "echo {{steps.A.output}}" }')),
  r('a broken template in when', top(...step('command: { run: x }', ['when: "{{#if}}"']))),
];

const vars: Case[] = [
  r('a var name with a dash', lines('name: web', 'vars: { my-var: 1 }', 'steps: []')),
  r('a reserved var name', lines('name: web', 'vars: { facts: 1 }', 'steps: []')),
  r('an unknown declaration key', lines('name: web', 'vars: { a: { default: 1, requird: true } }', 'steps: []')),
  r('an unknown var type', lines('name: web', 'vars: { a: { type: integer } }', 'steps: []')),
  r('a default of the wrong type', lines('name: web', 'vars: { a: { type: number, default: many } }', 'steps: []')),
  r('a boolean var with a word default', lines('name: web', 'vars: { a: { type: boolean, default: maybe } }', 'steps: []')),
  r('a list var with a map default', lines('name: web', 'vars: { a: { type: list, default: { x: 1 } } }', 'steps: []')),
  r('a bad regex pattern', lines('name: web', 'vars: { a: { pattern: "(unclosed" } }', 'steps: []')),
  r('a default that does not match its pattern', lines('name: web', 'vars: { a: { default: ABC, pattern: "^[a-z]+$" } }', 'steps: []')),
  r('required is a string', lines('name: web', 'vars: { a: { required: "yes" } }', 'steps: []')),
  r('secret is a number', lines('name: web', 'vars: { a: { secret: 1 } }', 'steps: []')),
  r('a default that uses an unknown var', lines('name: web', 'vars: { a: "{{b}}" }', 'steps: []')),
];

const INC_STEP = (recipe: string, more = '') => top(`  - include: { recipe: ${recipe}${more} }`);
const includes: Case[] = [
  r('a recipe that includes itself', INC_STEP('recipe.yml')),
  r('an include loop of two files', INC_STEP('other.yml'), { 'other.yml': lines('name: other', 'steps:', '  - include: { recipe: recipe.yml }') }),
  r('an include loop of three files', INC_STEP('a.yml'), {
    'a.yml': lines('name: a', 'steps:', '  - include: { recipe: b.yml }'),
    'b.yml': lines('name: b', 'steps:', '  - include: { recipe: a.yml }'),
  }),
  r('an include of a missing file', INC_STEP('missing.yml')),
  r('an include with an undeclared var', INC_STEP('inc.yml', ', vars: { nope: 1 }'), { 'inc.yml': lines('name: inc', 'steps: []') }),
  r('an include without a required var', INC_STEP('inc.yml'), { 'inc.yml': lines('name: inc', 'vars: { v: { required: true } }', 'steps: []') }),
  r('an include with an unknown key', INC_STEP('inc.yml', ', with: 1'), { 'inc.yml': lines('name: inc', 'steps: []') }),
  r('an include in handlers', lines('name: web', 'steps: []', 'handlers:', '  - include: { recipe: inc.yml }'), { 'inc.yml': lines('name: inc', 'steps: []') }),
  r('an included recipe that is not UTF-8', INC_STEP('inc.yml'), { 'inc.yml': b('name: inc\nsteps: []\ndescription: ', [0xe9], '\n') }),
  r('an included recipe cut short', INC_STEP('inc.yml'), { 'inc.yml': 'name: inc\nsteps:\n  - name: "A' }),
  r('an included recipe with an alias bomb', INC_STEP('inc.yml'), {
    'inc.yml': lines(
      'name: inc',
      'vars:',
      '  a: &a [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]',
      '  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]',
      '  c: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]',
      'steps: []',
    ),
  }),
  r('an included recipe included twice', top('  - include: { recipe: inc.yml }', '  - include: { recipe: inc.yml }'), {
    'inc.yml': lines('name: inc', 'steps:', '  - name: A', '    command: { run: x }'),
  }),
];

const RECIPES: Case[] = [...truncations(), ...yamlSyntax, ...aliases, ...bytes, ...huge, ...structure, ...steps, ...params, ...templates, ...vars, ...includes];

// ---- inventories (run as `plan <good recipe> -i inventory.yml`) ----

const inv = (name: string, text: Bytes): Case => ({ name, files: { 'inventory.yml': text } });
/** Every host points at the listener, so a host that is wrongly contacted is seen. */
const INVENTORIES = (port: number): Case[] => [
  inv('an empty address', `hosts:\n  web1: { address: "", port: ${port} }\n`),
  inv('a blank address', `hosts:\n  web1: { address: "  ", port: ${port} }\n`),
  inv('an address with a newline', `hosts:\n  web1: { address: "127.0.0.1\\nevil", port: ${port} }\n`),
  inv('an address that is an option', `hosts:\n  web1: { address: "-oProxyCommand=touch /tmp/x", port: ${port} }\n`),
  inv('an empty user', `hosts:\n  web1: { address: 127.0.0.1, port: ${port}, user: "" }\n`),
  inv('a user with a newline', `hosts:\n  web1: { address: 127.0.0.1, port: ${port}, user: "root\\n" }\n`),
  inv('an empty identity', `hosts:\n  web1: { address: 127.0.0.1, port: ${port}, identity: "" }\n`),
  inv('an empty default user', `defaults: { user: "", port: ${port} }\nhosts:\n  web1: { address: 127.0.0.1 }\n`),
  inv('a port out of range', `hosts:\n  web1: { address: 127.0.0.1, port: 70000 }\n`),
  inv('a default port of 0', `defaults: { port: 0 }\nhosts:\n  web1: { address: 127.0.0.1 }\n`),
  inv('a port that is a string', `hosts:\n  web1: { address: 127.0.0.1, port: "${port}" }\n`),
  inv('an unknown host key', `hosts:\n  web1: { adress: 127.0.0.1, port: ${port} }\n`),
  inv('an unknown top-level key', `host:\n  web1: { address: 127.0.0.1, port: ${port} }\n`),
  inv('hosts is a list', `hosts:\n  - 127.0.0.1:${port}\n`),
  inv('groups of a host is a string', `hosts:\n  web1: { address: 127.0.0.1, port: ${port}, groups: web }\n`),
  inv('an empty host name', `hosts:\n  "": { address: 127.0.0.1, port: ${port} }\n`),
  inv('a host name that cannot be an address', `hosts:\n  web one: { port: ${port} }\n`),
  inv('an undefined alias', `hosts:\n  web1: *web\n`),
  inv(
    'an alias bomb',
    `defaults:\n  port: ${port}\n  vars:\n    a: &a [x,x,x,x,x,x,x,x,x,x]\n    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\nhosts:\n  web1: { address: 127.0.0.1 }\n`,
  ),
  inv('a duplicate host', `hosts:\n  web1: { address: 127.0.0.1, port: ${port} }\n  web1: { address: 127.0.0.2, port: ${port} }\n`),
  inv('a tab as indentation', `hosts:\n\tweb1: { address: 127.0.0.1, port: ${port} }\n`),
  inv('a Latin-1 byte', b(`hosts:\n  web1: { address: 127.0.0.1, port: ${port}, vars: { city: M`, [0xfc], 'nchen } }\n')),
  inv('a NUL byte', b(`hosts:\n  web1: { address: 127.0.0.1, port: ${port} }\n`, [0])),
  inv('truncated', `hosts:\n  web1: { address: 127.0.0.1, port: ${port}`),
  {
    name: 'a host var of the wrong type for the recipe',
    files: {
      'inventory.yml': `hosts:\n  web1: { address: 127.0.0.1, port: ${port}, vars: { workers: many } }\n`,
      'recipe.yml': lines('name: ok', 'vars: { workers: { type: number, default: 2 } }', 'steps:', '  - name: A', '    command: { run: "echo {{workers}}" }'),
    },
  },
  inv('a vars value that is an unknown tag', `hosts:\n  web1: { address: 127.0.0.1, port: ${port}, vars: { a: !secret x } }\n`),
];

// ---- configs (a hostsmith.config.yml in the working directory of `plan`) ----

const cfg = (name: string, text: Bytes): Case => ({ name, files: { 'hostsmith.config.yml': text } });
const CONFIGS: Case[] = [
  cfg('concurrency is a word', 'concurrency: many\n'),
  cfg('concurrency is 0', 'concurrency: 0\n'),
  cfg('timeout is not a duration', 'timeout: later\n'),
  cfg('retry without attempts', 'retry: { delay: 1s }\n'),
  cfg('an unknown key', 'concurency: 3\n'),
  cfg('accept_new_host_keys is a string', 'accept_new_host_keys: "yes"\n'),
  cfg('an empty state_dir', 'state_dir: ""\n'),
  cfg('a known_hosts with a newline', 'known_hosts: "a\\nb"\n'),
  cfg('an undefined alias', 'concurrency: *n\n'),
  cfg('an alias bomb', `x:\n  a: &a [1,1,1,1,1,1,1,1,1,1]\n  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  d: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n`),
  cfg('a duplicate key', 'concurrency: 2\nconcurrency: 3\n'),
  cfg('a tab as indentation', 'retry:\n\tattempts: 2\n'),
  cfg('a Latin-1 byte', b('state_dir: ./st', [0xe4], 'te\n')),
  cfg('a NUL byte', b('concurrency: 2\n', [0], '\n')),
  cfg('truncated', 'retry: { attempts: 2'),
  cfg('a list at the top', '- concurrency: 2\n'),
  cfg('a binary tag', 'inventory: !!binary aGk=\n'),
];

// ---- running them ----

const GOOD_RECIPE = lines('name: ok', 'steps:', '  - name: A', '    command: { run: "true" }');
const PLACE = /(^|\s)\S+:\d+:\d+: /m;

let server: Server;
let port = 0;
let connections = 0;
let root = '';
let identity = '';
let emptyConfigHome = '';

/** At most `n` CLI runs at a time (the machine is shared). */
function limiter(n: number) {
  let active = 0;
  const waiting: Array<() => void> = [];
  return async <T>(f: () => Promise<T>): Promise<T> => {
    while (active >= n) await new Promise<void>((res) => waiting.push(res));
    active++;
    try {
      return await f();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}
const limit = limiter(4);

/** Writes a case's files to `root/<sub>` and returns that folder. */
function caseDir(sub: string, files: Record<string, Bytes>): string {
  const dir = join(root, sub);
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, p)), { recursive: true });
    writeFileSync(join(dir, p), content);
  }
  return dir;
}

function run(args: string[], cwd: string): Promise<CliResult> {
  return limit(() =>
    hostsmith(args, {
      cwd,
      // no user config, no ~/.ssh/config, no agent: only what the test gives
      env: { XDG_CONFIG_HOME: emptyConfigHome, XDG_STATE_HOME: join(root, 'state'), HOME: emptyConfigHome, SSH_AUTH_SOCK: '' },
    }),
  );
}

/** `plan` with a key to offer, so that a host that is wrongly contacted really is contacted. */
const plan = (args: string[], cwd: string) => run(['plan', ...args, '--identity', identity, '--state-dir', join(root, 'state')], cwd);

function expectRefused(res: CliResult, what: string): void {
  const out = `${what}\nexit ${res.code}\nstderr: ${res.stderr}\nstdout: ${res.stdout.slice(0, 2000)}`;
  expect(res.code, out).toBe(2);
  expect(res.stderr, out).toMatch(PLACE);
  expect(res.stderr + res.stdout, out).not.toMatch(/unexpected error/i);
  expect(connections, `${out}\na connection was made`).toBe(0);
}

const recipeDir = (i: number) => `recipe-${String(i).padStart(3, '0')}`;

/**
 * `validate --json` over every recipe of the corpus, in four batches run side by side (one CLI
 * start per recipe would take minutes on a busy machine): the `validated` event of each file.
 */
let validated: Promise<Map<string, { ok: boolean; errors?: Array<{ file?: string; line?: number; col?: number; message: string }> }>> | undefined;
function validateAll(): NonNullable<typeof validated> {
  validated ??= (async () => {
    const files = RECIPES.map((_, i) => `${recipeDir(i)}/recipe.yml`);
    const batches = [0, 1, 2, 3].map((k) => files.filter((_, i) => i % 4 === k));
    const results = await Promise.all(batches.map((batch) => run(['validate', '--json', ...batch], root)));
    const events = new Map<string, { ok: boolean; errors?: Array<{ file?: string; line?: number; col?: number; message: string }> }>();
    for (const res of results) {
      expect(res.stderr, res.stderr).not.toMatch(/unexpected error/i);
      expect(res.code, res.stderr).toBe(2);
      for (const e of res.events) if (e.event === 'validated') events.set(e.file as string, e as never);
    }
    return events;
  })();
  return validated;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'hostsmith-corpus-'));
  emptyConfigHome = join(root, 'home');
  mkdirSync(emptyConfigHome);
  identity = join(root, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', identity]);
  RECIPES.forEach((c, i) => caseDir(recipeDir(i), c.files));
  server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  if (server) await new Promise<void>((res) => server.close(() => res()));
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('the corpus is as large as promised', () => {
  it('has at least 100 recipes, 20 inventories and 15 configs, each named once', () => {
    expect(RECIPES.length).toBeGreaterThanOrEqual(100);
    expect(INVENTORIES(1).length).toBeGreaterThanOrEqual(20);
    expect(CONFIGS.length).toBeGreaterThanOrEqual(15);
    for (const list of [RECIPES, INVENTORIES(1), CONFIGS]) expect(new Set(list.map((c) => c.name)).size).toBe(list.length);
  });
});

describe('malformed recipes: validate and plan exit 2 at a place, contacting nothing', () => {
  it.concurrent.each(RECIPES.map((c, i) => [c.name, i] as const))('%s', async (_name, i) => {
    const file = `${recipeDir(i)}/recipe.yml`;
    const v = (await validateAll()).get(file);
    expect(v, `validate printed no event for ${file}`).toBeDefined();
    expect(v!.ok).toBe(false);
    expect(v!.errors!.length).toBeGreaterThan(0);
    for (const e of v!.errors!) {
      expect(e.line, JSON.stringify(e)).toBeGreaterThan(0);
      expect(e.col, JSON.stringify(e)).toBeGreaterThan(0);
      expect(e.file, JSON.stringify(e)).toBeTruthy();
    }
    expectRefused(await plan(['recipe.yml', '--hosts', `127.0.0.1:${port}`], join(root, recipeDir(i))), 'plan');
  });
});

describe('malformed inventories: plan exits 2 at a place, contacting nothing', () => {
  it.concurrent.each(INVENTORIES(0).map((c, i) => [c.name, i] as const))('%s', async (_name, i) => {
    const dir = caseDir(`inventory-${i}`, { 'recipe.yml': GOOD_RECIPE, ...INVENTORIES(port)[i]!.files });
    expectRefused(await plan(['recipe.yml', '-i', 'inventory.yml'], dir), 'plan -i');
  });
});

describe('malformed configs: plan exits 2 at a place, contacting nothing', () => {
  it.concurrent.each(CONFIGS.map((c, i) => [c.name, i] as const))('%s', async (_name, i) => {
    const dir = caseDir(`config-${i}`, { ...CONFIGS[i]!.files, 'recipe.yml': GOOD_RECIPE });
    expectRefused(await plan(['recipe.yml', '--hosts', `127.0.0.1:${port}`], dir), 'plan with config');
  });
});

describe('the corpus checks can fail', () => {
  it('a good recipe, inventory and config do reach the listener (so "no connection" means something)', async () => {
    const before = connections;
    const dir = caseDir('good', {
      'recipe.yml': GOOD_RECIPE,
      'inventory.yml': `hosts:\n  web1: { address: 127.0.0.1, port: ${port} }\n`,
      'hostsmith.config.yml': 'concurrency: 2\n',
      'bom.yml': b([0xef, 0xbb, 0xbf], GOOD_RECIPE),
    });
    const res = await plan(['recipe.yml', '-i', 'inventory.yml'], dir);
    // Not refused as input: the listener hangs up, so the host is unreachable (exit 4), said as
    // such — a peer hanging up mid-handshake must never crash the controller.
    expect(res.code, res.stderr).toBe(4);
    expect(res.stderr).not.toMatch(/unexpected error|at .*\.js:\d+/);
    expect(connections).toBe(before + 1);
    connections = before;
    // the byte-order mark an editor may write is not a malformed file
    const ok = await run(['validate', 'bom.yml'], dir);
    expect(ok.code, ok.stderr).toBe(0);
  });
});
