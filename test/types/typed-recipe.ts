/**
 * Compile-time tests of typed recipes: `npm test` type-checks this file (tsc over test/), and each
 * `@ts-expect-error` fails the check when the error it expects is not raised — a misspelled param
 * that type-checks is a failing test.
 */
import { defineRecipe, defineStepType, z } from '../../src/index.js';

// A well-formed recipe: common keys, a template in a number field, an include.
defineRecipe({
  name: 'ok',
  vars: { port: { default: 8080, type: 'number' } },
  steps: [
    { name: 'Folder', file: { path: '/srv/app', state: 'directory', mode: '0755' }, notify: 'Reload' },
    { name: 'Config', template: { src: 'app.conf.hbs', dest: '/srv/app/app.conf' } },
    { name: 'Port', line: { path: '/srv/app/env', line: 'PORT={{port}}', match: '^PORT=' } },
    { include: { recipe: 'other.yml' } },
  ],
  handlers: [{ name: 'Reload', command: { run: 'true' } }],
});

defineRecipe({
  name: 'misspelled-param',
  // @ts-expect-error `pth` is not a param of file
  steps: [{ name: 'Folder', file: { pth: '/srv/app' } }],
});

defineRecipe({
  name: 'wrong-value',
  // @ts-expect-error a file's path is a string, not a number
  steps: [{ name: 'Folder', file: { path: 42 } }],
});

defineRecipe({
  name: 'two-types',
  // @ts-expect-error a step has exactly one type
  steps: [{ name: 'Both', file: { path: '/a' }, command: { run: 'true' } }],
});

defineRecipe({
  name: 'misspelled-common-key',
  // @ts-expect-error `nottify` is not a key of a step
  steps: [{ name: 'A', command: { run: 'true' }, nottify: ['B'] }],
});

// A custom type, typed by the key it is used under.
const greet = defineStepType({
  type: 'greet',
  schema: z.object({ who: z.string() }).strict(),
  check: async () => ({}),
  plan: () => ({ changed: false, summary: '', undo: null }),
  apply: async () => ({}),
  rollback: async () => {},
  footprint: () => ({ reads: [], writes: [] }),
});
defineRecipe({ name: 'custom', types: ['./greet.ts'], steps: [{ name: 'Hi', greet: { who: 'world' } }] }, { greet });
// @ts-expect-error `whom` is not a param of greet
defineRecipe({ name: 'custom-bad', types: ['./greet.ts'], steps: [{ name: 'Hi', greet: { whom: 'world' } }] }, { greet });
