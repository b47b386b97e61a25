/**
 * Recipes whose steps overlap — a later step works on what an earlier one made (a user in a group
 * the recipe adds; a line in a file in a folder the recipe makes; two cron entries in one crontab;
 * a config file of a package the recipe installs) — on a fresh real host each:
 *   (i)   `plan --out`, then `apply --plan` applies exactly that, every step changed;
 *   (ii)  a second apply changes nothing, and a new plan plans nothing;
 *   (iii) `undo` of the first run leaves zero residue (the host's overlay, read from this machine,
 *         is as in a snapshot taken before the run), and a second undo has nothing left to do;
 *   (iv)  with a failing last step, the rollback leaves zero residue too.
 * Host state is also read with plain OpenSSH where it matters.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { residue, snapshotHost } from '../hosts/residue.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents, type CliResult } from './cli.js';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';

interface Case {
  name: string;
  steps: string;
  /** Checks with plain ssh that the applied recipe did what it says. */
  applied(sb: Sandbox, h: SandboxHost): Promise<void>;
}

const CASES: Case[] = [
  {
    name: 'a group, then a user in it',
    steps: `  - name: Group
    group: { name: ovgrp }
  - name: User
    user: { name: ovuser, groups: [ovgrp], shell: /bin/sh }
`,
    async applied(sb, h) {
      expect(await sshOk(sb, h, 'id -nG ovuser; getent passwd ovuser | cut -d: -f7; getent group ovgrp | cut -d: -f4')).toBe('ovuser ovgrp\n/bin/sh\novuser\n');
    },
  },
  {
    // The file step owns the file's mode, not its content (a step owning both would fight the
    // line steps on every run): the lines are the content.
    name: 'a folder, a file in it, and lines in that file',
    steps: `  - name: Folder
    file: { path: /srv/ov, state: directory }
  - name: File
    file: { path: /srv/ov/app.conf, mode: "0640" }
  - name: Line a
    line: { path: /srv/ov/app.conf, line: "a=1" }
  - name: Line b
    line: { path: /srv/ov/app.conf, line: "b=2" }
`,
    async applied(sb, h) {
      expect(await sshOk(sb, h, 'stat -c "%F" /srv/ov; stat -c "%a" /srv/ov/app.conf; cat /srv/ov/app.conf')).toBe('directory\n640\na=1\nb=2\n');
    },
  },
  {
    name: "two cron entries of one user's crontab",
    steps: `  - name: Cron one
    cron: { name: ov-one, user: root, schedule: "0 3 * * *", command: "echo one > /dev/null" }
  - name: Cron two
    cron: { name: ov-two, user: root, schedule: "30 4 * * *", command: "echo two > /dev/null" }
`,
    async applied(sb, h) {
      const tab = await sshOk(sb, h, 'crontab -l -u root');
      expect(tab).toContain('# hostsmith: ov-one\n0 3 * * * echo one > /dev/null\n');
      expect(tab).toContain('# hostsmith: ov-two\n30 4 * * * echo two > /dev/null\n');
    },
  },
  {
    name: 'a package, then files under /etc that it created',
    steps: `  - name: Nginx
    package: { install: [nginx-light] }
  - name: Workers
    line: { path: /etc/nginx/nginx.conf, match: "^\\\\s*worker_processes", line: "worker_processes 2;" }
  - name: No default site
    file: { path: /etc/nginx/sites-enabled/default, state: absent }
`,
    async applied(sb, h) {
      expect(await sshOk(sb, h, "dpkg-query -W -f '${Status}\\n' nginx-light")).toBe('install ok installed\n');
      expect(await sshOk(sb, h, "grep -E '^\\s*worker_processes' /etc/nginx/nginx.conf")).toBe('worker_processes 2;\n');
      expect((await sshRun(sb, h, 'test -e /etc/nginx/sites-enabled/default || test -L /etc/nginx/sites-enabled/default')).code).toBe(1);
    },
  },
];

const BOOM = `  - name: Boom
    command: { run: "false" }
`;

const recipe = (c: Case, extra = '') => `name: overlap
steps:
${c.steps}${extra}`;

/** The step names of a recipe's steps text, in order. */
const stepNames = (steps: string) => [...steps.matchAll(/^ {2}- name: (.+)$/gm)].map((m) => m[1]);

const statuses = (r: CliResult) => stepEvents(r).map((e) => [e.step, e.status]);
const show = (r: CliResult) => `exit ${r.code}\n${r.stderr}\n${r.stdout.slice(-4000)}`;

describeHosts('overlapping steps: plan, apply, re-apply, undo and rollback leave no residue', () => {
  const sandbox = useSandbox(1);
  let state: string;
  const host = () => sandbox().hosts[0]!;
  const args = (...a: string[]) => [...a, '--hosts', host().name, ...sandboxArgs(sandbox(), state)];
  const undo = (...a: string[]) => ['undo', ...a, '--state-dir', state];

  beforeEach(async () => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    await sandbox().restart(host(), { wipe: true });
  });

  for (const c of CASES) {
    it(`${c.name}: plan → apply --plan → no-op apply and plan → undo (zero residue) → undo again`, async () => {
      const sb = sandbox();
      const h = host();
      const dir = fixture({ 'r.yml': recipe(c) });
      const file = join(dir, 'r.yml');
      const planFile = join(dir, 'p.json');
      const names = stepNames(c.steps);
      const before = await snapshotHost(sb, h);

      // (i) plan, then apply exactly that plan: every step changes something on a fresh host.
      const plan = await hostsmith(args('plan', file, '--out', planFile, '--json'));
      expect(plan.code, show(plan)).toBe(0);
      // Soft: a wrong plan is reported, and what apply --plan then does is still seen.
      expect.soft(statuses(plan), show(plan)).toEqual(names.map((n) => [n, 'planned']));
      const first = await hostsmith(args('apply', '--plan', planFile, '--json'));
      expect(first.code, show(first)).toBe(0);
      expect(statuses(first), show(first)).toEqual(names.map((n) => [n, 'changed']));
      expect(first.events.find((e) => e.event === 'run-finished')).toMatchObject({ status: 'ok', exitCode: 0 });
      const runId = first.events.find((e) => e.event === 'run-started')?.runId as string;
      expect(runId).toEqual(expect.any(String));
      await c.applied(sb, h);

      // (ii) applied again, nothing changes; planned again, nothing is planned. Soft: the undo below
      // is checked even when these fail.
      const again = await hostsmith(args('apply', file, '--yes', '--json'));
      expect.soft(again.code, show(again)).toBe(0);
      expect
        .soft(
          stepEvents(again).filter((e) => e.status !== 'unchanged' && e.status !== 'skipped'),
          show(again),
        )
        .toEqual([]);
      expect.soft(stepEvents(again), show(again)).toHaveLength(names.length);
      const replan = await hostsmith(args('plan', file, '--json'));
      expect.soft(replan.code, show(replan)).toBe(0);
      expect
        .soft(
          stepEvents(replan).filter((e) => e.status === 'planned'),
          show(replan),
        )
        .toEqual([]);
      await c.applied(sb, h);

      // (iii) undo of the first run: the host is as before it, to the byte; a second undo has nothing to do.
      const undone = await hostsmith(undo(runId, '--yes'));
      expect(undone.code, show(undone)).toBe(0);
      expect(await residue(sb, h, before)).toEqual([]);
      const twice = await hostsmith(undo(runId, '--yes'));
      expect(twice.code, show(twice)).toBe(0);
      expect(await residue(sb, h, before)).toEqual([]);
    });

    it(`${c.name}, then a failing step: rolled back, zero residue`, async () => {
      const sb = sandbox();
      const h = host();
      const dir = fixture({ 'r.yml': recipe(c, BOOM) });
      const names = stepNames(c.steps);
      const before = await snapshotHost(sb, h);

      const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--yes', '--json'));
      expect(r.code, show(r)).toBe(1);
      expect(statuses(r), show(r)).toEqual([...names.map((n) => [n, 'changed']), ['Boom', 'failed']]);
      const rollbacks = r.events.filter((e) => e.event === 'rollback-finished').map((e) => [e.step, e.status]);
      expect(rollbacks, show(r)).toEqual([...names].reverse().map((n) => [n, 'rolled-back']));
      expect(r.events.find((e) => e.event === 'run-finished')).toMatchObject({ status: 'rolled-back', exitCode: 1 });
      expect(await residue(sb, h, before)).toEqual([]);
    });
  }
});
