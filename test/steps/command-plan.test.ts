import { describe, expect, it } from 'vitest';
import { commandStep, commandSchema } from '../../src/steps/command.js';

const env = { runId: 'R', step: 's', backupDir: '/b' };
const params = (o: Record<string, unknown>) => commandSchema.parse({ run: 'make install', ...o });

describe('command plan', () => {
  const cases: Array<[string, Record<string, unknown>, Record<string, boolean>, boolean, unknown]> = [
    ['runs without guards', {}, {}, true, null],
    ['is reversible with a rollback', { rollback: 'make uninstall' }, {}, true, { run: 'make uninstall' }],
    ['skips when creates exists', { creates: '/x' }, { createsExists: true }, false, null],
    ['runs when creates is missing', { creates: '/x', rollback: 'rm /x' }, { createsExists: false }, true, { run: 'rm /x' }],
    ['skips when removes is gone', { removes: '/x' }, { removesExists: false }, false, null],
    ['runs when removes exists', { removes: '/x' }, { removesExists: true }, true, null],
  ];
  it.each(cases)('%s', (_n, p, state, changed, undo) => {
    const plan = commandStep.plan(params(p), state, env);
    expect(plan.changed).toBe(changed);
    if (changed) expect(plan.undo).toMatchObject(undo === null ? {} : (undo as object));
    if (changed && undo === null) expect(plan.undo).toBeNull();
  });
  it('converts env values to strings and rejects unknown keys', () => {
    expect(params({ env: { PORT: 80, DEBUG: true } }).env).toEqual({ PORT: '80', DEBUG: 'true' });
    expect(commandSchema.safeParse({ run: 'x', shell: 'bash' }).success).toBe(false);
  });
});
