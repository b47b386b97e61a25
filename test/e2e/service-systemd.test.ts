/**
 * The `service` step on a booted systemd host (systemd-nspawn): systemctl for the running and boot
 * state, rollback and undo putting both back, and a handler that reloads the service again after
 * an undo restored its config. State is read with plain ssh and systemctl, never through hostsmith.
 * The sysvinit side is test/e2e/service.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, expect, it } from 'vitest';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';

/** Writes what it runs with into /run on start and on reload: what the service has loaded, seen from outside. */
const UNIT = `[Unit]
Description=hostsmith test service
[Service]
ExecStart=/bin/sh -c 'cat /etc/hs-svc.conf > /run/hs-svc.loaded; exec sleep infinity'
ExecReload=/bin/sh -c 'cat /etc/hs-svc.conf > /run/hs-svc.loaded'
[Install]
WantedBy=multi-user.target
`;
const STATE = 'systemctl is-enabled hs-svc; systemctl is-active hs-svc || true';

describeHosts(
  'service step (systemd) on real hosts',
  () => {
    const sandbox = useSandbox(1, { kind: 'systemd' });
    const dirs: string[] = [];
    afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    const state = () => {
      const d = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
      dirs.push(d);
      return d;
    };
    const recipe = (body: string) => {
      const dir = fixture({ 'r.yml': `name: svc\n${body}` });
      dirs.push(dir);
      return join(dir, 'r.yml');
    };
    const h = () => sandbox().hosts[0]!;
    const apply = (file: string, s = state()) => hostsmith(['apply', file, '--yes', '--hosts', h().name, ...sandboxArgs(sandbox(), s), '--json']);
    const runIdOf = (r: { events: Array<Record<string, any>> }) => r.events.find((e) => e.event === 'run-started')!.runId as string;

    beforeEach(async () => {
      // hs-svc: installed, disabled, stopped, loading config v1.
      await sshOk(
        sandbox(),
        h(),
        `systemctl disable --now hs-svc 2>/dev/null; echo ${Buffer.from(UNIT).toString('base64')} | base64 -d > /etc/systemd/system/hs-svc.service; printf 'v1\\n' > /etc/hs-svc.conf; rm -f /run/hs-svc.loaded; systemctl daemon-reload; systemctl reset-failed; true`,
      );
    });

    it('starts and enables a unit with systemctl; a rerun is unchanged; a later failure rolls it back to stopped and disabled', async () => {
      const sb = sandbox();
      expect(await sshOk(sb, h(), STATE)).toBe('disabled\ninactive\n');
      const on = '  - name: Svc\n    service: { name: hs-svc, state: started, enabled: true }\n';
      const bad = await apply(recipe(`steps:\n${on}  - name: Breaks\n    command: { run: "echo disk on fire >&2; exit 1" }\n`));
      expect(bad.code, bad.stdout + bad.stderr).toBe(1);
      expect(stepEvents(bad)[0]).toMatchObject({ status: 'changed', summary: 'start hs-svc; enable hs-svc at boot (disabled → enabled)' });
      expect(bad.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back']);
      expect(await sshOk(sb, h(), `${STATE}; ls /etc/systemd/system/multi-user.target.wants | grep hs-svc || echo no-link`)).toBe('disabled\ninactive\nno-link\n');

      const ok = recipe(`steps:\n${on}`);
      const r = await apply(ok);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(await sshOk(sb, h(), `${STATE}; cat /run/hs-svc.loaded`)).toBe('enabled\nactive\nv1\n');
      expect(stepEvents(await apply(ok))[0]).toMatchObject({ status: 'unchanged', summary: 'hs-svc is running and enabled' });
    });

    it('a later failure puts a running, enabled unit back after stopping and disabling it', async () => {
      const sb = sandbox();
      await sshOk(sb, h(), 'systemctl enable --now hs-svc 2>/dev/null');
      const pid = await sshOk(sb, h(), 'systemctl show -p MainPID --value hs-svc');
      const r = await apply(recipe('steps:\n  - name: Svc\n    service: { name: hs-svc, state: stopped, enabled: false }\n  - name: Breaks\n    command: { run: "exit 1" }\n'));
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: 'stop hs-svc; disable hs-svc at boot (enabled → disabled)' });
      expect(await sshOk(sb, h(), STATE)).toBe('enabled\nactive\n');
      // Running again (a new process: it was stopped in between).
      expect(await sshOk(sb, h(), 'systemctl show -p MainPID --value hs-svc')).not.toBe(pid);
    });

    it('undo of a run that started and enabled a unit stops and disables it', async () => {
      const sb = sandbox();
      const s = state();
      const r = await apply(recipe('steps:\n  - name: Svc\n    service: { name: hs-svc, state: started, enabled: true }\n'), s);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(await sshOk(sb, h(), STATE)).toBe('enabled\nactive\n');
      const undo = await hostsmith(['undo', runIdOf(r), '--yes', '--json', '--state-dir', s]);
      expect(undo.code, undo.stdout + undo.stderr).toBe(0);
      expect(await sshOk(sb, h(), STATE)).toBe('disabled\ninactive\n');
    });

    it('a handler reloads the unit on a config change, and reloads it again when undo puts the old config back', async () => {
      const sb = sandbox();
      const s = state();
      await sshOk(sb, h(), 'systemctl start hs-svc');
      expect(await sshOk(sb, h(), 'cat /run/hs-svc.loaded')).toBe('v1\n');
      const r = await apply(
        recipe(`steps:
  - name: Config
    file: { path: /etc/hs-svc.conf, content: "v2\\n" }
    notify: [Reload svc]
  - name: Svc
    service: { name: hs-svc, state: started }
handlers:
  - name: Reload svc
    service: { name: hs-svc, state: reloaded }
`),
        s,
      );
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(stepEvents(r).map((e) => [e.step, e.status, e.summary])).toEqual([
        ['Config', 'changed', 'update /etc/hs-svc.conf: content'],
        ['Svc', 'unchanged', 'hs-svc is running'],
        ['Reload svc', 'changed', 'reload hs-svc'],
      ]);
      const pid = await sshOk(sb, h(), 'systemctl show -p MainPID --value hs-svc');
      expect(await sshOk(sb, h(), 'cat /run/hs-svc.loaded')).toBe('v2\n');

      const undo = await hostsmith(['undo', runIdOf(r), '--yes', '--json', '--state-dir', s]);
      expect(undo.code, undo.stdout + undo.stderr).toBe(0);
      expect(stepEvents(undo).find((e) => e.step === 'Reload svc')).toMatchObject({ status: 'changed', summary: 'after rollback: reload hs-svc' });
      // The old config is in place and loaded, by a reload (the same process), not a restart.
      expect(await sshOk(sb, h(), 'cat /etc/hs-svc.conf /run/hs-svc.loaded; systemctl show -p MainPID --value hs-svc')).toBe(`v1\nv1\n${pid}`);
    });

    it('a unit file changed on disk is read again before the restart, so the new definition runs', async () => {
      const sb = sandbox();
      await sshOk(sb, h(), 'systemctl start hs-svc');
      const r = await apply(
        recipe(`steps:
  - name: Unit
    file: { path: /etc/systemd/system/hs-svc.service, content: ${JSON.stringify(UNIT.replace('exec sleep infinity', 'exec sleep 4242'))} }
  - name: Restart
    service: { name: hs-svc, state: restarted }
`),
      );
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(await sshOk(sb, h(), 'ps -o args= -p $(systemctl show -p MainPID --value hs-svc); systemctl show -p NeedDaemonReload --value hs-svc')).toBe('sleep 4242\nno\n');
    });

    it('an init script with no unit of its own and no rc links: enabled through systemctl, and a rollback leaves no rc links, as before', async () => {
      const sb = sandbox();
      const script = [
        '#!/bin/sh',
        '### BEGIN INIT INFO',
        '# Provides:          hs-sysv',
        '# Required-Start:    $remote_fs',
        '# Required-Stop:     $remote_fs',
        '# Default-Start:     2 3 4 5',
        '# Default-Stop:      0 1 6',
        '# Short-Description: hostsmith test script',
        '### END INIT INFO',
        'case "$1" in',
        '  start) sleep 1000 >/dev/null 2>&1 & echo $! > /run/hs-sysv.pid ;;',
        '  stop) [ -f /run/hs-sysv.pid ] && kill $(cat /run/hs-sysv.pid); rm -f /run/hs-sysv.pid ;;',
        '  status) [ -f /run/hs-sysv.pid ] && kill -0 $(cat /run/hs-sysv.pid) 2>/dev/null ;;',
        'esac',
        '',
      ].join('\n');
      await sshOk(sb, h(), `echo ${Buffer.from(script).toString('base64')} | base64 -d > /etc/init.d/hs-sysv && chmod 755 /etc/init.d/hs-sysv && systemctl daemon-reload`);
      const links = 'ls /etc/rc0.d /etc/rc1.d /etc/rc2.d /etc/rc3.d /etc/rc4.d /etc/rc5.d /etc/rc6.d /etc/rcS.d | grep -c hs-sysv || true';
      expect(await sshOk(sb, h(), links)).toBe('0\n');
      const r = await apply(recipe('steps:\n  - name: Sysv\n    service: { name: hs-sysv, enabled: true }\n  - name: Breaks\n    command: { run: "exit 1" }\n'));
      expect(r.code, r.stdout + r.stderr).toBe(1);
      expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: 'enable hs-sysv at boot (none → enabled)' });
      expect(await sshOk(sb, h(), links)).toBe('0\n');
      const ok = await apply(recipe('steps:\n  - name: Sysv\n    service: { name: hs-sysv, enabled: true }\n'));
      expect(ok.code, ok.stdout + ok.stderr).toBe(0);
      expect(await sshOk(sb, h(), 'systemctl is-enabled hs-sysv 2>/dev/null; ls /etc/rc2.d | grep hs-sysv')).toMatch(/^enabled\nS\d\dhs-sysv\n$/);
      await sshOk(sb, h(), 'update-rc.d -f hs-sysv remove >/dev/null; rm -f /etc/init.d/hs-sysv; systemctl daemon-reload');
    });

    it('a unit that does not exist fails with a clear error', async () => {
      const r = await apply(recipe('steps:\n  - name: Ghost\n    service: { name: nosuchsvc, state: started }\n'));
      expect(r.code).toBe(1);
      expect(stepEvents(r)[0]!.error).toBe(`service nosuchsvc does not exist on ${h().name} (no systemd unit of that name)`);
    });
  },
  { kind: 'systemd' },
);
