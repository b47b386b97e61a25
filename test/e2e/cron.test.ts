/**
 * The cron step over real SSH. Crontabs are read back with plain `ssh … crontab -l`, never
 * through hostsmith.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { fixture, hostsmith, journalText, sandboxArgs, stepEvents } from './cli.js';

/** Unmanaged lines a user wrote by hand: comments, env, a trailing space, a blank line, an escaped %. */
const HAND = 'MAILTO=""\n# m h dom mon dow command \n*/10 * * * * date +\\%F >> /tmp/dates\n\n@weekly /usr/bin/weekly\n';
const entry = (name: string, line: string) => `# hostsmith: ${name}\n${line}\n`;

/** Both crontabs as `crontab -l` shows them, with exit codes, so "none" is distinguished from empty. */
const CRONTABS = 'for u in root deploy; do echo "== $u"; crontab -l -u $u 2>&1; echo "rc=$?"; done; ls -l /var/spool/cron/crontabs | tail -n +2 | awk \'{print $1, $3, $4, $NF}\'';

async function install(sb: Sandbox, h: SandboxHost, user: string, text: string | null): Promise<void> {
  if (text === null) await sshOk(sb, h, `crontab -r -u ${user} 2>/dev/null || true`);
  else await sshOk(sb, h, `crontab -u ${user} -`, { input: text });
}

describeHosts('cron step over SSH', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];

  it('validate reports a bad schedule at its line and path, contacting nothing', async () => {
    const dir = fixture({
      'r.yml': `name: bad-cron\nsteps:\n  - name: Nightly\n    cron: { name: n, schedule: "0 25 * * *", command: "true" }\n  - name: Weekly\n    cron: { name: w, schedule: "@fortnightly", command: "true" }\n`,
    });
    const r = await hostsmith(['validate', join(dir, 'r.yml')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/r\.yml:4:\d+: steps\[0\]\.cron\.schedule: invalid cron schedule "0 25 \* \* \*"/);
    expect(r.stderr).toMatch(/r\.yml:6:\d+: steps\[1\]\.cron\.schedule: unknown schedule "@fortnightly"/);
  });

  it('adds entries for root and deploy, keeps hand-written lines byte for byte; a second apply changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await install(sb, h, 'root', HAND);
    await install(sb, h, 'deploy', null);
    const dir = fixture({
      'r.yml': `name: cron-add
steps:
  - name: Nightly upgrade
    cron: { name: nightly-upgrade, schedule: "0 3 * * *", command: "apt-get -qq update && apt-get -qq -y upgrade" }
  - name: Deploy poll
    cron: { name: poll, schedule: "*/5 * * * 1-5", command: "/home/deploy/bin/poll", user: deploy }
`,
    });
    const r1 = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    const [nightly, poll] = stepEvents(r1);
    expect(nightly).toMatchObject({ status: 'changed', type: 'cron' });
    expect(nightly!.summary).toMatch(/^add "nightly-upgrade" to root's crontab: 0 3 \* \* \* \(At 03:00 AM; next \d{4}-\d\d-\d\d 03:00, \d{4}-\d\d-\d\d 03:00, \d{4}-\d\d-\d\d 03:00 UTC\)$/);
    expect(nightly!.diff).toContain('+++ b/crontab(root)');
    expect(poll!.summary).toMatch(/^add "poll" to deploy's crontab: \*\/5 \* \* \* 1-5 \(Every 5 minutes, Monday through Friday; next /);

    expect(await sshOk(sb, h, 'crontab -l -u root')).toBe(HAND + entry('nightly-upgrade', '0 3 * * * apt-get -qq update && apt-get -qq -y upgrade'));
    expect(await sshOk(sb, h, 'crontab -l -u deploy')).toBe(entry('poll', '*/5 * * * 1-5 /home/deploy/bin/poll'));
    expect(await sshOk(sb, h, 'stat -c "%U %a" /var/spool/cron/crontabs/deploy')).toBe('deploy 600\n');

    const r2 = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => [e.step, e.status])).toEqual([
      ['Nightly upgrade', 'unchanged'],
      ['Deploy poll', 'unchanged'],
    ]);
  });

  it('updates an entry in place; state: absent removes only its entry, and an emptied crontab', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const root = `${HAND}${entry('nightly-upgrade', '0 2 * * * /usr/local/bin/old')}# between\n${entry('gone', '* * * * * /bin/gone')}# tail\n`;
    await install(sb, h, 'root', root);
    await install(sb, h, 'deploy', entry('poll', '*/5 * * * * /bin/true'));
    const dir = fixture({
      'r.yml': `name: cron-update
steps:
  - name: Nightly upgrade
    cron: { name: nightly-upgrade, schedule: "@daily", command: /usr/local/bin/new }
  - name: Drop gone
    cron: { name: gone, state: absent }
  - name: Drop poll
    cron: { name: poll, user: deploy, state: absent }
`,
    });
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const [update, gone, poll] = stepEvents(r);
    expect(update!.summary).toMatch(/^update "nightly-upgrade" in root's crontab: @daily \(At 12:00 AM; next /);
    expect(update!.diff).toContain('-0 2 * * * /usr/local/bin/old\n+@daily /usr/local/bin/new');
    expect(gone!.summary).toBe(`remove "gone" from root's crontab`);
    expect(poll!.summary).toBe(`remove "poll" from deploy's crontab (and the crontab, left empty)`);
    expect(await sshOk(sb, h, 'crontab -l -u root')).toBe(`${HAND}${entry('nightly-upgrade', '@daily /usr/local/bin/new')}# between\n# tail\n`);
    const deploy = await sshRun(sb, h, 'crontab -l -u deploy');
    expect([deploy.code, deploy.stderr]).toEqual([1, 'no crontab for deploy\n']);
  });

  it('a failure later in the run puts every crontab back exactly, removing one that did not exist', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await install(sb, h, 'root', `${HAND}${entry('nightly-upgrade', '0 2 * * * /usr/local/bin/old')}${entry('gone', '* * * * * /bin/gone')}`);
    await install(sb, h, 'deploy', null);
    const dir = fixture({
      'r.yml': `name: cron-fail
steps:
  - name: Nightly upgrade
    cron: { name: nightly-upgrade, schedule: "0 3 * * *", command: /usr/local/bin/new }
  - name: Hourly
    cron: { name: hourly, schedule: "@hourly", command: /bin/hourly }
  - name: Drop gone
    cron: { name: gone, state: absent }
  - name: Deploy poll
    cron: { name: poll, schedule: "*/5 * * * *", command: /bin/true, user: deploy }
  - name: Breaks
    command: { run: "echo 'disk on fire' >&2; exit 3" }
`,
    });
    const before = await sshOk(sb, h, CRONTABS);
    expect(before).toContain('rc=1'); // deploy had no crontab
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r).map((e) => e.status)).toEqual(['changed', 'changed', 'changed', 'changed', 'failed']);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => [e.step, e.status])).toEqual([
      ['Deploy poll', 'rolled-back'],
      ['Drop gone', 'rolled-back'],
      ['Hourly', 'rolled-back'],
      ['Nightly upgrade', 'rolled-back'],
    ]);
    expect(await sshOk(sb, h, CRONTABS)).toBe(before);
    // The previous crontab is kept on the host, root-only, and never copied into the journal.
    const runId = r.events[0]!.runId;
    expect(await sshOk(sb, h, `stat -c %a /var/lib/hostsmith/backups/${runId}/Nightly_upgrade-a518f5e7/crontabs/root`)).toBe('600\n');
    expect(journalText(state)).not.toContain('/usr/local/bin/old');
  });

  it("a login user manages its own crontab without sudo; root's needs sudo and says so", async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await install(sb, h, 'deploy', null);
    const target = ['--hosts', `deploy@${h.address}:${h.port}`, '--identity', sb.keyPath, '--known-hosts', sb.knownHostsPath, '--state-dir', state, '--yes', '--json'];
    const own = fixture({ 'r.yml': `name: own\nsteps:\n  - name: Poll\n    cron: { name: poll, schedule: "*/5 * * * *", command: /bin/true, user: deploy }\n` });
    const r1 = await hostsmith(['apply', join(own, 'r.yml'), ...target]);
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(await sshOk(sb, h, 'crontab -l -u deploy')).toBe(entry('poll', '*/5 * * * * /bin/true'));

    const rootBefore = await sshRun(sb, h, 'crontab -l -u root');
    const other = fixture({ 'r.yml': `name: other\nsteps:\n  - name: Nightly\n    cron: { name: n, schedule: "0 3 * * *", command: /bin/true }\n` });
    const r2 = await hostsmith(['apply', join(other, 'r.yml'), ...target]);
    expect(r2.code).toBe(1);
    expect(stepEvents(r2)[0]!.error).toMatch(/cannot read root's crontab: must be privileged to use -u \(.*set sudo: true .* --sudo\)/);
    expect(await sshRun(sb, h, 'crontab -l -u root')).toEqual(rootBefore);
  });

  it('a cron job for a user an earlier step creates can be planned and applied', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({
      'r.yml': `name: svc-cron
steps:
  - name: Service user
    user: { name: svcjob, system: true }
  - name: Its job
    cron: { name: job, schedule: "@daily", command: "true", user: svcjob }
`,
    });
    const plan = await hostsmith(args('plan', join(dir, 'r.yml'), '--hosts', h.name, '--json'));
    expect(plan.code, plan.stdout + plan.stderr).toBe(0);
    expect(stepEvents(plan).map((e) => e.status)).toEqual(['planned', 'planned']);
    expect(stepEvents(plan)[1]!.summary).toMatch(/user svcjob does not exist yet/);
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes'));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await sshOk(sb, h, 'crontab -l -u svcjob')).toBe('# hostsmith: job\n@daily true\n');
    // Without a step that creates the user, apply says so.
    const none = fixture({ 'r.yml': `name: no-user\nsteps:\n  - name: Orphan job\n    cron: { name: job, schedule: "@daily", command: "true", user: ghost }\n` });
    const bad = await hostsmith(args('apply', join(none, 'r.yml'), '--hosts', h.name, '--yes'));
    expect(bad.code).toBe(1);
    expect(bad.stdout + bad.stderr).toContain('user ghost does not exist on h1: create it first');
  });
});
