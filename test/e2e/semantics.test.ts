/**
 * Run semantics from SPEC §2/§4 on a real host: when/unless, retry, timeout, needs, handlers,
 * results of earlier steps, fatal: false, parallel steps, includes and var precedence.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';

describeHosts('run semantics on a real host', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });
  const apply = (file: string, ...extra: string[]) => hostsmith(['apply', file, '--hosts', 'h1', '--yes', '--json', ...sandboxArgs(sandbox(), state), ...extra]);

  it('when, unless, creates and steps.<name> results decide what runs', async () => {
    const sb = sandbox();
    const dir = fixture({
      'r.yml': `name: conditions
vars:
  enable_extra: { default: false, type: boolean }
steps:
  - name: Read hostname
    command: { run: "cat /etc/hostname" }
  - name: Use result
    file: { path: /root/sem-result, content: "host={{steps.[Read hostname].stdout}}\\nchanged={{steps.[Read hostname].changed}}\\n" }
  - name: Result in a command line
    command: { run: "echo got-{{steps.[Read hostname].stdout}}-end > /root/sem-cmd", rollback: "rm -f /root/sem-cmd" }
  - name: Only on debian
    when: "{{eq facts.os.id 'debian'}}"
    file: { path: /root/sem-debian, content: "yes\\n" }
  - name: Only on alpine
    when: "{{eq facts.os.id 'alpine'}}"
    file: { path: /root/sem-alpine, content: "yes\\n" }
  - name: Extra
    when: "{{enable_extra}}"
    file: { path: /root/sem-extra, content: "x" }
  - name: Unless present
    unless: "test -f /etc/hostname"
    file: { path: /root/sem-unless, content: "x" }
`,
    });
    const r = await apply(join(dir, 'r.yml'));
    expect(r.code, r.stderr).toBe(0);
    expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([
      ['Read hostname', 'changed'],
      ['Use result', 'changed'],
      ['Result in a command line', 'changed'],
      ['Only on debian', 'changed'],
      ['Only on alpine', 'skipped'],
      ['Extra', 'skipped'],
      ['Unless present', 'skipped'],
    ]);
    expect(await sshOk(sb, sb.hosts[0]!, 'cat /root/sem-result /root/sem-debian /root/sem-cmd')).toBe('host=h1\nchanged=true\nyes\ngot-h1-end\n');
    expect((await sshRun(sb, sb.hosts[0]!, 'ls /root/sem-alpine /root/sem-extra /root/sem-unless')).stdout).toBe('');
    const r2 = await apply(join(dir, 'r.yml'), '--var', 'enable_extra=true');
    expect(stepEvents(r2).find((e) => e.step === 'Extra')!.status).toBe('changed');
  });

  it('retries with backoff until a step succeeds, and reports the attempts when it never does', async () => {
    const sb = sandbox();
    await sshOk(sb, sb.hosts[0]!, 'rm -f /root/attempts');
    const dir = fixture({
      'r.yml': `name: retries
steps:
  - name: Flaky
    retry: { attempts: 3, delay: 200ms, backoff: 2 }
    command: { run: "echo x >> /root/attempts; test $(wc -l < /root/attempts) -ge 3", rollback: "true" }
  - name: Hopeless
    retry: { attempts: 2, delay: 100ms }
    command: { run: "echo nope >&2; exit 9" }
`,
    });
    const t0 = Date.now();
    const r = await apply(join(dir, 'r.yml'));
    expect(r.code).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(600); // 200 ms + 400 ms of backoff, then 100 ms
    expect(await sshOk(sb, sb.hosts[0]!, 'wc -l < /root/attempts')).toBe('3\n');
    const hopeless = stepEvents(r).find((e) => e.step === 'Hopeless')!;
    expect(hopeless.error).toMatch(/exited 9: nope \(after 2 attempts\)/);
  });

  it('a step that runs past its timeout is stopped and fails', async () => {
    const dir = fixture({ 'r.yml': `name: slow\nsteps:\n  - name: Too slow\n    timeout: 1s\n    command: { run: "sleep 30" }\n` });
    const t0 = Date.now();
    const r = await apply(join(dir, 'r.yml'));
    expect(r.code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(stepEvents(r)[0]!.error).toMatch(/timed out/);
    expect((await sshRun(sandbox(), sandbox().hosts[0]!, 'pgrep -x sleep')).code).toBe(1);
  });

  it('handlers run once at the end, only when a notifying step changed', async () => {
    const sb = sandbox();
    await sshOk(sb, sb.hosts[0]!, 'rm -f /root/reloads /root/h-a /root/h-b');
    const dir = fixture({
      'r.yml': `name: handlers
steps:
  - name: A
    file: { path: /root/h-a, content: "a" }
    notify: [Reload]
  - name: B
    file: { path: /root/h-b, content: "b" }
    notify: [Reload]
handlers:
  - name: Reload
    command: { run: "echo reload >> /root/reloads", rollback: "true" }
  - name: Never
    command: { run: "touch /root/never" }
`,
    });
    const r1 = await apply(join(dir, 'r.yml'));
    expect(stepEvents(r1).map((e) => e.step)).toEqual(['A', 'B', 'Reload']);
    const r2 = await apply(join(dir, 'r.yml'));
    expect(stepEvents(r2).map((e) => [e.step, e.status])).toEqual([
      ['A', 'unchanged'],
      ['B', 'unchanged'],
    ]);
    expect(await sshOk(sb, sb.hosts[0]!, 'cat /root/reloads')).toBe('reload\n');
  });

  it('fatal: false records the failure and goes on without rolling back', async () => {
    const sb = sandbox();
    const dir = fixture({
      'r.yml': `name: nonfatal
steps:
  - name: Made
    file: { path: /root/nf-made, content: "x" }
  - name: Optional
    fatal: false
    command: { run: "exit 3" }
  - name: After
    file: { path: /root/nf-after, content: "x" }
`,
    });
    const r = await apply(join(dir, 'r.yml'));
    expect(r.code).toBe(0);
    expect(stepEvents(r).map((e) => e.status)).toEqual(['changed', 'failed', 'changed']);
    expect(r.events.find((e) => e.event === 'host-finished')).toMatchObject({ status: 'ok', failed: 1, rolledBack: 0 });
    expect(await sshOk(sb, sb.hosts[0]!, 'ls /root/nf-made /root/nf-after')).toBe('/root/nf-after\n/root/nf-made\n');
  });

  it('parallel steps run side by side when their needs allow, and roll back in completion order', async () => {
    // Each slow step waits (up to 5 s) for the other to have started: both succeed only if they
    // really run at the same time — a proof by rendezvous, not by timing.
    const meet = (me: string, other: string) =>
      `touch /root/par/${me}-started; i=0; while [ ! -e /root/par/${other}-started ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; test -e /root/par/${other}-started && touch /root/par/${me}`;
    const dir = fixture({
      'r.yml': `name: parallel
defaults: { parallel: 3 }
steps:
  - name: Base
    file: { path: /root/par, state: directory }
  - name: Slow A
    needs: [Base]
    command: { run: "${meet('a', 'b')}", rollback: "rm -f /root/par/a /root/par/a-started" }
  - name: Slow B
    needs: [Base]
    command: { run: "${meet('b', 'a')}", rollback: "rm -f /root/par/b /root/par/b-started" }
  - name: Fast C
    needs: [Base]
    command: { run: "touch /root/par/c", rollback: "rm -f /root/par/c" }
  - name: Last
    needs: [Slow A, Slow B, Fast C]
    command: { run: "ls /root/par/a /root/par/b /root/par/c && exit 1" }
`,
    });
    const r = await apply(join(dir, 'r.yml'));
    expect(r.code).toBe(1);
    const finished = stepEvents(r).map((e) => [e.step, e.status]);
    expect(
      finished
        .filter(([, st]) => st === 'changed')
        .map(([s]) => s)
        .sort(),
    ).toEqual(['Base', 'Fast C', 'Slow A', 'Slow B']);
    expect(finished.at(-1)).toEqual(['Last', 'failed']);
    const order = finished.map(([s]) => s);
    expect(order[0]).toBe('Base');
    const rolled = r.events.filter((e) => e.event === 'rollback-finished').map((e) => e.step);
    expect(rolled).toEqual(order.filter((s) => s !== 'Last').reverse());
    expect((await sshRun(sandbox(), sandbox().hosts[0]!, 'test -e /root/par')).code).toBe(1);
    // With parallel: 1 the same recipe cannot meet: the first slow step gives up waiting and fails.
    const serial = fixture({ 'r.yml': readFileSync(join(dir, 'r.yml'), 'utf8').replace('parallel: 3', 'parallel: 1') });
    const s1 = await apply(join(serial, 'r.yml'));
    expect(stepEvents(s1).find((e) => e.step === 'Slow A')!.status).toBe('failed');
  });

  it('include inserts another recipe with its own vars; precedence is cli > vars file > inventory > default', async () => {
    const sb = sandbox();
    const dir = fixture({
      'main.yml': `name: main
vars:
  color: { default: red }
  size: { default: small }
  shape: { default: circle }
steps:
  - name: Write
    file: { path: /root/inc-main, content: "{{color}} {{size}} {{shape}}\\n" }
  - include: { recipe: part.yml, vars: { label: "from-{{color}}" } }
`,
      'part.yml': `name: part
vars:
  label: { required: true }
steps:
  - name: Get id
    command: { run: "echo id-42", rollback: "true" }
  - name: Label
    file: { path: /root/inc-part, content: "{{label}} {{steps.[Get id].stdout}}\\n" }
`,
      'vars.yml': 'size: large\ncolor: green\n',
    });
    const inv = join(dir, 'inventory.yml');
    const base = (await import('node:fs')).readFileSync(sb.inventoryPath, 'utf8');
    writeFileSync(inv, base.replace(/(h1: \{[^}]*)\}/, '$1, vars: { shape: square, size: medium } }'));
    const r = await hostsmith([
      'apply',
      join(dir, 'main.yml'),
      '--hosts',
      'h1',
      '--yes',
      '--json',
      '-i',
      inv,
      '--known-hosts',
      sb.knownHostsPath,
      '--state-dir',
      state,
      '--vars-file',
      join(dir, 'vars.yml'),
      '--var',
      'color=blue',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(stepEvents(r).map((e) => e.step)).toEqual(['Write', 'part/Get id', 'part/Label']);
    // Inside the included recipe its steps' results go by their own names.
    expect(await sshOk(sb, sb.hosts[0]!, 'cat /root/inc-main /root/inc-part')).toBe('blue large square\nfrom-blue id-42\n');
  });

  it('apply never prompts without a terminal: a missing --yes is an error and nothing is contacted', async () => {
    const dir = fixture({ 'r.yml': `name: noyes\nsteps:\n  - name: T\n    file: { path: /root/noyes, content: "x" }\n` });
    const r = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', 'h1', ...sandboxArgs(sandbox(), state)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/pass --yes/);
    expect((await sshRun(sandbox(), sandbox().hosts[0]!, 'test -e /root/noyes')).code).toBe(1);
  });

  it('a plan goes on past a failing step and reports every problem; apply stops at the first', async () => {
    const sb = sandbox();
    const dir = fixture({
      'r.yml': `name: planprobs
steps:
  - name: Clash one
    file: { path: /etc, content: "x" }
  - name: Fine
    file: { path: /root/pp-fine, content: "b" }
  - name: Clash two
    file: { path: /usr, content: "y" }
`,
    });
    const plan = await hostsmith(['plan', join(dir, 'r.yml'), '--hosts', 'h1', '--json', ...sandboxArgs(sb, state)]);
    expect(plan.code).toBe(1);
    expect(stepEvents(plan).map((e) => [e.step, e.status])).toEqual([
      ['Clash one', 'failed'],
      ['Fine', 'planned'],
      ['Clash two', 'failed'],
    ]);
    expect(stepEvents(plan)[0]!.error).toMatch(/\/etc is a directory, not a regular file/);
    const human = await hostsmith(['plan', join(dir, 'r.yml'), '--hosts', 'h1', ...sandboxArgs(sb, state)]);
    expect(human.stdout).toContain('fix the problems above before applying. Nothing was changed.');
    const apply = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', 'h1', '--yes', '--json', ...sandboxArgs(sb, state)]);
    expect(apply.code).toBe(1);
    expect(stepEvents(apply).map((e) => e.step)).toEqual(['Clash one']);
    expect((await sshRun(sb, sb.hosts[0]!, 'test -e /root/pp-fine')).code).toBe(1);
  });

  it('hostsmith.config.yml in the working directory sets retry and timeout defaults', async () => {
    const sb = sandbox();
    await sshOk(sb, sb.hosts[0]!, 'rm -f /root/cfg-attempts');
    const dir = fixture({
      'hostsmith.config.yml': 'retry: { attempts: 3 }\ntimeout: 1s\n',
      'r.yml': `name: cfg
steps:
  - name: Flaky
    command: { run: "echo x >> /root/cfg-attempts; test $(wc -l < /root/cfg-attempts) -ge 3", rollback: "true" }
  - name: Slow
    command: { run: "sleep 20" }
`,
    });
    const t0 = Date.now();
    const r = await hostsmith(['apply', 'r.yml', '--hosts', 'h1', '--yes', '--json', ...sandboxArgs(sb, state)], { cwd: dir });
    expect(r.code).toBe(1);
    expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([
      ['Flaky', 'changed'],
      ['Slow', 'failed'],
    ]);
    expect(stepEvents(r)[1]!.error).toMatch(/timed out after 1s/);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(await sshOk(sb, sb.hosts[0]!, 'wc -l < /root/cfg-attempts')).toBe('3\n');
  });

  it('a string default is a template: rendered with the vars before it and the facts; a typo there is caught by validate', async () => {
    const sb = sandbox();
    const dir = fixture({
      'r.yml': `name: defaults
vars:
  domain: example.com
  url: "https://{{domain}}/on/{{facts.hostname}}"
steps:
  - name: Write
    file: { path: /root/def-url, content: "{{url}}\\n" }
`,
      'typo.yml': `name: typo\nvars:\n  domain: example.com\n  url: { default: "https://{{domian}}/" }\nsteps:\n  - name: W\n    command: { run: "true" }\n`,
    });
    const r = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', 'h1', '--yes', ...sandboxArgs(sb, state)]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await sshOk(sb, sb.hosts[0]!, 'cat /root/def-url')).toBe('https://example.com/on/h1\n');
    const given = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', 'h1', '--yes', '--var', 'url=literal{{x}}', ...sandboxArgs(sb, state)]);
    expect(given.code).toBe(0);
    expect(await sshOk(sb, sb.hosts[0]!, 'cat /root/def-url')).toBe('literal{{x}}\n');
    const v = await hostsmith(['validate', join(dir, 'typo.yml')]);
    expect(v.code).toBe(2);
    expect(v.stderr).toMatch(/typo\.yml:4:\d+: vars\.url\.default: unknown variable "domian"/);
  });
});
