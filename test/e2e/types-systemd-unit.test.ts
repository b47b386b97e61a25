/**
 * `systemd_unit` on a booted systemd host (systemd-nspawn), checked with plain ssh and systemctl,
 * never through hostsmith: the step battery for a oneshot service (from a template) and the timer
 * that runs it; the boot and running states a rollback and an undo put back; a restart rolled back
 * onto the restored definition; the lockout watchdog's rollback with no controller; a unit systemd
 * will not load; a planted symlink at the unit path.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { sshExec, sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';
import { stepBattery } from './step-battery.js';

const SYSTEMD = { kind: 'systemd' as const };

/** is-enabled, is-active and LoadState of each unit, one line each, as systemctl prints them. */
const states = (sb: Sandbox, h: SandboxHost, ...units: string[]) =>
  sshOk(sb, h, units.map((u) => `echo "${u} $(systemctl is-enabled ${u} 2>/dev/null || true) $(systemctl is-active ${u} 2>/dev/null || true) $(systemctl show -p LoadState --value ${u})"`).join('; '));

stepBattery('systemd_unit', {
  sandbox: SYSTEMD,
  files: { 'templates/hs-job.service.hbs': '[Unit]\nDescription=hostsmith nightly job on {{facts.hostname}}\n\n[Service]\nType=oneshot\nExecStart=/bin/sh -c "echo {{greeting}} > /run/hs-job.out"\n' },
  steps: `  - name: Job
    systemd_unit: { name: hs-job.service, src: hs-job.service.hbs, vars: { greeting: hello } }
  - name: Nightly
    systemd_unit:
      name: hs-job.timer
      content: |
        [Unit]
        Description=hostsmith nightly job timer

        [Timer]
        OnCalendar=*-*-* 03:00:00

        [Install]
        WantedBy=timers.target
      enabled: true
      state: started
`,
  target: 'Nightly',
  async verify(sb, h) {
    expect(await states(sb, h, 'hs-job.timer', 'hs-job.service')).toBe('hs-job.timer enabled active loaded\nhs-job.service static inactive loaded\n');
    expect(await sshOk(sb, h, 'readlink /etc/systemd/system/timers.target.wants/hs-job.timer; stat -c "%a %U:%G" /etc/systemd/system/hs-job.service')).toBe(
      '/etc/systemd/system/hs-job.timer\n644 root:root\n',
    );
    expect(await sshOk(sb, h, 'grep ExecStart /etc/systemd/system/hs-job.service')).toBe('ExecStart=/bin/sh -c "echo hello > /run/hs-job.out"\n');
    // systemd took the file as it is (no daemon-reload owed), and the timer is waiting for 03:00.
    expect(
      await sshOk(sb, h, 'systemctl show -p NeedDaemonReload --value hs-job.timer; systemctl show -p NeedDaemonReload --value hs-job.service; systemctl show -p SubState --value hs-job.timer'),
    ).toBe('no\nno\nwaiting\n');
    // The job runs: what the template made of it is what systemd runs.
    expect(await sshOk(sb, h, 'systemctl start hs-job.service && cat /run/hs-job.out && rm /run/hs-job.out')).toBe('hello\n');
  },
  async restored(sb, h) {
    expect(await states(sb, h, 'hs-job.timer', 'hs-job.service')).toBe('hs-job.timer  inactive not-found\nhs-job.service  inactive not-found\n');
  },
});

describeHosts(
  'systemd_unit: what the battery does not cover',
  () => {
    const sandbox = useSandbox(1, SYSTEMD);
    const dirs: string[] = [];
    afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    const state = () => {
      const d = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
      dirs.push(d);
      return d;
    };
    const recipe = (steps: string, files: Record<string, string> = {}) => {
      const dir = fixture({ 'r.yml': `name: types-systemd-unit\nsteps:\n${steps}`, ...files });
      dirs.push(dir);
      return join(dir, 'r.yml');
    };
    const h = () => sandbox().hosts[0]!;
    const apply = (file: string, s = state(), ...more: string[]) => hostsmith(['apply', file, '--yes', '--hosts', h().name, ...sandboxArgs(sandbox(), s), '--json', ...more]);
    const web = (n: number) => `[Unit]\nDescription=hostsmith web ${n}\n\n[Service]\nExecStart=/bin/sleep 100${n}\n\n[Install]\nWantedBy=multi-user.target\n`;
    const webStep = (n: number, extra: string) => `  - name: Web\n    systemd_unit: { name: hs-web.service, content: ${JSON.stringify(web(n))}${extra} }\n`;
    const FAIL = '  - name: Then fail\n    command: { run: "echo failing on purpose >&2; exit 3" }\n';
    /** The unit file's digest, its boot and running state, and the command its main process runs. */
    const web1 =
      'sha256sum /etc/systemd/system/hs-web.service; systemctl is-enabled hs-web.service; systemctl is-active hs-web.service; ps -o args= -p $(systemctl show -p MainPID --value hs-web.service) || true';

    beforeEach(async () => {
      await sshRun(
        sandbox(),
        h(),
        'systemctl disable --now hs-web.service hs-bad.service 2>/dev/null; rm -f /etc/systemd/system/hs-web.service /etc/systemd/system/hs-bad.service /etc/systemd/system/hs-evil.service; systemctl daemon-reload; systemctl reset-failed',
      );
    });
    /** hs-web.service as a person set it up before the run: version 1, enabled or not, running or not. */
    const setup = async (enabled: boolean, active: boolean) => {
      await sshOk(
        sandbox(),
        h(),
        `printf '%s' '${web(1)}' > /etc/systemd/system/hs-web.service && systemctl daemon-reload${enabled ? ' && systemctl enable hs-web.service 2>/dev/null' : ''}${active ? ' && systemctl start hs-web.service' : ''}`,
      );
    };

    it.each([
      ['enabled and active → disabled and stopped', true, true, ', enabled: false, state: stopped', 'disable hs-web.service (enabled → disabled); stop hs-web.service (active → inactive)'],
      ['disabled and inactive → enabled and started', false, false, ', enabled: true, state: started', 'enable hs-web.service (disabled → enabled); start hs-web.service (inactive → active)'],
      ['enabled and active, restarted on a new file: rollback restarts it on the old one', true, true, ', state: restarted', 'restart hs-web.service (its definition changed) (active → active)'],
    ])('a later failure puts the unit back as it was: %s', async (_n, enabled, active, extra, summary) => {
      const sb = sandbox();
      await setup(enabled, active);
      const before = await sshOk(sb, h(), web1);
      expect(before).toContain(`\n${enabled ? 'enabled' : 'disabled'}\n${active ? 'active\n/bin/sleep 1001' : 'inactive'}\n`);
      const r = await apply(recipe(webStep(2, extra) + FAIL));
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: `update /etc/systemd/system/hs-web.service: content; daemon-reload; ${summary}` });
      expect(stepEvents(r)[0]!.diff).toContain('-ExecStart=/bin/sleep 1001\n+ExecStart=/bin/sleep 1002');
      expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back']);
      // Plain systemctl: the old file, its boot and running state, and (when it ran) the old definition running.
      expect(await sshOk(sb, h(), web1)).toBe(before);
      expect(await sshOk(sb, h(), 'systemctl show -p NeedDaemonReload --value hs-web.service')).toBe('no\n');
    });

    it('enabled into a .wants folder that was not there: rollback removes the folder it made, and only that', async () => {
      const sb = sandbox();
      const unit = web(3).replace('WantedBy=multi-user.target', 'WantedBy=graphical.target multi-user.target');
      const r = await apply(recipe(`  - name: Web\n    systemd_unit: { name: hs-web.service, content: ${JSON.stringify(unit)}, enabled: true }\n${FAIL}`));
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: expect.stringContaining('enable hs-web.service (not-found → enabled)') });
      expect(await sshOk(sb, h(), 'ls -d /etc/systemd/system/graphical.target.wants 2>&1 || true; ls /etc/systemd/system/multi-user.target.wants | grep -c . ')).toMatch(
        /No such file or directory\n[1-9]\d*\n$/,
      );
    });

    it('undo of a run that made, enabled and started a unit: not there, not enabled, not running; refused first while someone had stopped it', async () => {
      const sb = sandbox();
      const s = state();
      const r = await apply(recipe(webStep(1, ', enabled: true, state: started')), s);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(await sshOk(sb, h(), 'systemctl is-enabled hs-web.service; systemctl is-active hs-web.service')).toBe('enabled\nactive\n');
      const runId = r.events.find((e) => e.event === 'run-started')!.runId as string;
      // Stopped by hand since: undo sees the drift and changes nothing.
      await sshOk(sb, h(), 'systemctl stop hs-web.service');
      const refused = await hostsmith(['undo', runId, '--yes', '--json', '--state-dir', s]);
      expect(refused.code, refused.stdout + refused.stderr).toBe(5);
      expect(await sshOk(sb, h(), 'systemctl is-enabled hs-web.service; test -f /etc/systemd/system/hs-web.service && echo there')).toBe('enabled\nthere\n');
      await sshOk(sb, h(), 'systemctl start hs-web.service');
      const undo = await hostsmith(['undo', runId, '--yes', '--json', '--state-dir', s]);
      expect(undo.code, undo.stdout + undo.stderr).toBe(0);
      expect(await states(sb, h(), 'hs-web.service')).toBe('hs-web.service  inactive not-found\n');
      expect(await sshOk(sb, h(), 'ls /etc/systemd/system/multi-user.target.wants | grep hs-web || echo no-link')).toBe('no-link\n');
    });

    it('the controller killed right after arming --confirm: the watchdog alone puts the unit back, with no controller', async () => {
      const sb = sandbox();
      await setup(false, false);
      const before = await sshOk(sb, h(), web1);
      const s = state();
      const r = await hostsmith(['apply', recipe(webStep(2, ', enabled: true, state: started')), '--yes', '--hosts', h().name, ...sandboxArgs(sb, s), '--confirm', '4s'], {
        env: { HOSTSMITH_FAULT_KILL_AFTER_ARM: '1' },
      });
      expect(r.code, r.stdout + r.stderr).toBe(-1);
      const runId = /\(run (\S+)\)/.exec(r.stdout)![1]!;
      let result = '';
      for (let i = 0; i < 60 && !/rolled-back|rollback-incomplete/.test(result); i++) {
        await new Promise((res) => setTimeout(res, 1000));
        result = (await sshExec({ ...h(), keyPath: sb.keyPath, knownHostsPath: sb.knownHostsPath }, `cat /var/lib/hostsmith/watchdog/${runId}/result 2>/dev/null`)).stdout;
      }
      expect(result, await sshOk(sb, h(), `cat /var/lib/hostsmith/watchdog/${runId}/log 2>&1 || true`)).toBe('rolled-back\n');
      expect(await sshOk(sb, h(), web1)).toBe(before);
      const rec = await hostsmith(['recover', runId, '--yes', '--state-dir', s]);
      expect(rec.code, rec.stdout + rec.stderr).toBe(0);
      expect(await sshOk(sb, h(), web1)).toBe(before);
    }, 120_000);

    it('a unit systemd will not load: the step fails with systemd’s words and leaves nothing behind', async () => {
      const sb = sandbox();
      const r = await apply(recipe('  - name: Bad\n    systemd_unit: { name: hs-bad.service, content: "[Unit]\\nDescription=no command\\n\\n[Service]\\nType=simple\\n" }\n'));
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(stepEvents(r)[0]!.error).toMatch(/^loading \/etc\/systemd\/system\/hs-bad.service on h1 failed \(exit 1\): systemd did not load hs-bad.service \(LoadState=bad-setting\)/);
      expect(await states(sb, h(), 'hs-bad.service')).toBe('hs-bad.service  inactive not-found\n');
      expect(await sshOk(sb, h(), 'ls /etc/systemd/system/hs-bad.service 2>&1 || true')).toMatch(/No such file/);
    });

    it('a line that is not systemd syntax is refused at load, with file:line, before any host is contacted', async () => {
      const file = recipe('  - name: Broken\n    systemd_unit: { name: hs-web.service, content: "[Service]\\nExecStart /bin/true\\n" }\n');
      const r = await hostsmith(['plan', file, '--hosts', h().name, ...sandboxArgs(sandbox(), state())]);
      expect(r.code, r.stdout + r.stderr).toBe(2);
      expect(r.stderr).toMatch(/r\.yml:\d+:\d+: steps\[0\]\.systemd_unit\.content: hs-web.service is not a unit file: line 2 is neither a \[Section\] header nor Key=value/);
    });

    it('a symbolic link planted at the unit path by a local user is refused: nothing written through it', async () => {
      const sb = sandbox();
      await sshOk(
        sb,
        h(),
        'id eve >/dev/null 2>&1 || useradd -m eve; printf "[Service]\\nExecStart=/bin/true\\n" > /home/eve/evil.service; chown eve: /home/eve/evil.service; ln -s /home/eve/evil.service /etc/systemd/system/hs-evil.service; chown -h eve: /etc/systemd/system/hs-evil.service',
      );
      const evil = await sshOk(sb, h(), 'sha256sum /home/eve/evil.service');
      const r = await apply(recipe('  - name: Evil\n    systemd_unit: { name: hs-evil.service, content: "[Service]\\nExecStart=/bin/sleep 5\\n", state: started }\n'));
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(stepEvents(r)[0]!.error).toMatch(
        /\/etc\/systemd\/system\/hs-evil.service is a symbolic link \(to \/home\/eve\/evil.service\), not a unit file; hostsmith does not write a unit through a link/,
      );
      expect(await sshOk(sb, h(), 'sha256sum /home/eve/evil.service; readlink /etc/systemd/system/hs-evil.service; systemctl is-active hs-evil.service || true')).toBe(
        `${evil}/home/eve/evil.service\ninactive\n`,
      );
    });
  },
  SYSTEMD,
);
