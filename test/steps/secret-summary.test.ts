/**
 * A step whose params hold a secret must not quote what it read from the host: that content may
 * hold the secret's previous value (a rotated password), which no mask knows.
 */
import { describe, expect, it } from 'vitest';
import { lineSchema, planLine } from '../../src/steps/line/line.js';
import type { PathState } from '../../src/steps/file-state.js';
import { HIDDEN_OLD, type StepContext } from '../../src/steps/step.js';
import { planUser, userSchema, userStep } from '../../src/steps/user/user.js';

const env = { runId: 'R1', step: 'Set password', backupDir: '/var/lib/hostsmith/backups/R1' };
const OLD = 'old-Secret-value';
const file = (content: string): PathState => ({ kind: 'file', content: Buffer.from(content), mode: 0o600, owner: 'root', group: 'root', missing: [] });

describe('line: a replaced line is not quoted when the step holds a secret', () => {
  const p = lineSchema.parse({ path: '/etc/app.env', line: 'PASSWORD=new-Secret-value', match: '^PASSWORD=' });
  const host = file(`USER=app\nPASSWORD=${OLD}\n`);

  it('hides the old line, keeps the rest of the summary', () => {
    const plan = planLine(p, host, { ...env, sensitive: true });
    expect(plan.summary).toBe(`/etc/app.env: replace line 2 ${HIDDEN_OLD} with "PASSWORD=new-Secret-value"`);
    expect(JSON.stringify(plan.summary)).not.toContain(OLD);
    expect(JSON.stringify(plan.undo)).not.toContain(OLD);
  });

  it('quotes it as before when the step holds no secret', () => {
    expect(planLine(p, host, env).summary).toBe(`/etc/app.env: replace line 2 "PASSWORD=${OLD}" with "PASSWORD=new-Secret-value"`);
    expect(planLine(p, host, { ...env, sensitive: false }).summary).toContain(OLD);
  });

  it('other summaries quote only what the recipe wants, never the host', () => {
    expect(planLine(p, file('PASSWORD=new-Secret-value\n'), { ...env, sensitive: true }).summary).toBe('/etc/app.env: line 1 is "PASSWORD=new-Secret-value"');
    const add = lineSchema.parse({ path: '/etc/app.env', line: 'TOKEN=x', after: '^USER=' });
    expect(planLine(add, host, { ...env, sensitive: true }).summary).toBe('/etc/app.env: add "TOKEN=x" after line 1');
  });
});

describe('user: an old comment is not quoted when the step holds a secret', () => {
  const state = (comment: string, shell = '/bin/sh') => ({
    user: { uid: 1001, gid: 1001, comment, home: '/home/app', shell },
    primaryGroup: 'app',
    memberOf: [],
    missingGroups: [],
    sameNameGroup: true,
    defaults: { home: '/home', shell: '/bin/sh' },
    home: '/home/app',
    homeStat: { kind: 'dir' as const, mode: 0o755, uid: 1001, gid: 1001, owner: 'app', group: 'app' },
    homeMissing: [],
    mail: false,
  });
  const p = userSchema.parse({ name: 'app', comment: 'token new-Secret-value' });

  it('hides the old comment in the summary', () => {
    expect(planUser(p, state(`token ${OLD}`), { ...env, sensitive: true }).summary).toBe(`modify user app: comment ${HIDDEN_OLD} → "token new-Secret-value"`);
    expect(planUser(p, state(`token ${OLD}`), env).summary).toBe(`modify user app: comment "token ${OLD}" → "token new-Secret-value"`);
  });

  /** A host whose user check prints `comment`/`shell`; every other command succeeds silently. */
  function host(comment: string, shell = '/bin/sh') {
    const cmds: string[] = [];
    const check = ['defaults /home /bin/sh', `passwd app:x:1001:1001:${comment}:/home/app:${shell}`, 'primary app:x:1001:', 'samegroup', 'home /home/app', 'homedir dir 755 1001 1001 app app'].join(
      '\n',
    );
    const ctx = {
      runId: env.runId,
      step: env.step,
      backupDir: env.backupDir,
      exec: async (cmd: string) => {
        cmds.push(cmd);
        const out = cmd.includes('getent passwd') ? check : '';
        return { code: 0, stdout: out, stderr: '', stdoutRaw: Buffer.from(out) };
      },
    } as unknown as StepContext;
    return { ctx, cmds };
  }

  it('apply carries out a plan that hid the old comment, from the state it was planned on', async () => {
    const s = state(`token ${OLD}`);
    const plan = planUser(p, s, { ...env, sensitive: true });
    const h = host(`token ${OLD}`);
    // One exec: guard, backup, usermod, the user read back (the journal's post-state).
    await expect(userStep.apply(h.ctx, p, plan, s)).resolves.toEqual({ state: expect.objectContaining({ home: '/home/app' }) });
    expect(h.cmds).toHaveLength(1);
    expect(h.cmds[0]).toMatch(/^\( usermod /m);
    expect(h.cmds.join('\n')).not.toContain(OLD);
  });
});
