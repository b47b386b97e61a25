import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { loadRecipe } from '../../src/recipe/load.js';
import { MAX_YAML_BYTES } from '../../src/yaml.js';
import { brief, fixture, loadIssues, yaml } from './fixtures.js';

const ok = (name: string, body = 'command: { run: "true" }') => [`  - name: ${name}`, `    ${body}`];

describe('loadRecipe: a valid recipe', () => {
  it('fills StepSpecs: type, params as written, needs, retry, timeout, locations', async () => {
    const dir = fixture({
      'recipes/web.yml': yaml(
        'name: web-server',
        'description: Nginx in front of the app',
        'vars:',
        '  server_name: { default: example.com, prompt: true }',
        '  upstream_port: { default: 3000, type: number }',
        '  db_password: { required: true, secret: true }',
        'defaults: { timeout: 10m, retry: { attempts: 2, delay: 1s } }',
        'steps:',
        '  - name: Install nginx',
        '    command: { run: apt-get install -y nginx-light }',
        '  - name: Site config',
        '    template: { src: site.conf.hbs, dest: "/etc/nginx/sites-enabled/{{server_name}}", mode: "0644" }',
        '    notify: [Reload nginx]',
        '  - name: Seed database',
        '    command: { run: /srv/app/bin/seed, rollback: /srv/app/bin/unseed, creates: /srv/app/.seeded }',
        '    when: "{{eq facts.os.id \'debian\'}}"',
        '    unless: test -f /srv/app/.seeded',
        '    fatal: false',
        '    retry: { attempts: 3, delay: 2s, backoff: 2 }',
        '    timeout: 5m',
        '    needs: [Install nginx]',
        '    sudo: true',
        'handlers:',
        '  - name: Reload nginx',
        '    command: { run: systemctl reload nginx }',
      ),
      // a bare template name is also found in templates/ next to the recipes folder
      'templates/site.conf.hbs': 'server_name {{server_name}}; proxy_pass http://127.0.0.1:{{upstream_port}};\n',
    });
    const r = await loadRecipe(join(dir, 'recipes/web.yml'));
    expect(r.name).toBe('web-server');
    expect(r.file).toBe(join(dir, 'recipes/web.yml'));
    expect(r.dir).toBe(join(dir, 'recipes'));
    expect(r.sudo).toBe(false);
    expect(r.defaults).toEqual({ parallel: 1, timeoutMs: 600_000, retry: { attempts: 2, delayMs: 1000, backoff: 1 } });
    expect(Object.keys(r.vars)).toEqual(['server_name', 'upstream_port', 'db_password']);
    expect(r.vars.upstream_port).toMatchObject({ type: 'number', default: 3000, required: false });

    const [install, site, seed] = r.steps;
    expect(install).toMatchObject({ name: 'Install nginx', type: 'command', needs: [], fatal: true, timeoutMs: 600_000 });
    expect(install!.retry).toEqual({ attempts: 2, delayMs: 1000, backoff: 1 });
    expect(install!.loc).toEqual({ file: r.file, line: 9, col: 5 });
    expect(install!.dir).toBe(r.dir);
    expect(site).toMatchObject({ type: 'template', needs: ['Install nginx'], notify: ['Reload nginx'] });
    expect(site!.params).toEqual({ src: 'site.conf.hbs', dest: '/etc/nginx/sites-enabled/{{server_name}}', mode: '0644' });
    expect(seed).toMatchObject({
      when: "{{eq facts.os.id 'debian'}}",
      unless: 'test -f /srv/app/.seeded',
      fatal: false,
      retry: { attempts: 3, delayMs: 2000, backoff: 2 },
      timeoutMs: 300_000,
      needs: ['Install nginx'],
      sudo: true,
    });
    expect(r.handlers).toHaveLength(1);
    expect(r.handlers[0]).toMatchObject({ name: 'Reload nginx', needs: [], notify: [] });
  });

  it('leaves retry and timeout to the engine (config file, then built-in) when the recipe sets none', async () => {
    const dir = fixture({ 'r.yml': yaml('name: r', 'steps:', ...ok('A'), ...ok('B')) });
    const r = await loadRecipe(join(dir, 'r.yml'));
    expect(r.steps[0]!.retry).toBeUndefined();
    expect(r.steps[0]!.timeoutMs).toBeUndefined();
    expect(r.steps[1]!.needs).toEqual(['A']);
    expect(r.defaults).toEqual({ parallel: 1 });
  });

  it('accepts shorthands: retry as a number, needs as one name, durations in seconds', async () => {
    const dir = fixture({
      'r.yml': yaml('name: r', 'steps:', ...ok('A'), ...ok('B'), '    retry: 4', '    timeout: 90', '    needs: A', '    when: false'),
    });
    const b = (await loadRecipe(join(dir, 'r.yml'))).steps[1]!;
    expect(b).toMatchObject({ retry: { attempts: 4, delayMs: 0, backoff: 1 }, timeoutMs: 90_000, needs: ['A'], when: 'false' });
  });

  it('does not judge a templated field by the step schema before rendering', async () => {
    const dir = fixture({
      'r.yml': yaml('name: r', 'vars: { m: "0600", d: /etc }', 'steps:', '  - name: F', '    file: { path: "{{d}}/x", mode: "{{m}}", content: hi }'),
    });
    await expect(loadRecipe(join(dir, 'r.yml'))).resolves.toBeTruthy();
  });
});

describe('loadRecipe: each problem with its position', () => {
  const cases: { name: string; lines: string[]; want: string; files?: Record<string, string> }[] = [
    {
      name: 'YAML syntax error',
      lines: ['name: r', 'steps:', '  - name: "unclosed', '    command: {}'],
      want: '5:1 : invalid YAML: Missing closing "quote',
    },
    {
      name: 'duplicate YAML key',
      lines: ['name: r', 'name: s', 'steps: []'],
      want: '2:1 : invalid YAML: duplicate key "name" (first at line 1)',
    },
    {
      name: 'unknown top-level key, at the key',
      lines: ['name: r', 'step: []', 'steps: []'],
      want: '2:1 step: unknown key "step" (did you mean "steps"?)',
    },
    {
      name: 'unknown key in step params, at the key',
      lines: ['name: r', 'steps:', '  - name: A', '    command: { run: x, creates: /a, bogus: 1 }'],
      want: '4:37 steps[0].command.bogus: unknown key "bogus" (expected one of: run, rollback, creates, removes, cwd, env, user)',
    },
    {
      name: 'unknown common step key beside a type key',
      lines: ['name: r', 'steps:', '  - name: A', '    command: { run: x }', '    retries: 3'],
      want: '5:5 steps[0].retries: unknown key "retries" (did you mean "retry"?)',
    },
    {
      name: 'unknown step type',
      lines: ['name: r', 'steps:', '  - name: A', '    comand: { run: x }'],
      want: '4:5 steps[0].comand: unknown step type "comand" (did you mean "command"?)',
    },
    {
      name: 'wrong type',
      lines: ['name: r', 'steps:', '  - name: A', '    command: { run: x }', '    fatal: "no"'],
      want: '5:12 steps[0].fatal: expected boolean, got string',
    },
    {
      name: 'wrong type in step params (a list where a string goes)',
      lines: ['name: r', 'steps:', '  - name: A', '    command:', '      run: [a, b]'],
      want: '5:12 steps[0].command.run: expected string, got a list',
    },
    {
      name: 'missing step name, at the step',
      lines: ['name: r', 'steps:', '  - command: { run: x }'],
      want: '3:5 steps[0].name: missing required field "name"',
    },
    {
      name: 'missing required param, at the key holding the params',
      lines: ['name: r', 'steps:', '  - name: A', '    template:', '      dest: /etc/x'],
      want: '4:5 steps[0].template.src: missing required field "src"',
    },
    {
      name: 'missing recipe name',
      lines: ['steps: []'],
      want: '1:1 name: missing required field "name"',
    },
    {
      name: 'recipe name pattern',
      lines: ['name: Web_Server', 'steps: []'],
      want: '1:7 name: "Web_Server" must match [a-z0-9][a-z0-9-]* (lowercase letters, digits and dashes)',
    },
    {
      name: 'duplicate step names',
      lines: ['name: r', 'steps:', ...ok('A'), ...ok('A')],
      want: '5:11 steps[1].name: duplicate step name "A" (first at ',
    },
    {
      name: 'a handler named like a step',
      lines: ['name: r', 'steps:', ...ok('A'), 'handlers:', ...ok('A')],
      want: '6:11 handlers[0].name: duplicate step name "A"',
    },
    {
      name: 'no type key',
      lines: ['name: r', 'steps:', '  - name: A', '    sudo: true'],
      want: '3:5 steps[0]: a step needs exactly one type key: command, file, template',
    },
    {
      name: 'several type keys',
      lines: ['name: r', 'steps:', '  - name: A', '    command: { run: x }', '    file: { path: /x }'],
      want: '5:5 steps[0].file: a step has exactly one type key, this one has command, file',
    },
    {
      name: 'needs naming an unknown step',
      lines: ['name: r', 'steps:', ...ok('Install nginx'), ...ok('B'), '    needs: [Install ngnix]'],
      want: '7:13 steps[1].needs[0]: unknown step "Install ngnix" (did you mean "Install nginx"?)',
    },
    {
      name: 'notify naming an unknown handler',
      lines: ['name: r', 'steps:', ...ok('A'), '    notify: [Reload]', 'handlers:', ...ok('Restart')],
      want: '5:14 steps[0].notify[0]: unknown handler "Reload"',
    },
    {
      name: 'notify naming a step',
      lines: ['name: r', 'steps:', ...ok('A'), ...ok('B'), '    notify: [A]'],
      want: '7:14 steps[1].notify[0]: "A" is a step, not a handler',
    },
    {
      name: 'needs cycle, named',
      lines: ['name: r', 'steps:', ...ok('A'), '    needs: [C]', ...ok('B'), ...ok('C')],
      want: '5:12 steps[0].needs: needs cycle: "A" → "C" → "B" → "A"',
    },
    {
      name: 'a step needing itself',
      lines: ['name: r', 'steps:', ...ok('A'), '    needs: [A]'],
      want: '5:13 steps[0].needs[0]: a step cannot need itself',
    },
    {
      name: 'bad cron schedule',
      lines: ['name: r', 'steps:', '  - name: C', '    cron: { name: n, schedule: "61 * * * *", command: "true" }'],
      want: '4:32 steps[0].cron.schedule: invalid cron schedule "61 * * * *": Constraint error, got value 61 expected range 0-59',
    },
    {
      name: 'cron schedule with seconds',
      lines: ['name: r', 'steps:', '  - name: C', '    cron:', '      schedule: "0 0 3 * * *"', '      name: nightly', '      command: "true"'],
      want: '5:17 steps[0].cron.schedule: a cron schedule has five fields',
    },
    {
      name: 'Handlebars syntax error',
      lines: ['name: r', 'steps:', '  - name: A', '    command: { run: "echo {{#if x}}" }'],
      want: '4:36 steps[0].command.run: template syntax error near "echo {{#if x}}": unexpected end of template',
    },
    {
      name: 'unknown name in a template, at the name',
      lines: ['name: r', 'vars: { server_name: a }', 'steps:', '  - name: A', '    command: { run: "echo {{server_nme}}" }'],
      want: '5:29 steps[0].command.run: unknown variable "server_nme" (did you mean "server_name"?)',
    },
    {
      name: 'unknown name under vars., in a literal block',
      lines: ['name: r', 'vars: { port: 1 }', 'steps:', '  - name: A', '    command:', '      run: |', '        echo start', '        echo {{ vars.prt }}'],
      want: '8:17 steps[0].command.run: unknown variable "vars.prt" (did you mean "port"?)',
    },
    {
      name: 'unknown name in when',
      lines: ['name: r', 'steps:', ...ok('A'), '    when: "{{eq fact.os.id 1}}"'],
      want: '5:17 steps[0].when: unknown variable "fact"',
    },
    {
      name: 'unknown helper',
      lines: ['name: r', 'vars: { x: 1 }', 'steps:', '  - name: A', '    command: { run: "{{upper x}}" }'],
      want: '5:24 steps[0].command.run: unknown helper "upper"',
    },
    {
      name: 'missing template file',
      lines: ['name: r', 'steps:', '  - name: T', '    template: { src: nope.hbs, dest: /etc/x }'],
      want: '4:22 steps[0].template.src: template "nope.hbs" not found (looked in ',
    },
    {
      name: 'bad duration',
      lines: ['name: r', 'steps:', ...ok('A'), '    timeout: 5 minutes'],
      want: '5:14 steps[0].timeout: invalid duration "5 minutes"',
    },
    {
      name: 'var default of the wrong type',
      lines: ['name: r', 'vars:', '  port: { default: abc, type: number }', 'steps: []'],
      want: '3:20 vars.port.default: not a number',
    },
    {
      name: 'misspelt var declaration key',
      lines: ['name: r', 'vars:', '  mail: { requird: true }', 'steps: []'],
      want: '3:11 vars.mail.requird: unknown key "requird" (did you mean "required"?)',
    },
    {
      name: 'reserved var name',
      lines: ['name: r', 'vars: { facts: 1 }', 'steps: []'],
      want: '2:9 vars.facts: var name "facts" is reserved',
    },
    {
      name: 'include in handlers',
      lines: ['name: r', 'steps: []', 'handlers:', '  - include: { recipe: x.yml }'],
      want: '4:5 handlers[0].include: include is only allowed in steps',
    },
  ];

  it.each(cases)('$name', async ({ lines, want, files }) => {
    const issues = await loadIssues({ 'recipe.yml': yaml(...lines), ...files });
    // cron is not a registered step type yet: its "unknown step type" issue is not the point here
    const got = issues.map(brief).filter((b) => !b.includes('unknown step type "cron"'));
    expect(got).toEqual([expect.stringMatching(`^${want.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`)]);
  });

  it('reports every problem at once, in file order, each formatted file:line:col: path: message', async () => {
    const dir = fixture({
      'recipe.yml': yaml(
        'name: Bad Name', //                                  1
        'colour: blue', //                                     2
        'steps:', //                                           3
        '  - name: A', //                                      4
        '    command: { run: "{{nope}}", bogus: 1 }', //       5
        '  - name: A', //                                      6
        '    command: { run: x }', //                          7
        '    needs: [Z]', //                                   8
      ),
    });
    const err = await loadRecipe(join(dir, 'recipe.yml')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    const issues = (err as InputError).issues;
    expect(issues.map(brief)).toEqual([
      '1:7 name: "Bad Name" must match [a-z0-9][a-z0-9-]* (lowercase letters, digits and dashes)',
      '2:1 colour: unknown key "colour" (expected one of: name, description, sudo, vars, steps, handlers, defaults, verify, test, types)',
      '5:24 steps[0].command.run: unknown variable "nope"',
      '5:33 steps[0].command.bogus: unknown key "bogus" (expected one of: run, rollback, creates, removes, cwd, env, user)',
      `6:11 steps[1].name: duplicate step name "A" (first at ${join(dir, 'recipe.yml')}:4:11)`,
      '8:13 steps[1].needs[0]: unknown step "Z"',
    ]);
    expect((err as InputError).exitCode).toBe(2);
    expect((err as InputError).message.split('\n')[0]).toBe(`${join(dir, 'recipe.yml')}:1:7: name: "Bad Name" must match [a-z0-9][a-z0-9-]* (lowercase letters, digits and dashes)`);
  });

  it('a file that cannot be read is one issue', async () => {
    const err = await loadRecipe('/nonexistent/recipe.yml').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).issues[0]!.message).toMatch(/^cannot read recipe: ENOENT/);
  });
});

describe('loadRecipe: template files', () => {
  it('checks names in the file at their line:col, allowing the step’s template.vars', async () => {
    const dir = fixture({
      'recipe.yml': yaml('name: r', 'vars: { server_name: a }', 'steps:', '  - name: T', '    template: { src: site.conf.hbs, dest: /etc/site, vars: { port: "{{server_name}}" } }'),
      'templates/site.conf.hbs': 'server {\n  name {{server_name}};\n  listen {{port}};\n  root {{docroot}};\n}\n',
    });
    const err = (await loadRecipe(join(dir, 'recipe.yml')).catch((e: unknown) => e)) as InputError;
    expect(err.issues).toEqual([{ file: join(dir, 'templates/site.conf.hbs'), line: 4, col: 10, path: 'steps[0].template.src', message: 'unknown variable "docroot"' }]);
  });

  it('resolves src from the recipe folder first, then templates/ there and in its parent', async () => {
    const dir = fixture({
      'recipes/r.yml': yaml('name: r', 'steps:', '  - name: T', '    template: { src: a.hbs, dest: /a }', '  - name: U', '    template: { src: sub/b.hbs, dest: /b }'),
      'recipes/a.hbs': 'x',
      'recipes/sub/b.hbs': 'y',
    });
    await expect(loadRecipe(join(dir, 'recipes/r.yml'))).resolves.toBeTruthy();
  });

  it('reports template syntax errors with the file line', async () => {
    const issues = await loadIssues({
      'recipe.yml': yaml('name: r', 'steps:', '  - name: T', '    template: { src: t.hbs, dest: /a }'),
      'templates/t.hbs': 'line one\n{{#if x}}\n',
    });
    expect(issues.map(brief)).toEqual([expect.stringMatching(/^3:1 steps\[0\]\.template\.src: template syntax error near "line one\{\{#if x\}\}": unexpected end of template/)]);
  });

  it('checks a file step’s src exists', async () => {
    const issues = await loadIssues({ 'recipe.yml': yaml('name: r', 'steps:', '  - name: F', '    file: { path: /a, src: motd }') });
    expect(issues.map(brief)).toEqual([expect.stringMatching(/^4:28 steps\[0\]\.file\.src: file "motd" not found \(looked in .*files\/motd/)]);
  });
});

describe('loadRecipe: include', () => {
  const db = yaml(
    'name: db',
    'sudo: true',
    'vars:',
    '  db_password: { required: true }',
    '  port: 5432',
    'defaults: { timeout: 1m }',
    'steps:',
    '  - name: Install',
    '    command: { run: "apt-get install db" }',
    '  - name: Create',
    '    command: { run: "createdb -p {{port}} {{db_password}}" }',
    '    needs: [Install]',
    '    notify: [Restart]',
    'handlers:',
    '  - name: Restart',
    '    command: { run: systemctl restart db }',
  );

  it('inserts the steps prefixed, with prefixed refs, merged handlers and scope vars', async () => {
    const dir = fixture({
      'main.yml': yaml(
        'name: main',
        'vars: { pw: { required: true, secret: true } }',
        'defaults: { timeout: 10m }',
        'steps:',
        ...ok('First'),
        '  - include: { recipe: lib/db.yml, vars: { db_password: "{{pw}}" } }',
        ...ok('Last'),
        '    notify: [db/Restart]',
      ),
      'lib/db.yml': db,
    });
    const r = await loadRecipe(join(dir, 'main.yml'));
    expect(r.steps.map((s) => [s.name, s.needs, s.notify, s.timeoutMs, s.sudo])).toEqual([
      ['First', [], [], 600_000, undefined],
      ['db/Install', ['First'], [], 60_000, true],
      ['db/Create', ['db/Install'], ['db/Restart'], 60_000, true],
      ['Last', ['db/Create'], ['db/Restart'], 600_000, undefined],
    ]);
    expect(r.handlers.map((h) => h.name)).toEqual(['db/Restart']);
    expect(r.steps[1]!.scopeVars).toEqual({ db_password: '{{pw}}', port: 5432 });
    expect(r.steps[1]!.dir).toBe(join(dir, 'lib'));
    expect(r.steps[1]!.loc.file).toBe(join(dir, 'lib/db.yml'));
    expect(Object.keys(r.vars)).toEqual(['pw']);
  });

  it('reports include problems: missing required var, unknown var, bad literal, missing file, cycles', async () => {
    const issues = await loadIssues(
      {
        'main.yml': yaml('name: main', 'steps:', '  - include: { recipe: db.yml, vars: { prot: 1, port: abc } }', '  - include: { recipe: nope.yml }', '  - include: { recipe: a.yml }'),
        'db.yml': db,
        'a.yml': yaml('name: a', 'steps:', '  - include: { recipe: b.yml }'),
        'b.yml': yaml('name: b', 'steps:', '  - include: { recipe: ./a.yml }'),
      },
      'main.yml',
    );
    expect(issues.map((i) => `${i.file!.replace(/.*\//, '')} ${brief(i)}`)).toEqual([
      'main.yml 3:5 steps[0].include: included recipe "db" needs var "db_password" (set it in include.vars)',
      'main.yml 3:40 steps[0].include.vars.prot: included recipe "db" declares no var "prot" (did you mean "port"?)',
      'main.yml 3:55 steps[0].include.vars.port: not a number',
      'main.yml 4:24 steps[1].include.recipe: included recipe "nope.yml" not found (looked for ' + issues[3]!.message.replace(/.*looked for /, ''),
      expect.stringMatching(/^b\.yml 3:24 steps\[0\]\.include\.recipe: include cycle: .*a\.yml → .*b\.yml → .*a\.yml$/),
    ]);
  });

  it('reports a recipe included twice once, at the second include', async () => {
    const issues = await loadIssues(
      {
        'main.yml': yaml('name: main', 'steps:', '  - include: { recipe: db.yml, vars: { db_password: a } }', '  - include: { recipe: db.yml, vars: { db_password: b } }'),
        'db.yml': db,
      },
      'main.yml',
    );
    expect(issues.map(brief)).toEqual([expect.stringMatching(/^4:5 steps\[1\]\.include: duplicate step name "db\/Install" \(first at .*main\.yml:3:5; is a recipe included twice\?\)$/)]);
  });

  it('checks included templates against the included recipe’s vars, at its own file', async () => {
    const issues = await loadIssues(
      {
        'main.yml': yaml('name: main', 'steps:', '  - include: { recipe: inc.yml }'),
        'inc.yml': yaml('name: inc', 'vars: { a: 1 }', 'steps:', '  - name: X', '    command: { run: "{{a}} {{b}}" }'),
      },
      'main.yml',
    );
    expect(issues.map((i) => `${i.file!.replace(/.*\//, '')} ${brief(i)}`)).toEqual(['inc.yml 5:30 steps[0].command.run: unknown variable "b"']);
  });
});

describe('loadRecipe: steps.<name> references', () => {
  it('reports unknown step names and result fields, with positions, and accepts good ones', async () => {
    const dir = fixture({
      'r.yml': [
        'name: r',
        'steps:',
        '  - name: Echo one',
        '    command: { run: "echo 1" }',
        '  - name: Use',
        '    command: { run: "echo {{steps.[Echo one].stdout}} {{steps.Nope.stdout}} {{steps.[Echo one].bogus}}" }',
        'handlers:',
        '  - name: H',
        '    command: { run: "echo {{steps.Use.changed}} {{steps.[Echo one].status}}" }',
      ].join('\n'),
    });
    const err = await loadRecipe(join(dir, 'r.yml')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    const msgs = (err as InputError).issues.map((i) => `${i.line}:${i.col} ${i.message}`);
    expect(msgs).toEqual(['6:57 "steps.Nope.stdout": no step named "Nope"', '6:79 "steps.[Echo one].bogus": a step result has stdout, stderr, changed, status, summary, not "bogus"']);
  });
});

/** A fixture whose files are bytes, not text. */
function byteFixture(files: Record<string, string | Buffer>): string {
  const dir = fixture({});
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), content);
  }
  return dir;
}

async function byteIssues(files: Record<string, string | Buffer>, main = 'recipe.yml'): Promise<string[]> {
  const dir = byteFixture(files);
  const err = await loadRecipe(join(dir, main)).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(InputError);
  expect((err as InputError).exitCode).toBe(2);
  return (err as InputError).issues.map((i) => `${relative(dir, i.file ?? '')} ${brief(i)}`);
}

const bytes = (...parts: Array<string | number[]>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

describe('loadRecipe: YAML aliases (issue 6, item 13)', () => {
  const top = ['name: r', 'steps:', '  - name: A', '    command: { run: "true" }'];

  it.each([
    { name: 'an alias to no anchor', lines: [...top, '    unless: *nope'], want: '5:13 : invalid YAML: alias *nope refers to no anchor (an anchor &nope must come before it)' },
    { name: 'an alias before its anchor', lines: ['name: r', 'description: *d', 'x: &d text', 'steps: []'], want: '2:14 : invalid YAML: alias *d refers to no anchor' },
    { name: 'an alias inside its own anchor', lines: ['name: r', 'vars:', '  a: &a [1, *a]', 'steps: []'], want: '3:13 : invalid YAML: alias *a is inside the value its anchor names' },
    { name: 'a merge of a plain value', lines: ['name: r', 'vars: { <<: 3 }', 'steps: []'], want: '2:13 : invalid YAML: a merge (<<) takes a map or an alias to one, not a value' },
    { name: 'a list as a key', lines: ['name: r', '? [a, b]', ': 1', 'steps: []'], want: '2:3 : invalid YAML: a key must be a plain value, not a list' },
    {
      name: 'an alias as a key that repeats another key',
      lines: ['name: r', 'vars:', '  a: &k b', '  *k : 1', '  b: 2', 'steps: []'],
      want: '5:3 : invalid YAML: duplicate key "b" (first at line 4)',
    },
  ])('$name: exit 2 at its place', async ({ lines, want }) => {
    const got = await byteIssues({ 'recipe.yml': yaml(...lines) });
    expect(got).toEqual([expect.stringMatching(`^recipe.yml ${want.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`)]);
  });

  it('an alias bomb is refused at the alias that makes it explode, quickly', async () => {
    const lines = ['name: r', 'vars:', '  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]'];
    for (const [i, n] of ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'].entries()) {
      const prev = 'abcdefghi'[i]!;
      lines.push(`  ${n}: &${n} [${Array(10).fill(`*${prev}`).join(', ')}]`);
    }
    lines.push('steps: []');
    const t0 = Date.now();
    const got = await byteIssues({ 'recipe.yml': yaml(...lines) });
    expect(Date.now() - t0).toBeLessThan(2000);
    // a is 11 values, b 111, c 1111, d 11111: the aliases in c already add 10 × 111, those in d cross 10000.
    expect(got).toHaveLength(1);
    expect(got[0]).toMatch(/^recipe\.yml 6:\d+ : invalid YAML: aliases expand to more than 10000 values from alias \*[cd] on; is this an alias bomb\?$/);
  });

  it('ordinary anchors, aliases and merges still load', async () => {
    const dir = byteFixture({
      'recipe.yml': yaml(
        'name: r',
        'vars:',
        '  base: &env { A: "1", B: "2" }',
        'steps:',
        '  - name: A',
        '    command: { run: "true", env: { <<: *env, C: "3" } }',
        '  - name: B',
        '    command: { run: "true", env: *env }',
      ),
    });
    const r = await loadRecipe(join(dir, 'recipe.yml'));
    expect(r.steps.map((s) => (s.params as { env: unknown }).env)).toEqual([
      { A: '1', B: '2', C: '3' },
      { A: '1', B: '2' },
    ]);
  });

  it('duplicate keys are found in linear time, also among thousands', async () => {
    const keys = Array.from({ length: 30000 }, (_, i) => `  v${i}: ${i}`);
    const t0 = Date.now();
    const got = await byteIssues({ 'recipe.yml': yaml('name: r', 'vars:', ...keys, '  v17: again', 'steps: []') });
    expect(got).toEqual(['recipe.yml 30003:3 : invalid YAML: duplicate key "v17" (first at line 20)']);
    expect(Date.now() - t0).toBeLessThan(20000);
  });

  it('nesting deeper than anything real is refused at its place', async () => {
    const got = await byteIssues({ 'recipe.yml': yaml('name: r', `vars: { a: ${'['.repeat(150)}${']'.repeat(150)} }`, 'steps: []') });
    expect(got).toEqual([expect.stringMatching(/^recipe\.yml 2:\d+ : invalid YAML: nested more than 100 levels deep$/)]);
  });

  it('unknown or non-plain tags are refused', async () => {
    expect(await byteIssues({ 'recipe.yml': yaml('name: r', 'vars: { a: !!binary aGk= }', 'steps: []') })).toEqual([
      'recipe.yml 2:21 : invalid YAML: tag !!binary is not supported; write the value without a tag',
    ]);
    expect(await byteIssues({ 'recipe.yml': yaml('name: r', 'vars: { a: !vault x }', 'steps: []') })).toEqual([expect.stringMatching(/^recipe\.yml 2:12 : invalid YAML: Unresolved tag: !vault/)]);
  });
});

describe('loadRecipe: bytes that are not UTF-8 text (issue 6, item 15)', () => {
  const head = 'name: r\nsteps:\n  - name: A\n';

  it.each([
    { name: 'a Latin-1 byte', body: bytes(head, '    command: { run: "caf', [0xe9], '" }\n'), want: '4:25 : not UTF-8: byte 0xe9 (in e9 22 20 7d) cannot be decoded; save the recipe as UTF-8' },
    { name: 'a sequence cut at the end of the file', body: bytes(head, '    command: { run: "x" } # €', [0xe2, 0x82]), want: '4:30 : not UTF-8: byte 0xe2' },
    { name: 'an overlong NUL', body: bytes(head, '    command: { run: "', [0xc0, 0x80], '" }\n'), want: '4:22 : not UTF-8: byte 0xc0' },
    { name: 'an encoded surrogate', body: bytes(head, '    command: { run: "', [0xed, 0xa0, 0x80], '" }\n'), want: '4:22 : not UTF-8: byte 0xed' },
    { name: 'a byte after multi-byte text, counted in characters', body: bytes('name: r\ndescription: "ünïcödé ', [0xff], '"\nsteps: []\n'), want: '2:23 : not UTF-8: byte 0xff' },
    { name: 'a NUL byte', body: bytes(head, '    command: { run: "a', [0], 'b" }\n'), want: '4:23 : a NUL byte; is this a binary file? The recipe must be text' },
    { name: 'a control character YAML does not allow', body: bytes(head, '    command: { run: "a', [0x1b], '[1m" }\n'), want: '4:23 : control character U+001B' },
  ])('$name: exit 2 at the first bad byte, never replaced', async ({ body, want }) => {
    const got = await byteIssues({ 'recipe.yml': body });
    expect(got).toEqual([expect.stringMatching(`^recipe.yml ${want.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`)]);
  });

  it('a UTF-16 file is named as such', async () => {
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('name: r\nsteps: []\n', 'utf16le')]);
    expect(await byteIssues({ 'recipe.yml': utf16 })).toEqual(['recipe.yml 1:1 : the recipe is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8']);
  });

  it('a byte-order mark is accepted, and positions stay those an editor shows', async () => {
    const got = await byteIssues({ 'recipe.yml': bytes([0xef, 0xbb, 0xbf], 'name: r\nsteps: []\nbogus: 1\n') });
    expect(got).toEqual(['recipe.yml 3:1 bogus: unknown key "bogus" (expected one of: name, description, sudo, vars, steps, handlers, defaults, verify, test, types)']);
    const dir = byteFixture({ 'recipe.yml': bytes([0xef, 0xbb, 0xbf], 'name: r\nsteps: []\n') });
    expect((await loadRecipe(join(dir, 'recipe.yml'))).name).toBe('r');
  });

  it('a template with a bad byte or a NUL is refused at its own file:line:col; a file step’s src may be binary', async () => {
    const recipe = yaml('name: r', 'steps:', '  - name: T', '    template: { src: t.hbs, dest: /a }', '  - name: F', '    file: { path: /b, src: blob.bin }');
    const blob = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x80]);
    expect(await byteIssues({ 'recipe.yml': recipe, 'templates/t.hbs': bytes('one\ntwo caf', [0xe9], '\n'), 'files/blob.bin': blob })).toEqual([
      'templates/t.hbs 2:8 steps[0].template.src: not UTF-8: byte 0xe9 (in e9 0a) cannot be decoded; save the template as UTF-8 (a `file` step copies binary files as they are)',
    ]);
    expect(await byteIssues({ 'recipe.yml': recipe, 'templates/t.hbs': bytes('one\n', [0], '\n'), 'files/blob.bin': blob })).toEqual([
      'templates/t.hbs 2:1 steps[0].template.src: a NUL byte; is this a binary file? The template must be text',
    ]);
    const dir = byteFixture({ 'recipe.yml': recipe, 'templates/t.hbs': bytes([0xef, 0xbb, 0xbf], 'ok {{"\x1b"}}\n'), 'files/blob.bin': blob });
    await expect(loadRecipe(join(dir, 'recipe.yml'))).resolves.toBeTruthy();
  });

  it('an included recipe with a bad byte is refused at its own place', async () => {
    const got = await byteIssues({
      'recipe.yml': yaml('name: r', 'steps:', '  - include: { recipe: inc.yml }'),
      'inc.yml': bytes('name: inc\nsteps: []\ndescription: ', [0x92], '\n'),
    });
    expect(got).toEqual([expect.stringMatching(/^inc\.yml 3:14 : not UTF-8: byte 0x92/)]);
  });

  it('a recipe larger than the limit is refused without being parsed', async () => {
    const text = 'name: r\nsteps: []\n' + `# ${'x'.repeat(MAX_YAML_BYTES)}\n`;
    const got = await byteIssues({ 'recipe.yml': text });
    expect(got).toEqual([`recipe.yml 1:1 : the recipe is ${text.length} bytes, more than the 4 MB hostsmith reads; is it the right file?`]);
  });
});
