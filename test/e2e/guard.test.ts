/**
 * Guarded changes on a real host (issue 10, SPEC §8.3). A step is read once, in the batch made at
 * an earlier step's turn; the exec that changes it first reads it again and compares. Here a
 * person changes each guarded kind of state just before the step's turn (after the batch read
 * it): the step fails with "its state moved", nothing is written for it, and the run rolls the
 * earlier step back. The host is set up and read with plain OpenSSH.
 */
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';

const RECIPE = `name: guarded
steps:
  - name: Marker
    file: { path: /etc/guard-marker, content: "m\\n" }
  - name: Group
    group: { name: guardgrp, gid: 1700 }
  - name: User
    user: { name: guardusr, shell: /bin/sh }
  - name: Cron
    cron: { name: guard-job, schedule: "0 4 * * *", command: "true" }
  - name: Line
    line: { path: /etc/guard.conf, line: "a=1", match: "^a=", create: true }
  - name: Command
    command: { run: "echo ran >> /etc/guard-ran; touch /etc/guard-made", creates: /etc/guard-made, rollback: "rm -f /etc/guard-made /etc/guard-ran" }
`;

/** Per step: what a person does just before its turn, and what must still be there after the run. */
const MOVES: Array<[string, string, string, string]> = [
  ['Group', 'groupadd -g 1701 guardgrp', 'getent group guardgrp | cut -d: -f3', '1701\n'],
  ['User', 'useradd -s /bin/bash guardusr', 'getent passwd guardusr | cut -d: -f7', '/bin/bash\n'],
  ['Cron', 'echo "# by hand" | crontab -', 'crontab -l', '# by hand\n'],
  ['Line', 'echo "a=by-hand" > /etc/guard.conf', 'cat /etc/guard.conf', 'a=by-hand\n'],
  // The command's `creates` made by hand: the command does not run.
  ['Command', 'echo by-hand > /etc/guard-made', 'cat /etc/guard-made; cat /etc/guard-ran 2>/dev/null || echo never-ran', 'by-hand\nnever-ran\n'],
];

describeHosts('guarded changes: a step whose state moves after its batched read writes nothing', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(async () => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    await sandbox().restart(sandbox().hosts[0]!, { wipe: true });
  });

  it.each(MOVES)('%s: changed by hand before its turn → failed, nothing written, the run rolled back', async (step, byHand, read, left) => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const file = join(fixture({ 'r.yml': RECIPE }), 'r.yml');
    const fault = JSON.stringify({ step, run: `ssh -F ${sb.sshConfigPath} ${h.name} '${byHand}'` });
    const r = await hostsmith(['apply', file, '--hosts', h.name, '--yes', '--json', ...sandboxArgs(sb, state)], { env: { HOSTSMITH_FAULT_BEFORE_STEP: fault } });
    expect(r.code, r.stderr + r.stdout).toBe(1);
    const steps = stepEvents(r);
    const failed = steps.find((e) => e.step === step)!;
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatch(/^not applied: its state moved since the plan was made \(.*after it was read\); nothing was written for this step/);
    // What the person did is there as they left it; the earlier changes were rolled back.
    expect(await sshOk(sb, h, read)).toBe(left);
    expect((await sshRun(sb, h, 'test -e /etc/guard-marker')).code).toBe(1);
    expect(r.events.find((e) => e.event === 'host-finished')!.status).toBe('rolled-back');
  });

  it('unmoved, every guarded step applies; a second run changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const file = join(fixture({ 'r.yml': RECIPE }), 'r.yml');
    const r1 = await hostsmith(['apply', file, '--hosts', h.name, '--yes', '--json', ...sandboxArgs(sb, state)]);
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1).map((e) => `${e.step}:${e.status}`)).toEqual(['Marker:changed', 'Group:changed', 'User:changed', 'Cron:changed', 'Line:changed', 'Command:changed']);
    expect(await sshOk(sb, h, 'getent group guardgrp | cut -d: -f3; getent passwd guardusr | cut -d: -f7; crontab -l | grep -c guard-job; cat /etc/guard.conf /etc/guard-ran')).toBe(
      '1700\n/bin/sh\n1\na=1\nran\n',
    );
    const r2 = await hostsmith(['apply', file, '--hosts', h.name, '--yes', '--json', ...sandboxArgs(sb, state)]);
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).every((e) => e.status === 'unchanged')).toBe(true);
  });
});
