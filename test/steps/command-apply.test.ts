/**
 * The command step's one-exec apply: held to its `creates`/`removes` as planned, the command run
 * as its own exec would run it, and the paths read back, in one exec. Run for real through /bin/sh
 * with the local transport in a scratch folder; the real-host tier is test/e2e/guard.test.ts.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { commandSchema, commandStep } from '../../src/steps/command/command.js';
import { isGuarded, type StepContext } from '../../src/steps/step.js';
import { localCtx } from './local-ctx.js';

const setup = (timeoutMs?: number) => localCtx('hs-command-', timeoutMs ? { timeoutMs } : {});

const params = (o: Record<string, unknown>) => commandSchema.parse(o);

async function planned(ctx: StepContext, p: ReturnType<typeof params>) {
  const s = await commandStep.check(ctx, p);
  const plan = commandStep.plan(p, s, { runId: 'R1', step: 'S', backupDir: '/x' });
  return { s, plan };
}

describe('command: one exec per run', () => {
  it('runs the command once, in one exec, with its output exactly as printed and the paths read back', async () => {
    const { dir, ctx, execs } = setup();
    const p = params({ run: `printf 'a\\nb' ; printf 'warn' >&2; touch ${dir}/made; rm -f ${dir}/gone`, creates: `${dir}/made`, removes: `${dir}/gone` });
    writeFileSync(join(dir, 'gone'), 'x');
    const { s, plan } = await planned(ctx, p);
    expect(plan.changed).toBe(true);
    execs.length = 0;
    const r = await commandStep.apply(ctx, p, plan, s);
    expect(execs).toHaveLength(1);
    expect(r.stdout).toBe('a\nb');
    expect(r.stderr).toBe('warn');
    expect(r.state).toEqual({ createsExists: true, removesExists: false });
    expect(isGuarded(commandStep, p)).toBe(true);
  });

  it("runs in its cwd with its env, and sees none of the exec's own shell variables", async () => {
    const { dir, ctx } = setup();
    const p = params({ run: 'pwd; echo "$GREETING"; echo "[${g-}${rc-}${s-}]"; touch made', cwd: dir, env: { GREETING: 'hi there' }, creates: `${dir}/made` });
    const { s, plan } = await planned(ctx, p);
    const r = await commandStep.apply(ctx, p, plan, s);
    expect(r.stdout).toBe(`${dir}\nhi there\n[]\n`);
  });

  it('the path moved since the plan: nothing runs, and the step says its state moved', async () => {
    const { dir, ctx } = setup();
    const p = params({ run: `echo ran > ${dir}/ran; touch ${dir}/made`, creates: `${dir}/made` });
    const { s, plan } = await planned(ctx, p);
    writeFileSync(join(dir, 'made'), 'by hand');
    await expect(commandStep.apply(ctx, p, plan, s)).rejects.toThrow(/not applied: its state moved since the plan was made \(.*made changed after it was read\)/);
    expect(existsSync(join(dir, 'ran'))).toBe(false);
    expect(readFileSync(join(dir, 'made'), 'utf8')).toBe('by hand');
  });

  it('a failing command fails the step with its exit code and what it said, as its own exec did', async () => {
    const { dir, ctx } = setup();
    const p = params({ run: 'echo out; echo "it broke" >&2; exit 3', creates: `${dir}/made` });
    const { s, plan } = await planned(ctx, p);
    await expect(commandStep.apply(ctx, p, plan, s)).rejects.toThrow(/^command "echo out; echo "it broke" >&2; exit 3" exited 3: it broke$/);
  });

  it('a command past its timeout is reported as timed out', async () => {
    const { dir, ctx } = setup(1000);
    const p = params({ run: 'sleep 5', creates: `${dir}/made` });
    const { s, plan } = await planned(ctx, p);
    await expect(commandStep.apply(ctx, p, plan, s)).rejects.toThrow(/timed out after 1s/);
  }, 15_000);

  it('as another user, or with nothing to hold it to, it is its own exec as before', async () => {
    const { ctx, execs } = setup();
    const asUser = params({ run: 'true', user: 'nobody', creates: '/nonexistent/x' });
    expect(isGuarded(commandStep, asUser)).toBe(false);
    const bare = params({ run: 'echo hi' });
    execs.length = 0;
    const r = await commandStep.apply(ctx, bare, (await planned(ctx, bare)).plan, {});
    expect(execs).toEqual([expect.stringContaining('echo hi')]);
    expect(r).toEqual({ stdout: 'hi\n', stderr: '', state: {} });
  });
});
