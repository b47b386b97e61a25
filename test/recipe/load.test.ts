import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { loadRecipe } from '../../src/recipe/load.js';
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
        "    when: \"{{eq facts.os.id 'debian'}}\"",
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
      want: '2:1 : invalid YAML: Map keys must be unique',
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
      '2:1 colour: unknown key "colour" (expected one of: name, description, sudo, vars, steps, handlers, defaults)',
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
      'recipe.yml': yaml(
        'name: r',
        'vars: { server_name: a }',
        'steps:',
        '  - name: T',
        '    template: { src: site.conf.hbs, dest: /etc/site, vars: { port: "{{server_name}}" } }',
      ),
      'templates/site.conf.hbs': 'server {\n  name {{server_name}};\n  listen {{port}};\n  root {{docroot}};\n}\n',
    });
    const err = (await loadRecipe(join(dir, 'recipe.yml')).catch((e: unknown) => e)) as InputError;
    expect(err.issues).toEqual([
      { file: join(dir, 'templates/site.conf.hbs'), line: 4, col: 10, path: 'steps[0].template.src', message: 'unknown variable "docroot"' },
    ]);
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
        'main.yml': yaml(
          'name: main',
          'steps:',
          '  - include: { recipe: db.yml, vars: { prot: 1, port: abc } }',
          '  - include: { recipe: nope.yml }',
          '  - include: { recipe: a.yml }',
        ),
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
    expect(msgs).toEqual([
      '6:57 "steps.Nope.stdout": no step named "Nope"',
      '6:79 "steps.[Echo one].bogus": a step result has stdout, stderr, changed, status, summary, not "bogus"',
    ]);
  });
});
