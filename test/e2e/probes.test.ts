/**
 * Batched probes on a real host (issue 10, item 1): every step's reads go to the host in one exec.
 * - The batched path and the one-step-at-a-time path (HOSTSMITH_NO_BATCH=1) reach the same plan
 *   on the same host, step for step (status, summary, diff), with host files that try to break
 *   the framing: binary bytes, lines shaped like frames, no final newline.
 * - A no-op plan or apply costs the host 1 exec channel once an apply has seen it: the facts the
 *   last apply kept on the controller plan the batch, and the facts go with it, read in the same
 *   exec; an apply asks there too whether a run lock is held and takes its own only before its
 *   first change. Facts that moved since, or a lock held, plan the host again from what it says.
 *   Counted by the transport (HOSTSMITH_COUNT_EXECS=1).
 * - A change's read-back answers the next step's read of the same file or crontab (no exec of
 *   its own), and never once anything else changed the host: a command that edits the file
 *   between two line steps is seen by the second. Later steps' reads are batched when a step
 *   needs a read, not after every change.
 * The host's state is set up and read with plain OpenSSH.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, expect, it } from 'vitest';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents, type CliResult } from './cli.js';

const RECIPE = `name: probes
steps:
  - name: Group
    group: { name: probegrp }
  - name: User
    user: { name: probeusr, shell: /bin/sh, groups: [probegrp] }
  - name: Hostile file
    file: { path: /srv/probe/hostile, content: "tamed\\n", mode: "0640" }
  - name: Binary file
    file: { path: /srv/probe/binary, content: "text now\\n" }
  - name: Template
    template: { src: t.hbs, dest: /srv/probe/app.conf }
  - name: Line
    line: { path: /srv/probe/odd.conf, line: "workers=8", match: "^workers=" }
  - name: Cron
    cron: { name: probe-job, schedule: "0 4 * * *", command: "true" }
  - name: Service
    service: { name: cron, enabled: false }
  - name: Package
    package: { install: [hello] }
  - name: Command
    command: { run: "touch /srv/probe/done", creates: /srv/probe/done }
`;

/** Host files that try to break a line-framed batch: binary, frame-shaped lines, no final newline. */
const HOSTILE = [
  'mkdir -p /srv/probe',
  "printf 'deadbeefdeadbeef 0 0 aGk= aGk=\\nno newline at the end' > /srv/probe/hostile",
  "printf '\\000\\377\\376binary\\ndeadbeefdeadbeef 2 0 x y' > /srv/probe/binary",
  "printf 'workers=2\\ndeadbeefdeadbeef 4 0 x y\\n\\001\\002' > /srv/probe/odd.conf",
  'printf \'# hand-written\\n*/5 * * * * echo "deadbeefdeadbeef 1 0 x y"\\n\' | crontab -',
].join('\n');

/** Lines and cron entries back to back, and a command that edits the lines' file between them. */
const SEEDED = `name: seeded
steps:
  - name: L1
    line: { path: /srv/seed/app.env, line: "A=1", create: true }
  - name: L2
    line: { path: /srv/seed/app.env, line: "B=2" }
  - name: L3
    line: { path: /srv/seed/app.env, line: "C=3" }
  - name: C1
    cron: { name: seed-1, schedule: "1 * * * *", command: "true" }
  - name: C2
    cron: { name: seed-2, schedule: "2 * * * *", command: "true" }
  - name: Edit
    command: { run: "echo B=9 >> /srv/seed/app.env && touch /srv/seed/edited", creates: /srv/seed/edited }
  - name: L4
    line: { path: /srv/seed/app.env, line: "B=2", match: "^B=" }
  - name: U1
    unless: "test -e /srv/seed/u1"
    command: { run: "touch /srv/seed/u1" }
  - name: U2
    unless: "test -e /srv/seed/u2"
    command: { run: "touch /srv/seed/u2" }
`;

const all = (r: CliResult) => r.stdout + r.stderr;
const execs = (r: CliResult) => Number(/h1: (\d+) exec channel\(s\)/.exec(r.stderr)?.[1] ?? NaN);

describeHosts('batched probes: one exec for every read, the same plan as one step at a time', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  const run = (args: string[], env: Record<string, string> = {}) =>
    hostsmith([...args, join(dir, 'probes.yml'), ...sandboxArgs(sandbox(), state), '--hosts', 'h1', '--json'], { env: { HOSTSMITH_COUNT_EXECS: '1', ...env } });
  const planOf = (r: CliResult) => stepEvents(r).map((e) => ({ step: e.step, status: e.status, summary: e.summary, diff: e.diff ?? null }));

  beforeAll(async () => {
    dir = fixture({ 'probes.yml': RECIPE, 'seeded.yml': SEEDED, 'templates/t.hbs': 'name={{facts.hostname}}\n' });
    state = join(dir, 'state');
    await sshOk(sandbox(), sandbox().hosts[0]!, HOSTILE);
  });

  it('plans the same batched as one step at a time, hostile host files included', async () => {
    const batched = await run(['plan']);
    const single = await run(['plan'], { HOSTSMITH_NO_BATCH: '1' });
    expect(batched.code, all(batched)).toBe(0);
    expect(single.code, all(single)).toBe(0);
    expect(planOf(batched)).toEqual(planOf(single));
    expect(planOf(batched).map((s) => s.status)).toEqual(Array(10).fill('planned'));
    // The diff of the hostile file shows what is on the host, byte for byte as one read shows it.
    expect(planOf(batched)[2]!.diff).toContain('-deadbeefdeadbeef 0 0 aGk= aGk=');
    expect(planOf(batched)[3]!.diff).toMatch(/Binary files/);
    // Facts, then the batch; a file that differs is read once more for its diff (a second round, batched too).
    expect(execs(batched)).toBe(3);
    expect(execs(single)).toBeGreaterThan(10);
  }, 120_000);

  it('applies batched; then a no-op plan and a no-op apply are 1 exec channel each, with the same plan as one at a time', async () => {
    const first = await run(['apply', '--yes']);
    expect(first.code, all(first)).toBe(0);
    expect(await sshOk(sandbox(), sandbox().hosts[0]!, 'cat /srv/probe/hostile; grep -c workers=8 /srv/probe/odd.conf; crontab -l | grep -c probe-job; id -nG probeusr')).toBe(
      'tamed\n1\n1\nprobeusr probegrp\n',
    );
    const plan = await run(['plan']);
    // The facts the apply kept, read again with the batch, in the one exec.
    expect(execs(plan), all(plan)).toBe(1);
    expect(planOf(plan).map((s) => s.status)).toEqual(Array(10).fill('unchanged'));
    expect(planOf(plan)).toEqual(planOf(await run(['plan'], { HOSTSMITH_NO_BATCH: '1' })));
    const again = await run(['apply', '--yes']);
    expect(again.code, all(again)).toBe(0);
    expect(execs(again), all(again)).toBe(1);
    // Nothing changed, so the host was never locked: no host-started entry of that run names a lock; the first run's does.
    const locks = (r: CliResult) =>
      readFileSync(join(state, 'runs', `${r.events.find((e) => e.event === 'run-started')!.runId}.ndjson`), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { kind: string; lock?: string })
        .filter((e) => e.kind === 'host-started' && e.lock);
    expect(locks(again)).toEqual([]);
    expect(locks(first)).toHaveLength(1);
    expect(stepEvents(again).every((e) => e.status === 'unchanged')).toBe(true);
  }, 180_000);

  it("kept facts that are not the host's any more, or a lock held there, plan the host again from what it says", async () => {
    const factsDir = join(state, 'facts');
    const [kept] = readdirSync(factsDir);
    const file = join(factsDir, kept!);
    const real = readFileSync(file, 'utf8');
    expect(JSON.parse(real)).toMatchObject({ hostname: 'h1', user: 'root', pkg: 'apt' });
    // Another host now answers at this address, as far as the kept facts know.
    writeFileSync(file, real.replace('"hostname":"h1"', '"hostname":"elsewhere"'));
    const moved = await run(['plan']);
    expect(moved.code, all(moved)).toBe(0);
    // The batch with the facts, the facts again on their own, the batch planned from them.
    expect(execs(moved), all(moved)).toBe(3);
    // The template renders facts.hostname: planned from the kept "elsewhere", it would change.
    expect(planOf(moved).map((s) => s.status)).toEqual(Array(10).fill('unchanged'));
    // A plan writes nothing, here either; an apply keeps what it read.
    expect(readFileSync(file, 'utf8')).toContain('"hostname":"elsewhere"');
    const applied = await run(['apply', '--yes']);
    expect(applied.code, all(applied)).toBe(0);
    expect(execs(applied), all(applied)).toBe(3);
    expect(stepEvents(applied).every((e) => e.status === 'unchanged')).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe(real);
    // A lock held by another run, seen in the first exec: the run takes its own at once and is refused, as without kept facts.
    await sshOk(sandbox(), sandbox().hosts[0]!, 'mkdir -p /run/hostsmith/lock && echo "run=other-run controller=elsewhere pid=1 since=now" > /run/hostsmith/lock/owner');
    try {
      const locked = await run(['apply', '--yes']);
      expect(locked.code, all(locked)).not.toBe(0);
      expect(all(locked)).toMatch(/host is locked by another hostsmith run \(run=other-run controller=elsewhere/);
      expect(stepEvents(locked)).toEqual([]);
    } finally {
      await sshOk(sandbox(), sandbox().hosts[0]!, 'rm -rf /run/hostsmith/lock');
    }
  }, 120_000);

  it('a change read back answers the next read of that file or crontab, and a command that edits the file meanwhile is seen', async () => {
    const r = await hostsmith(['apply', join(dir, 'seeded.yml'), ...sandboxArgs(sandbox(), join(dir, 'state-seeded')), '--hosts', 'h1', '--json', '--yes'], {
      env: { HOSTSMITH_COUNT_EXECS: '1' },
    });
    expect(r.code, all(r)).toBe(0);
    // facts, the batch, the lock, L1, L2, L3, C1 (L2, L3 and C2 plan from the read-back before them),
    // a batch for Edit and L4 (L1's change dropped L4's read, Edit reads anything), C2, Edit, L4's
    // own read (Edit may have changed anything), L4, then U1's and U2's unless and run (a command
    // reads anything, so each is read at its turn), and the lock let go: 17. Reading L2, L3 and C2
    // on their own would add 2 or more; so would batching U1's and U2's reads again after each
    // change while the step at hand needs no read (it has its read-back).
    expect(execs(r), all(r)).toBe(17);
    // L4 saw the line Edit appended (a stale read-back would have found B=2 there and left B=9).
    expect(await sshOk(sandbox(), sandbox().hosts[0]!, 'cat /srv/seed/app.env; crontab -l | grep -c "^[12] \\* \\* \\* \\* true$"')).toBe('A=1\nB=2\nC=3\nB=2\n2\n');
    expect(stepEvents(r).map((e) => e.status)).toEqual(Array(9).fill('changed'));
  }, 120_000);
  it('ten more files and folders cost a no-op no more processes on the host: their reads share one look', async () => {
    // Processes the host started meanwhile, from its own PID counter (the host has a PID
    // namespace of its own), read with plain ssh before and after.
    const pid = async () => Number(await sshOk(sandbox(), sandbox().hosts[0]!, 'echo $$'));
    const recipe = (n: number) =>
      `name: wide\nsteps:\n${Array.from({ length: n }, (_, i) => `  - name: F${i}\n    file: { path: /srv/wide${n}/d${i}/f${i}.conf, content: "file ${i}\\n", mode: "0640" }\n  - name: D${i}\n    file: { path: /srv/wide${n}/e${i}, state: directory }`).join('\n')}\n`;
    const noop = async (n: number): Promise<number> => {
      const file = join(dir, `wide${n}.yml`);
      writeFileSync(file, recipe(n));
      const args = ['apply', file, ...sandboxArgs(sandbox(), join(dir, `state-wide${n}`)), '--hosts', 'h1', '--json', '--yes'];
      const first = await hostsmith(args);
      expect(first.code, all(first)).toBe(0);
      const before = await pid();
      const again = await hostsmith(args);
      const after = await pid();
      expect(again.code, all(again)).toBe(0);
      expect(stepEvents(again).every((e) => e.status === 'unchanged')).toBe(true);
      return after - before;
    };
    const two = await noop(2);
    const twelve = await noop(12);
    // Read one by one, each file is a sh, a stat and a cat, and each folder a sh and a stat: about
    // 50 more processes for the 20 more paths. Read together, the same three processes.
    expect(twelve - two, `no-op of 4 paths: ${two} processes; of 24 paths: ${twelve}`).toBeLessThanOrEqual(4);
  }, 180_000);
});
