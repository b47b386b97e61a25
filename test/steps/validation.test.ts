/**
 * Paths, link targets and account names are refused at validation, for every step type that hands
 * them to the host: a path that is not normalised (rollback would `rmdir /a/new/..`), a link
 * target with a line break, an owner that chown would read as an option.
 */
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { commandSchema } from '../../src/steps/command/command.js';
import { fileSchema } from '../../src/steps/file/file.js';
import { lineSchema } from '../../src/steps/line/line.js';
import { absolutePathProblem, normalisePath } from '../../src/steps/paths.js';
import { templateSchema } from '../../src/steps/template/template.js';
import { userSchema } from '../../src/steps/user/user.js';
import { stepType } from '../../src/steps/registry.js';
import { brief, loadIssues, yaml } from '../recipe/fixtures.js';

/** `field: message` for each issue; [] when the params are valid. */
const issues = (schema: z.ZodTypeAny, params: Record<string, unknown>) => {
  const r = schema.safeParse(params);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

describe('absolute paths must be normalised', () => {
  const refused: Array<[string, string]> = [
    ['/tmp/newdir/../dd/f', '/tmp/dd/f'],
    ['/tmp/x/..', '/tmp'],
    ['/tmp//x', '/tmp/x'],
    ['//etc/x', '/etc/x'],
    ['/etc/./x', '/etc/x'],
    ['/etc/x/.', '/etc/x'],
    ['/etc/x/', '/etc/x'],
    ['/..', '/'],
  ];
  it.each(refused)('%s is refused, naming %s', (path, norm) => {
    expect(normalisePath(path)).toBe(norm);
    expect(absolutePathProblem(path)).toBe(`"${path}" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "${norm}"`);
  });
  it.each(['/', '/etc/x', '/tmp/pre/x:y/z/f', '/srv/a..b/.hidden/...', '/opt/my dir/f', '/a|b/-c'])('%s is fine', (path) => {
    expect(absolutePathProblem(path)).toBeUndefined();
  });
  it('a relative path, a line break or a NUL is refused', () => {
    expect(absolutePathProblem('etc/x')).toBe('must be an absolute path');
    expect(absolutePathProblem('/etc/x\n')).toBe('a path cannot contain a line break or a NUL byte');
    expect(absolutePathProblem('/etc/x\0y')).toBe('a path cannot contain a line break or a NUL byte');
  });
});

describe('every path-like field of every step type', () => {
  const BAD = '/tmp/newdir/../dd/f';
  const why = `"${BAD}" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "/tmp/dd/f"`;
  const cases: Array<[string, z.ZodTypeAny, Record<string, unknown>, string]> = [
    ['file.path', fileSchema, { path: BAD }, `path: ${why}`],
    ['file.path (directory)', fileSchema, { path: '/srv/app/', state: 'directory' }, 'path: "/srv/app/" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "/srv/app"'],
    ['template.dest', templateSchema, { src: 't.hbs', dest: BAD }, `dest: ${why}`],
    ['line.path', lineSchema, { path: BAD, line: 'a' }, `path: ${why}`],
    ['command.creates', commandSchema, { run: 'x', creates: BAD }, `creates: ${why}`],
    ['command.removes', commandSchema, { run: 'x', removes: '/var//x' }, 'removes: "/var//x" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "/var/x"'],
    ['command.cwd', commandSchema, { run: 'x', cwd: '/srv/./app' }, 'cwd: "/srv/./app" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "/srv/app"'],
    ['command.cwd with a line break', commandSchema, { run: 'x', cwd: 'build\n' }, 'cwd: a path cannot contain a line break or a NUL byte'],
    ['user.home', userSchema, { name: 'app', home: '/home/../srv/app' }, 'home: "/home/../srv/app" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "/srv/app"'],
    ['user.shell', userSchema, { name: 'app', shell: '/bin//sh' }, 'shell: "/bin//sh" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "/bin/sh"'],
  ];
  it.each(cases)('%s', (_name, schema, params, expected) => {
    expect(issues(schema, params)).toEqual([expected]);
  });
  it('relative command paths stay allowed (they are relative to the login home or cwd)', () => {
    expect(issues(commandSchema, { run: 'x', cwd: 'build', creates: '../out/.done', removes: 'tmp/lock' })).toEqual([]);
  });
});

describe('link targets and account names', () => {
  const cases: Array<[string, z.ZodTypeAny, Record<string, unknown>, string]> = [
    ['a newline in a link target', fileSchema, { path: '/l', state: 'link', target: '/etc/a\nb' }, 'target: a link target cannot contain a line break or a NUL byte'],
    ['a trailing newline in a link target', fileSchema, { path: '/l', state: 'link', target: '/etc/a\n' }, 'target: a link target cannot contain a line break or a NUL byte'],
    ['a leading "-" in file.owner', fileSchema, { path: '/f', owner: '-R' }, 'owner: owner "-R" starts with "-" (it would be read as an option); give the account\'s name or number'],
    [
      'a leading "-" in file.group',
      fileSchema,
      { path: '/f', group: '--reference=/etc' },
      'group: group "--reference=/etc" starts with "-" (it would be read as an option); give the account\'s name or number',
    ],
    ['a leading "-" in template.owner', templateSchema, { src: 't', dest: '/f', owner: '-h' }, 'owner: owner "-h" starts with "-" (it would be read as an option); give the account\'s name or number'],
    ['a leading "-" in line.group', lineSchema, { path: '/f', line: 'a', group: '-x' }, 'group: group "-x" starts with "-" (it would be read as an option); give the account\'s name or number'],
    ['a leading "-" in command.user', commandSchema, { run: 'x', user: '-s' }, 'user: user "-s" starts with "-" (it would be read as an option); give the account\'s name or number'],
    ['owner:group in owner', fileSchema, { path: '/f', owner: 'www:adm' }, 'owner: owner "www:adm" contains ":"; give the group in its own field (group:)'],
    ['a newline in an owner', fileSchema, { path: '/f', owner: 'www\n' }, 'owner: owner "www\\n" contains a blank, line break or control character; give the account\'s name or number'],
    ['an empty group', fileSchema, { path: '/f', group: '' }, 'group: group must not be empty'],
  ];
  it.each(cases)('%s', (_name, schema, params, expected) => {
    expect(issues(schema, params)).toEqual([expected]);
  });
  it('names, numbers and relative or unusual targets are fine', () => {
    expect(issues(fileSchema, { path: '/l', state: 'link', target: '../lib/a|b c', owner: 'www-data', group: '1000' })).toEqual([]);
    expect(issues(commandSchema, { run: 'x', user: 'deploy' })).toEqual([]);
  });
});

describe('in a recipe: exit 2 at the field, before any host is contacted', () => {
  it('reports each bad field at its file:line:col', async () => {
    const found = await loadIssues({
      'recipe.yml': yaml(
        'name: paths',
        'steps:',
        '  - name: Dotdot',
        '    file: { path: /tmp/newdir/../dd/f, content: x }',
        '  - name: Link',
        '    file: { path: /l, state: link, target: "/a\\nb" }',
        '  - name: Owner',
        '    line: { path: /etc/x, line: a, owner: -R }',
        '  - name: Creates',
        '    command: { run: "true", creates: "/var//x" }',
      ),
    });
    expect(found.map(brief)).toEqual([
      '4:19 steps[0].file.path: "/tmp/newdir/../dd/f" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "/tmp/dd/f"',
      '6:44 steps[1].file.target: a link target cannot contain a line break or a NUL byte',
      '8:43 steps[2].line.owner: owner "-R" starts with "-" (it would be read as an option); give the account\'s name or number',
      '10:38 steps[3].command.creates: "/var//x" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "/var/x"',
    ]);
  });
  it('a templated path is checked once rendered (the engine refuses it then)', async () => {
    await expect(loadIssues({ 'recipe.yml': yaml('name: t', 'vars: { d: { default: x } }', 'steps:', '  - name: T', '    file: { path: "/tmp/{{d}}/../f", content: x }') })).rejects.toThrow(
      /expected the recipe to be rejected/,
    );
  });
});

describe('yes/no params take what a template renders, as every flag does', () => {
  // A var rendered into `enabled: "{{on}}"` arrives as the string "true" or "false".
  it.each([
    ['service', { name: 'cron', enabled: 'false' }, 'enabled'],
    ['package', { install: ['jq'], update_cache: 'true' }, 'update_cache'],
    ['line', { path: '/etc/x', line: 'a', create: 'true' }, 'create'],
    ['block', { path: '/etc/x', block: 'a', create: 'true' }, 'create'],
    ['git', { repo: '/srv/r.git', dest: '/srv/r', force: 'true' }, 'force'],
    ['reboot', { only_if_needed: 'true' }, 'only_if_needed'],
  ])('%s', (type, params, field) => {
    const schema = stepType(type)!.schema;
    const parsed = schema.safeParse(params);
    expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true);
    expect((parsed.data as Record<string, unknown>)[field]).toBe((params as Record<string, unknown>)[field] === 'true');
    expect(issues(schema, { ...params, [field]: 'yes' }).join('\n')).toMatch(new RegExp(field));
  });
});
