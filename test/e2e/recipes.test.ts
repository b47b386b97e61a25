/**
 * Every example in recipes/ applies cleanly on a real host, and a second apply changes nothing.
 * The host's state is checked with plain ssh (and nginx with a plain HTTP request).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { hostsmith, httpGet, sandboxArgs, stepEvents } from './cli.js';

describeHosts('the example recipes apply cleanly and idempotently', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });
  const twice = async (recipe: string, ...vars: string[]) => {
    const args = ['apply', `recipes/${recipe}.yml`, '--hosts', 'h1', '--yes', '--json', ...sandboxArgs(sandbox(), state), ...vars.flatMap((v) => ['--var', v])];
    const first = await hostsmith(args);
    expect(first.code, first.stderr + first.stdout.slice(-3000)).toBe(0);
    const second = await hostsmith(args);
    expect(second.code, second.stderr).toBe(0);
    expect(stepEvents(second).filter((e) => e.status !== 'unchanged' && e.status !== 'skipped')).toEqual([]);
    return first;
  };

  it('motd', async () => {
    const sb = sandbox();
    await twice('motd', 'greeting=Hello');
    expect(await sshOk(sb, sb.hosts[0]!, 'head -1 /etc/motd; stat -c "%a" /opt/hostsmith-demo/app.conf; cat /opt/hostsmith-demo/changes.log')).toBe(
      'Hello to h1 (Debian GNU/Linux 12 (bookworm)).\n600\nconfig changed by run\n',
    );
  });

  it('web-server: nginx serves the site on the host address, logs kept longer, health cron installed', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const first = await twice('web-server', 'server_name=shop.test', `listen=${h.address}:8080`, 'log_keep_days=21');
    expect(stepEvents(first).map((e) => e.step)).toContain('Reload nginx');
    const page = await httpGet(`http://${h.address}:8080/`);
    expect(page.status).toBe(200);
    expect(page.body).toContain('<h1>shop.test</h1>');
    expect(page.body).toContain('on h1 (Debian GNU/Linux 12 (bookworm))');
    expect(await sshOk(sb, h, "dpkg-query -W -f '${Status}' nginx-light")).toBe('install ok installed');
    expect(await sshOk(sb, h, 'grep -c "rotate 21" /etc/logrotate.d/nginx; test ! -e /etc/nginx/sites-enabled/default && echo no-default')).toBe('1\nno-default\n');
    expect(await sshOk(sb, h, 'crontab -l')).toMatch(/# hostsmith: nginx-health\n\*\/5 \* \* \* \* pgrep -x nginx/);
    expect(await sshOk(sb, h, 'ls /etc/rc2.d/ | grep -c "^S..nginx$"')).toBe('1\n');
    await sshOk(sb, h, 'service nginx stop');
  });

  it('admin-user: the admin logs in with the key and has passwordless sudo', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const pub = readFileSync(`${sb.keyPath}.pub`, 'utf8').trim();
    await twice('admin-user', 'admin=opsadmin', `admin_key=${pub}`);
    expect(await sshOk(sb, h, 'sudo -n id -un', { user: 'opsadmin' })).toBe('root\n');
    expect(await sshOk(sb, h, 'id -nG opsadmin; getent passwd opsadmin | cut -d: -f7')).toBe('opsadmin sudo\n/bin/bash\n');
    expect((await sshRun(sb, h, 'visudo -c -q')).code).toBe(0);
  });

  it('os-updates: lists refreshed, housekeeping written, upgrades applied or already none', async () => {
    const sb = sandbox();
    const first = await twice('os-updates');
    const upgrade = stepEvents(first).find((e) => e.step === 'Apply pending upgrades')!;
    expect(['changed', 'skipped']).toContain(upgrade.status);
    expect(await sshOk(sb, sb.hosts[0]!, 'grep AutocleanInterval /etc/apt/apt.conf.d/90hostsmith-housekeeping')).toBe('APT::Periodic::AutocleanInterval "7";\n');
    expect(await sshOk(sb, sb.hosts[0]!, 'apt-get -s -o Debug::NoLocking=1 upgrade | grep -c "^Inst " || true')).toBe('0\n');
  });
});
