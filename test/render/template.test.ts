import { describe, expect, it } from 'vitest';
import { RenderError } from '../../src/errors.js';
import { buildScope, checkTemplate, render, renderDeep, renderScopeVars, templateNames } from '../../src/render/template.js';

const values = {
  server_name: 'example.com',
  upstream_port: 3000,
  db_password: "p'w$(rm -rf /)",
  nothing: null,
  empty: '',
  tags: ['a', 'b'],
  opts: { tls: true },
};
const facts = { os: { id: 'debian', version_id: '12' }, hostname: 'web1' };
const steps = { 'Seed db': { stdout: 'seeded', changed: true, status: 'changed' } };
const scope = buildScope(values, facts, steps);
const r = (text: string) => render(text, scope, { step: 'Site config', field: 'template.dest' });

function renderError(text: string, s: Record<string, unknown> = scope): string {
  try {
    render(text, s, { step: 'Site config', field: 'template.dest' });
  } catch (e) {
    expect(e).toBeInstanceOf(RenderError);
    return (e as Error).message;
  }
  throw new Error(`expected ${JSON.stringify(text)} to fail`);
}

describe('render', () => {
  it.each([
    ['/etc/nginx/sites-enabled/{{server_name}}', '/etc/nginx/sites-enabled/example.com'],
    ['{{vars.server_name}}:{{upstream_port}}', 'example.com:3000'],
    ['{{facts.os.id}} {{facts.hostname}}', 'debian web1'],
    ['{{steps.[Seed db].stdout}}', 'seeded'],
    ['<{{server_name}}> & "x"', '<example.com> & "x"'], // noEscape: no HTML entities
    ['no template here', 'no template here'],
    ['{{#each tags}}{{this}};{{/each}}', 'a;b;'],
    ['{{#each tags as |t i|}}{{i}}={{t}}@{{../server_name}} {{/each}}', '0=a@example.com 1=b@example.com '],
    ['{{#if opts.tls}}https{{else}}http{{/if}}', 'https'],
    ['{{#with opts}}{{tls}}{{/with}}', 'true'],
    ['{{lookup steps "Seed db"}}', '[object Object]'],
    ['\\{{literal}}', '{{literal}}'],
  ])('%j → %j', (text, out) => {
    expect(r(text)).toBe(out);
  });

  it('leaves secret values as they are (masking happens on output, not here)', () => {
    expect(r('PASSWORD={{db_password}}')).toBe("PASSWORD=p'w$(rm -rf /)");
  });

  it.each([
    ['{{server_nme}}', 'step "Site config": template.dest: unknown variable "server_nme" (did you mean "server_name"?)'],
    ['{{vars.server_nme}}', 'step "Site config": template.dest: unknown variable "vars.server_nme" (did you mean "server_name"?)'],
    ['{{facts.os.codename}}', 'step "Site config": template.dest: unknown variable "facts.os.codename"'],
    ['{{steps.[Other step].stdout}}', 'step "Site config": template.dest: unknown variable "steps.[Other step].stdout"'],
    ['{{steps.[Seed db].stdot}}', 'step "Site config": template.dest: unknown variable "steps.[Seed db].stdot" (did you mean "stdout"?)'],
    ['{{eq nope 1}}', 'step "Site config": template.dest: unknown variable "nope"'],
    ['{{#each tags}}{{name}}{{/each}}', 'step "Site config": template.dest: unknown variable "name"'],
    ['{{#each steps}}{{stdout.x.y}}{{/each}}', 'step "Site config": template.dest: unknown variable "stdout.x.y"'],
    ['{{shout server_name}}', 'step "Site config": template.dest: unknown helper "shout" (helpers: eq ne lt gt and or not default json quote)'],
    // Handlebars' own `log` would print its argument (a secret, unmasked) on stdout: not a helper here.
    ['{{log server_name}}', 'step "Site config": template.dest: unknown helper "log" (helpers: eq ne lt gt and or not default json quote)'],
    ['{{eq server_name}}', 'step "Site config": template.dest: helper "eq" takes 2 arguments, got 1'],
    ['{{#if x}}', 'step "Site config": template.dest: template syntax error near "{{#if x}}": unexpected end of template (a block or {{ not closed?) (line 1)'],
    ['{{> partial}}', 'step "Site config": template.dest: partials and decorators are not supported'],
  ])('%j fails: %s', (text, message) => {
    expect(renderError(text)).toBe(message);
  });

  it('names only what it knows in the message', () => {
    expect(() => render('{{x}}', {}, {})).toThrow(/^unknown variable "x"$/);
    expect(() => render('{{x}}', {}, { field: 'when' })).toThrow(/^when: unknown variable "x"$/);
  });

  it('caches compiled templates by text, with any scope', () => {
    expect(render('{{a}}', { a: 1 })).toBe('1');
    expect(render('{{a}}', { a: 2 })).toBe('2');
    expect(() => render('{{a}}', {})).toThrow(RenderError);
  });
});

describe('helpers', () => {
  it.each([
    ['{{eq facts.os.id "debian"}}', 'true'],
    ['{{eq facts.os.version_id 12}}', 'true'], // facts are strings; a number literal still matches
    ['{{eq upstream_port "3000"}}', 'true'],
    ['{{eq opts.tls "true"}}', 'false'],
    ['{{ne facts.os.id "ubuntu"}}', 'true'],
    ['{{lt 9 10}} {{gt 9 10}} {{lt "9" "10"}} {{lt "b" "a"}}', 'true false true false'],
    ['{{and opts.tls server_name}} {{and opts.tls empty}}', 'true false'],
    ['{{or nothing empty}} {{or nothing server_name}}', 'false true'],
    ['{{not empty}} {{not tags}} {{not (eq 1 2)}}', 'true false true'],
    ['{{default nothing "fallback"}}', 'fallback'],
    ['{{default empty "fallback"}}', 'fallback'],
    ['{{default server_name "fallback"}}', 'example.com'],
    ['{{default opts.missing "fallback"}}', 'fallback'], // the last segment may be missing
    ['{{default facts.os.codename nothing "third"}}', 'third'],
    ['{{default upstream_port 1}}', '3000'],
    ['{{json tags}} {{json opts}} {{json nothing}} {{json server_name}}', '["a","b"] {"tls":true} null "example.com"'],
    ['{{quote db_password}}', `'p'\\''w$(rm -rf /)'`],
    ['{{quote server_name}}', 'example.com'],
    ['{{quote "a b"}} {{quote empty}} {{quote nothing}}', `'a b' '' ''`],
    ['{{#if (and (eq facts.os.id "debian") (gt upstream_port 1024))}}high{{/if}}', 'high'],
  ])('%s → %s', (text, out) => {
    expect(r(text)).toBe(out);
  });

  it('default does not hide an undeclared name (a typo stays an error)', () => {
    expect(renderError('{{default server_nme "x"}}')).toMatch(/unknown variable "server_nme"/);
    expect(renderError('{{default opts.a.b "x"}}')).toMatch(/unknown variable "opts.a.b"/);
  });
});

describe('renderDeep', () => {
  it('renders every string of a nested value and keeps other values', () => {
    const params = { dest: '/etc/{{server_name}}', mode: 420, env: { PORT: '{{upstream_port}}' }, args: ['{{facts.os.id}}', true, null] };
    expect(renderDeep(params, scope, { step: 's' })).toEqual({ dest: '/etc/example.com', mode: 420, env: { PORT: '3000' }, args: ['debian', true, null] });
  });

  it('extends the field path as it descends', () => {
    expect(() => renderDeep({ env: { A: ['ok', '{{nope}}'] } }, scope, { step: 'S', field: 'command' })).toThrow('step "S": command.env.A[1]: unknown variable "nope"');
  });
});

describe('buildScope and renderScopeVars', () => {
  it('exposes each var by name and under vars, with facts and steps', () => {
    expect(buildScope({ a: 1 }, { f: 1 }, { s: {} })).toEqual({ a: 1, vars: { a: 1 }, facts: { f: 1 }, steps: { s: {} } });
  });

  it('renders scope vars in order, each seeing the ones before it', () => {
    const out = renderScopeVars({ app_dir: '/srv/{{server_name}}', log_dir: '{{app_dir}}/log', port: 5432 }, values, facts, steps, { step: 'db/Create' });
    expect(out).toMatchObject({ server_name: 'example.com', app_dir: '/srv/example.com', log_dir: '/srv/example.com/log', port: 5432 });
  });
});

describe('checkTemplate and templateNames (static)', () => {
  const declared = new Set(['server_name', 'tags', 'port']);
  it.each([
    ['{{server_name}} {{vars.port}} {{facts.os.id}} {{steps.[Seed db].stdout}} {{@root.port}}', []],
    ['{{#each tags as |t|}}{{t}} {{name}} {{@index}} {{../server_name}}{{/each}}', []],
    ['{{#with facts.os}}{{id}}{{/with}}', []],
    ['{{#if port}}{{srver_name}}{{/if}}', [{ message: 'unknown variable "srver_name" (did you mean "server_name"?)', line: 1, column: 14 }]],
    ['a\n  {{vars.nope}}', [{ message: 'unknown variable "vars.nope"', line: 2, column: 4 }]],
    ['{{#each tags}}{{../nope}}{{/each}}', [{ message: 'unknown variable "nope"', line: 1, column: 16 }]],
    ['{{json}}', [{ message: 'helper "json" takes 1 argument, got 0', line: 1, column: 0 }]],
    ['{{#if}}x{{/if}}', [{ message: 'helper "if" takes 1 argument, got 0', line: 1, column: 0 }]],
    ['x {{ y', [expect.objectContaining({ line: 1, message: expect.stringMatching(/^template syntax error/) })]],
  ])('%j', (text, problems) => {
    expect(checkTemplate(text, declared)).toEqual(problems);
  });

  it('lists the top-level names a template reads', () => {
    const names = templateNames('{{a.b}} {{default c "x"}} {{#each d}}{{e}}{{/each}}');
    expect(names.map((n) => [n.original, n.argument])).toEqual([
      ['a.b', false],
      ['c', true],
      ['d', true],
    ]);
  });
});
