/**
 * The `service` step against real Debian hosts (sysvinit). Service state is read with plain
 * ssh (`service … status`, pgrep, the rc links), never through hostsmith.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk } from '../hosts/ssh.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';

const RUNNING = 'service cron status; echo "exit=$?"; pgrep -x cron >/dev/null && echo pgrep=running || echo pgrep=stopped';
const LINKS = 'ls /etc/rc0.d /etc/rc1.d /etc/rc2.d /etc/rc3.d /etc/rc4.d /etc/rc5.d /etc/rc6.d /etc/rcS.d';
const CRON = `${RUNNING}; ${LINKS}`;
const IS_RUNNING = 'cron is running.\nexit=0\npgrep=running\n';
const IS_STOPPED = 'cron is not running ... failed!\nexit=3\npgrep=stopped\n';

describeHosts('service step (sysvinit) on real hosts', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(async () => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    await sandbox().restart(sandbox().hosts[0]!, { wipe: true });
  });
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];
  const recipe = (steps: string, extra = '') => join(fixture({ 'r.yml': `name: svc\n${extra}steps:\n${steps}` }), 'r.yml');
  const apply = (file: string, ...more: string[]) => hostsmith(args('apply', file, '--hosts', sandbox().hosts[0]!.name, '--yes', '--json', ...more));

  it('starts and stops cron; each second apply is unchanged', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    expect(await sshOk(sb, h, RUNNING)).toBe(IS_STOPPED);
    const start = recipe('  - name: Cron\n    service: { name: cron, state: started }\n');
    const r1 = await apply(start);
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1)[0]).toMatchObject({ status: 'changed', summary: 'start cron' });
    expect(await sshOk(sb, h, RUNNING)).toBe(IS_RUNNING);
    expect(stepEvents(await apply(start))[0]).toMatchObject({ status: 'unchanged', summary: 'cron is running' });

    const stop = recipe('  - name: Cron\n    service: { name: cron, state: stopped }\n');
    const r3 = await apply(stop);
    expect(r3.code).toBe(0);
    expect(stepEvents(r3)[0]).toMatchObject({ status: 'changed', summary: 'stop cron' });
    expect(await sshOk(sb, h, RUNNING)).toBe(IS_STOPPED);
    expect(stepEvents(await apply(stop))[0]).toMatchObject({ status: 'unchanged', summary: 'cron is stopped' });
  });

  it('disables and enables cron at boot through the rc links', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const startLinks = 'ls /etc/rc2.d /etc/rc3.d /etc/rc4.d /etc/rc5.d | grep cron';
    expect(await sshOk(sb, h, startLinks)).toBe('S01cron\nS01cron\nS01cron\nS01cron\n');
    const off = recipe('  - name: Cron off\n    service: { name: cron, enabled: false }\n');
    const r1 = await apply(off);
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1)[0]).toMatchObject({ status: 'changed', summary: 'disable cron at boot (enabled → disabled)' });
    expect(await sshOk(sb, h, startLinks)).toBe('K01cron\nK01cron\nK01cron\nK01cron\n');
    expect(stepEvents(await apply(off))[0]).toMatchObject({ status: 'unchanged', summary: 'cron is stopped and disabled' });

    const on = recipe('  - name: Cron on\n    service: { name: cron, enabled: true }\n');
    expect(stepEvents(await apply(on))[0]).toMatchObject({ status: 'changed', summary: 'enable cron at boot (disabled → enabled)' });
    expect(await sshOk(sb, h, startLinks)).toBe('S01cron\nS01cron\nS01cron\nS01cron\n');
    expect(stepEvents(await apply(on))[0]!.status).toBe('unchanged');
  });

  it.each([
    ['stopped and enabled', ''],
    ['running and disabled', 'service cron start && update-rc.d cron disable'],
    ['stopped without rc links', 'update-rc.d -f cron remove'],
  ])('a later failure puts cron back exactly as it was (%s)', async (_name, setup) => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    if (setup) await sshOk(sb, h, setup);
    const before = await sshOk(sb, h, CRON);
    const file = recipe(`  - name: Flip
    service: { name: cron, state: ${before.includes('exit=0') ? 'stopped' : 'started'}, enabled: ${before.includes('S01cron') ? 'false' : 'true'} }
  - name: Bounce
    service: { name: cron, state: restarted }
  - name: Reload
    service: { name: cron, state: reloaded }
  - name: Breaks
    command: { run: "echo 'disk on fire' >&2; exit 1" }
`);
    const r = await apply(file);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([
      ['Flip', 'changed'],
      ['Bounce', 'changed'],
      ['Reload', 'changed'],
      ['Breaks', 'failed'],
    ]);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back', 'rolled-back', 'rolled-back']);
    expect(await sshOk(sb, h, CRON)).toBe(before);
  });

  it('restarting a stopped service starts it, and rollback stops it again', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const r = await apply(recipe('  - name: Bounce\n    service: { name: cron, state: restarted }\n  - name: Breaks\n    command: { run: "exit 1" }\n'));
    expect(r.code).toBe(1);
    expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: 'start cron (restart: it was stopped)' });
    expect(await sshOk(sb, h, RUNNING)).toBe(IS_STOPPED);
    // Without the failure it stays running, and a restart always counts as a change.
    const ok = recipe('  - name: Bounce\n    service: { name: cron, state: restarted }\n');
    expect((await apply(ok)).code).toBe(0);
    const pid = await sshOk(sb, h, 'pgrep -x cron');
    const again = await apply(ok);
    expect(stepEvents(again)[0]).toMatchObject({ status: 'changed', summary: 'restart cron' });
    const newPid = await sshOk(sb, h, 'pgrep -x cron');
    expect(newPid).not.toBe(pid);
  });

  it('a daemon that writes its pid file only after its init script returned is waited for, not reported as failed to start', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // Its start returns at once; the daemon shows up in status a second later.
    const script = [
      '#!/bin/sh',
      'P=/run/slowd.pid',
      'case "$1" in',
      `  start) ( sleep 1; sh -c 'echo $$ > /run/slowd.pid; exec sleep 1000' ) >/dev/null 2>&1 & ;;`,
      '  stop) [ -f $P ] && kill $(cat $P); rm -f $P ;;',
      '  restart) $0 stop; $0 start ;;',
      '  status) [ -f $P ] && kill -0 $(cat $P) 2>/dev/null ;;',
      'esac',
      '',
    ].join('\n');
    await sshOk(sb, h, `echo ${Buffer.from(script).toString('base64')} | base64 -d > /etc/init.d/slowd && chmod 755 /etc/init.d/slowd`);
    const r = await apply(recipe('  - name: Slow\n    service: { name: slowd, state: started }\n'));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: 'start slowd' });
    expect(await sshOk(sb, h, '/etc/init.d/slowd status && echo running')).toBe('running\n');
    const again = await apply(recipe('  - name: Slow\n    service: { name: slowd, state: started }\n'));
    expect(stepEvents(again)[0]).toMatchObject({ status: 'unchanged' });
  });

  it('a service that does not exist fails with a clear error', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const r = await apply(recipe('  - name: Ghost\n    service: { name: nosuchsvc, state: started }\n'));
    expect(r.code).toBe(1);
    expect(stepEvents(r)[0]!.error).toBe(`service nosuchsvc does not exist on ${h.name} (no /etc/init.d/nosuchsvc)`);
  });

  it('nginx: installed, started, reloaded by a handler on a config change; a failed run puts packages, config, links and processes back', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // Daemons must not start during the install (they would take 0.0.0.0:80, which all sandbox
    // hosts share); the site then listens on the host's own address only.
    const site = `name: web
vars:
  body: { default: v1 }
  fail: { default: "no" }
steps:
  - name: No daemon starts on install
    file: { path: /usr/sbin/policy-rc.d, content: "#!/bin/sh\\nexit 101\\n", mode: "0755" }
  - name: Nginx
    package: { install: [nginx-light] }
  - name: Site
    file: { path: /etc/nginx/sites-available/default, content: "server {\\n  listen ${h.address}:8080;\\n  location / { return 200 \\"{{body}}\\\\n\\"; }\\n}\\n" }
    notify: [Reload nginx]
  - name: Nginx running
    service: { name: nginx, state: started, enabled: true }
  - name: Maybe fail
    command: { run: "test {{fail}} = no" }
handlers:
  - name: Reload nginx
    service: { name: nginx, state: reloaded }
`;
    const file = join(fixture({ 'web.yml': site }), 'web.yml');
    const get = async () => (await fetch(`http://${h.address}:8080/`)).text();
    const nginx = 'service nginx status >/dev/null; echo "exit=$?"; cat /run/nginx.pid';
    const everything = `dpkg-query -W -f='\${Package} \${Version} \${Status}\\n' | sort; ls -la /etc/nginx 2>&1; ls /etc/rc2.d; cat /usr/sbin/policy-rc.d; pgrep -x nginx || echo no-nginx`;

    const before = await sshOk(sb, h, everything);
    const bad = await apply(file, '--var', 'fail=yes');
    expect(bad.code, bad.stderr + bad.stdout).toBe(1);
    expect(stepEvents(bad).map((e) => [e.step, e.status])).toEqual([
      ['No daemon starts on install', 'changed'],
      ['Nginx', 'changed'],
      ['Site', 'changed'],
      ['Nginx running', 'changed'],
      ['Maybe fail', 'failed'],
    ]);
    expect(bad.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back', 'rolled-back', 'rolled-back', 'rolled-back']);
    expect(await sshOk(sb, h, everything)).toBe(before);

    const r1 = await apply(file);
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(await get()).toBe('v1\n');
    const [status1, master] = (await sshOk(sb, h, nginx)).split('\n');
    expect(status1).toBe('exit=0');
    expect(await sshOk(sb, h, 'ls /etc/rc2.d | grep nginx')).toMatch(/^S\d\dnginx\n$/);
    const workers = await sshOk(sb, h, `pgrep -P ${master}`);

    const r2 = await apply(file, '--var', 'body=v2');
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => [e.step, e.status, e.summary])).toEqual([
      ['No daemon starts on install', 'unchanged', expect.any(String)],
      ['Nginx', 'unchanged', 'nginx-light installed'],
      ['Site', 'changed', 'update /etc/nginx/sites-available/default: content'],
      ['Nginx running', 'unchanged', 'nginx is running and enabled'],
      ['Maybe fail', 'changed', expect.any(String)],
      ['Reload nginx', 'changed', 'reload nginx'],
    ]);
    await new Promise((r) => setTimeout(r, 300));
    expect(await get()).toBe('v2\n');
    // A reload keeps the master process and replaces the workers.
    expect((await sshOk(sb, h, nginx)).split('\n')[1]).toBe(master);
    expect(await sshOk(sb, h, `pgrep -P ${master}`)).not.toBe(workers);

    const r3 = await apply(file, '--var', 'body=v2');
    expect(
      stepEvents(r3)
        .filter((e) => e.step !== 'Maybe fail')
        .map((e) => e.status),
    ).toEqual(['unchanged', 'unchanged', 'unchanged', 'unchanged']);
  });
});
