/**
 * Lockout protection (`--confirm`, SPEC §12) on a real host, checked with plain OpenSSH:
 * - a run whose last change makes sshd refuse the controller's login (DenyUsers root, reloaded by
 *   a handler) cannot confirm over a new connection: it is rolled back over the run's own
 *   connection at once, sshd_config byte for byte as before, ssh works again, exit 1;
 * - the same with the run's own link cut after arming (fault hook): the watchdog on the host rolls
 *   back by itself when its time is up, and the controller connects again and reports it;
 * - the recipe without the bad line confirms, and leaves no watchdog process or file;
 * - a failing `verify:` command rolls the host back although SSH works;
 * - the controller SIGKILLed right after arming: the watchdog alone puts back every step type (the
 *   host equals its snapshot from before the run, the handler run once more), and `recover` then
 *   settles the run without rolling anything back twice.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { sshExec } from '../hosts/ssh.js';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, journalText, sandboxArgs } from './cli.js';

const LOCKOUT = `name: lockout
vars:
  deny: { default: "" }
  check: { default: "test -f /etc/lockout-motd" }
steps:
  - name: Motd
    file: { path: /etc/lockout-motd, content: "hello\\n" }
  - name: Banner
    line: { path: /etc/ssh/sshd_config, line: "Banner none" }
    notify: [Reload sshd]
  - name: Deny
    line: { path: /etc/ssh/sshd_config, line: "DenyUsers {{deny}}", match: "^DenyUsers " }
    when: "{{deny}}"
    notify: [Reload sshd]
handlers:
  - name: Reload sshd
    command: { run: "kill -HUP $(cat /run/sshd.pid)", rollback: "kill -HUP $(cat /run/sshd.pid)" }
verify:
  - "{{check}}"
`;

const TOKEN = 'tok-Watch-4471';

/** Every step type, as the undo test has them. */
const EVERY_TYPE = `name: watched
vars:
  token: { required: true, secret: true }
steps:
  - name: Group
    group: { name: wdgroup }
  - name: User
    user: { name: wduser, shell: /bin/sh, groups: [wdgroup] }
  - name: Cron
    cron: { name: wd-job, schedule: "0 4 * * *", command: "true" }
  - name: File
    file: { path: /srv/wd/motd, content: "hello\\n", mode: "0640" }
  - name: Template
    template: { src: t.hbs, dest: /etc/wd-tmpl.conf }
    notify: [Record]
  - name: Package
    package: { install: [hello], update_cache: true }
  - name: Service
    service: { name: cron, enabled: false }
  - name: Line
    line: { path: /srv/wd/app.conf, line: "workers=8", match: "^workers=" }
  - name: Command
    command: { run: "touch /srv/wd/mark-{{token}}", rollback: "rm /srv/wd/mark-{{token}}" }
handlers:
  - name: Record
    command: { run: "echo reloaded >> /var/log/wd-handler.log", rollback: "true" }
`;

const SNAPSHOT = [
  'P="/etc /srv /home /var/spool/cron /var/lib/ucf"',
  '{ find $P -xdev -printf "%p %m %u %g %y\\n" 2>/dev/null',
  '  find $P -xdev -type f -exec sha256sum {} + 2>/dev/null',
  "  dpkg-query -W -f '${Package} ${Version} ${Status}\\n' cron hello 2>&1",
  '  getent passwd wduser; getent group wdgroup',
  '  ls -d /run/hostsmith/lock 2>/dev/null',
  "} | grep -Ev '^(/etc/(passwd|group|shadow|gshadow|subuid|subgid)-( |$)|[0-9a-f]{64}  /etc/(passwd|group|shadow|gshadow|subuid|subgid)-$)' | sort",
].join('\n');

const CLEANUP = [
  'crontab -r 2>/dev/null',
  'userdel -r wduser 2>/dev/null',
  'groupdel wdgroup 2>/dev/null',
  'rm -rf /srv/wd /etc/wd-tmpl.conf /var/log/wd-handler.log /etc/lockout-motd',
  'DEBIAN_FRONTEND=noninteractive apt-get purge -y -q hello >/dev/null 2>&1',
  'update-rc.d cron enable >/dev/null 2>&1',
  'true',
].join('; ');

/** No watchdog left: no process running a watchdog script, no folder under /var/lib/hostsmith/watchdog. */
const LEFTOVERS = `ps -eo args | grep '[w]atchdog.sh'; ls -A /var/lib/hostsmith/watchdog 2>/dev/null; true`;

describeHosts('--confirm: lockout protection by a watchdog on the host', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  let sshdConfig: string;
  const host = () => sandbox().hosts[0]!;
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];
  const lockout = (...a: string[]) => hostsmith(args('apply', join(dir, 'lockout.yml'), '--hosts', 'h1', '--yes', ...a));
  const sha = (path: string) => sshOk(sandbox(), host(), `sha256sum ${path}`);

  beforeAll(async () => {
    dir = fixture({ 'lockout.yml': LOCKOUT, 'watched.yml': EVERY_TYPE, 'templates/t.hbs': 'on {{facts.hostname}}\n' });
    state = join(dir, 'state');
    await sshOk(sandbox(), host(), `${CLEANUP}; mkdir -p /srv/wd && printf '# app\\nworkers=2\\n' > /srv/wd/app.conf`);
    sshdConfig = await sha('/etc/ssh/sshd_config');
  });

  afterAll(async () => {
    await sshOk(sandbox(), host(), CLEANUP).catch(() => {});
  });

  it('a change that refuses the next login is rolled back over the run’s own connection at once', async () => {
    const r = await lockout('--confirm', '20s', '--var', 'deny=root');
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/h1: watchdog armed: the host rolls this run back by itself at .* unless confirmed/);
    expect(r.stdout).toMatch(/h1: not confirmed: a new SSH connection to h1 did not work \(.*authentication as root failed/);
    expect(r.stdout).toMatch(/rolling back over the run's own connection/);
    expect(r.stdout).toMatch(/↺ rollback of Deny: rolled back/);
    expect(r.stdout).toMatch(/h1\s+rolled-back\s/);
    // Plain ssh logs in again, and sshd_config is byte for byte as before; the watchdog is gone.
    expect(await sha('/etc/ssh/sshd_config')).toBe(sshdConfig);
    expect(await sshOk(sandbox(), host(), 'test -e /etc/lockout-motd && echo there || echo gone')).toBe('gone\n');
    expect(await sshOk(sandbox(), host(), LEFTOVERS)).toBe('');
    const journal = journalText(state);
    expect(journal).toMatch(/"kind":"watchdog","event":"armed"/);
    expect(journal).toMatch(/"kind":"watchdog","event":"disarmed"/);
  }, 120_000);

  it('with the run’s own link cut too, the host rolls itself back when the time is up', async () => {
    const started = Date.now();
    const r = await hostsmith(args('apply', join(dir, 'lockout.yml'), '--hosts', 'h1', '--yes', '--json', '--confirm', '6s', '--var', 'deny=root'), {
      env: { HOSTSMITH_FAULT_CUT_AFTER_ARM: '1' },
    });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const what = r.events.filter((e) => e.event === 'watchdog').map((e) => e.what);
    expect(what).toEqual(['armed', 'waiting', 'fired']);
    expect(r.events.find((e) => e.event === 'watchdog' && e.what === 'fired')!.message).toMatch(/rolled the host back by itself: rolled-back/);
    expect(r.events.find((e) => e.event === 'host-finished')!.status).toBe('rolled-back');
    // The controller waited for the watchdog's time: nothing could have been done sooner.
    expect(Date.now() - started).toBeGreaterThan(6000);
    const fired = journalText(state)
      .split('\n')
      .filter((l) => l.includes('"event":"fired"'))
      .map((l) => JSON.parse(l));
    expect(fired.at(-1)).toMatchObject({ result: 'rolled-back', rolledBack: ['Deny', 'Banner', 'Motd'] });
    expect(fired.at(-1).log).toMatch(/running handler Reload sshd again/);
    expect(await sha('/etc/ssh/sshd_config')).toBe(sshdConfig);
    expect(await sshOk(sandbox(), host(), `${LEFTOVERS}; ls /run/hostsmith`)).not.toMatch(/watchdog|lock/);
  }, 120_000);

  it('the run’s own link lost as the watchdog is armed: made again, no watchdog found there, the controller rolls back', async () => {
    const r = await hostsmith(args('apply', join(dir, 'lockout.yml'), '--hosts', 'h1', '--yes', '--json', '--confirm', '20s'), {
      env: { HOSTSMITH_FAULT_CUT_BEFORE_ARM: '1' },
    });
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const finished = r.events.find((e) => e.event === 'host-finished')!;
    expect(finished.status).toBe('rolled-back');
    // The arming failed as a lost link (made again, then the watchdog looked for), not as a step
    // error: a link cut before its close is seen still counts as a lost link.
    expect(finished.error).toMatch(/lockout protection failed before it could confirm \(h1: the SSH connection was lost before the command was sent/);
    // Nothing on the host says the run was ever there: no watchdog, no lock, sshd_config as before.
    expect(await sha('/etc/ssh/sshd_config')).toBe(sshdConfig);
    expect(await sshOk(sandbox(), host(), `${LEFTOVERS}; ls /run/hostsmith`)).not.toMatch(/watchdog|lock/);
    expect(await sshOk(sandbox(), host(), 'test -e /etc/lockout-motd && echo there || echo gone')).toBe('gone\n');
    // The journal holds the attempt to arm, then the controller's own rollback of every step.
    const journal = journalText(state);
    expect(journal).toMatch(/"kind":"watchdog","event":"armed"/);
  }, 120_000);

  it('without the bad line it confirms over a new connection and leaves no watchdog behind', async () => {
    const r = await lockout('--confirm', '20s');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/h1: confirmed over a new connection: the watchdog is removed/);
    expect(await sshOk(sandbox(), host(), LEFTOVERS)).toBe('');
    expect(await sshOk(sandbox(), host(), 'grep -c "^Banner none" /etc/ssh/sshd_config')).toBe('1\n');
    // Put sshd_config back for the next tests (and reload it).
    const undo = await hostsmith(['undo', r.stdout.match(/run (\S+)\)/)![1]!, '--yes', '--state-dir', state]);
    expect(undo.code, undo.stdout + undo.stderr).toBe(0);
    expect(await sha('/etc/ssh/sshd_config')).toBe(sshdConfig);
  }, 120_000);

  it('a verify command that fails rolls the host back although SSH works', async () => {
    const r = await lockout('--confirm', '20s', '--var', 'check=test -f /etc/no-such-file');
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/h1: not confirmed: verify command "test -f \/etc\/no-such-file" exited 1; rolling back over the run's own connection/);
    expect(r.stdout).toMatch(/h1\s+rolled-back\s/);
    expect(await sha('/etc/ssh/sshd_config')).toBe(sshdConfig);
    expect(await sshOk(sandbox(), host(), LEFTOVERS)).toBe('');
  }, 120_000);

  it('bad input changes nothing: a --confirm that is not a duration, a verify that is not a list', async () => {
    const bad = await lockout('--confirm', 'soon');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--confirm: "soon" is not a duration/);
    const d = fixture({ 'v.yml': 'name: v\nsteps: []\nverify: { run: true }\n' });
    const r = await hostsmith(args('plan', join(d, 'v.yml'), '--hosts', 'h1'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/v\.yml:3:\d+: verify/);
  }, 60_000);

  it('the controller killed right after arming: the watchdog alone puts back every step type, and recover settles the run', async () => {
    const before = await sshOk(sandbox(), host(), SNAPSHOT);
    const r = await hostsmith(args('apply', join(dir, 'watched.yml'), '--hosts', 'h1', '--yes', '--confirm', '4s', '--var', `token=${TOKEN}`), {
      env: { HOSTSMITH_FAULT_KILL_AFTER_ARM: '1' },
    });
    expect(r.code, r.stdout + r.stderr).toBe(-1); // killed by its signal
    expect(r.stdout).toMatch(/watchdog armed/);
    const runId = /\(run (\S+)\)/.exec(r.stdout)![1]!;
    // The watchdog outlives the controller and its SSH session; it fires and writes its result.
    let result = '';
    for (let i = 0; i < 120 && !/rolled-back|rollback-incomplete/.test(result); i++) {
      await new Promise((res) => setTimeout(res, 1000));
      result = (await sshExec({ ...host(), keyPath: sandbox().keyPath, knownHostsPath: sandbox().knownHostsPath }, `cat /var/lib/hostsmith/watchdog/${runId}/result 2>/dev/null`)).stdout;
    }
    expect(result).toBe('rolled-back\n');
    // Before any recover: the host is as before the run, every step type included; the lock is the run's until recover.
    const strip = (s: string) =>
      s
        .split('\n')
        .filter((l) => !l.startsWith('/run/hostsmith/lock'))
        .join('\n');
    expect(strip(await sshOk(sandbox(), host(), SNAPSHOT))).toEqual(strip(before));
    expect(await sshOk(sandbox(), host(), 'cat /var/log/wd-handler.log')).toBe('reloaded\nreloaded\n');

    // recover reads what the watchdog did and rolls nothing back twice (the command's rollback would fail: its mark is gone).
    const rec = await hostsmith(['recover', runId, '--yes', '--var', `token=${TOKEN}`, '--state-dir', state]);
    expect(rec.code, rec.stdout + rec.stderr).toBe(0);
    expect(rec.stdout).toMatch(/a lockout watchdog was armed there/);
    expect(rec.stdout).toMatch(/recovered \(exit 0\)/);
    expect(await sshOk(sandbox(), host(), SNAPSHOT)).toEqual(before);
    expect(await sshOk(sandbox(), host(), 'cat /var/log/wd-handler.log')).toBe('reloaded\nreloaded\n');
    expect(await sshOk(sandbox(), host(), LEFTOVERS)).toBe('');
    const journal = journalText(state);
    expect(journal).toMatch(/"kind":"watchdog","event":"fired"[^\n]*"result":"rolled-back"/);
    expect(journal).not.toContain(TOKEN);
  }, 240_000);
});
