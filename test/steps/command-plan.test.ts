import { describe, expect, it } from 'vitest';
import { commandStep, commandSchema } from '../../src/steps/command/command.js';
import type { StepContext } from '../../src/steps/step.js';

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

describe('command timeouts', () => {
  /** A host whose command ends with `result` after `ms` milliseconds. */
  const host = (result: { code: number; timedOut?: boolean }, ms: number, timeoutMs?: number) =>
    ({
      timeoutMs,
      exec: async () => {
        await new Promise((r) => setTimeout(r, ms));
        return { stdout: '', stderr: '', stdoutRaw: Buffer.alloc(0), ...result };
      },
    }) as unknown as StepContext;
  const apply = (ctx: StepContext) => commandStep.apply(ctx, params({ run: "trap '' TERM; sleep 30" }), { changed: true, summary: '', undo: null }, {});

  it('a command killed (SIGKILL, 137) after ignoring SIGTERM past its timeout is reported as timed out', async () => {
    await expect(apply(host({ code: 137 }, 30, 20))).rejects.toThrow(
      "command \"trap '' TERM; sleep 30\" timed out after 20ms, ignored SIGTERM and was killed (SIGKILL); if it needs longer, raise the step's `timeout`",
    );
    await expect(apply(host({ code: 137, timedOut: true }, 0, 20))).rejects.toThrow(/timed out after 20ms, ignored SIGTERM and was killed \(SIGKILL\)/);
  });
  it('one that stops on SIGTERM (124) was stopped', async () => {
    await expect(apply(host({ code: 124, timedOut: true }, 0, 2000))).rejects.toThrow(/timed out after 2s and was stopped;/);
  });
  it('a 137 before the limit, or without one, is the exit status it is', async () => {
    await expect(apply(host({ code: 137 }, 0, 60_000))).rejects.toThrow(/exited 137$/);
    await expect(apply(host({ code: 137 }, 0))).rejects.toThrow(/exited 137$/);
  });
});
