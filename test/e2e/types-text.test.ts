/**
 * The block and replace step types held to the step contract on a real host (step-battery.ts):
 * apply, rerun, undo, a failing later step, SIGKILL around the step then recover, each to zero
 * residue. The files they edit are prepared with plain ssh in `setup` (so they are part of the
 * host as it was), and read back with plain ssh, never through hostsmith.
 */
import { expect } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { sshOk } from '../hosts/ssh.js';
import { stepBattery } from './step-battery.js';

async function put(sb: Sandbox, h: SandboxHost, path: string, content: string, mode: string, owner: string): Promise<void> {
  await sshOk(sb, h, `mkdir -p "$(dirname ${path})" && cat > ${path} && chmod ${mode} ${path} && chown ${owner} ${path}`, { input: content });
}

const NTP = '# ntp\ndriftfile /var/lib/ntp/drift\n# servers\nrestrict default nomodify\n';
/** CRLF and no final newline: both must survive the edit and come back exactly. */
const HOSTS_ALLOW = 'ALL: 127.0.0.1\r\nsshd: 10.0.0.0/8';

stepBattery('block', {
  steps: `  - name: NTP servers
    block:
      path: /etc/hs-text/ntp.conf
      insertafter: "^# servers"
      block: |
        server 0.pool.example.net iburst
        server 1.pool.example.net iburst
  - name: Allow office
    block: { path: /etc/hs-text/hosts.allow, name: office, block: "sshd: 192.0.2.0/24", insertbefore: BOF }
  - name: New conf
    block: { path: /etc/hs-text-new/sub/app.conf, block: "a=1", create: true, mode: "0600" }
`,
  async setup(sb, h) {
    await put(sb, h, '/etc/hs-text/ntp.conf', NTP, '0640', 'root:adm');
    await put(sb, h, '/etc/hs-text/hosts.allow', HOSTS_ALLOW, '0644', 'root:root');
    await sshOk(sb, h, 'rm -rf /etc/hs-text-new');
  },
  async verify(sb, h) {
    expect(await sshOk(sb, h, 'cat /etc/hs-text/ntp.conf')).toBe(
      '# ntp\ndriftfile /var/lib/ntp/drift\n# servers\n' +
        '# BEGIN MANAGED BY hostsmith: NTP servers\nserver 0.pool.example.net iburst\nserver 1.pool.example.net iburst\n# END MANAGED BY hostsmith: NTP servers\n' +
        'restrict default nomodify\n',
    );
    expect(await sshOk(sb, h, 'cat /etc/hs-text/hosts.allow')).toBe(`# BEGIN MANAGED BY hostsmith: office\r\nsshd: 192.0.2.0/24\r\n# END MANAGED BY hostsmith: office\r\n${HOSTS_ALLOW}`);
    expect(await sshOk(sb, h, 'cat /etc/hs-text-new/sub/app.conf')).toBe('# BEGIN MANAGED BY hostsmith: New conf\na=1\n# END MANAGED BY hostsmith: New conf\n');
    // An edit keeps the file's own mode and owner; a created one gets what the step names.
    expect(await sshOk(sb, h, 'stat -c "%a %U %G" /etc/hs-text/ntp.conf /etc/hs-text/hosts.allow /etc/hs-text-new/sub/app.conf')).toBe('640 root adm\n644 root root\n600 root root\n');
  },
});

const INI = '[main]\nport = 80\nhost = a.example\n[admin]\nport = 81\nhost = b.example\n[other]\nport = 82\n';

stepBattery('replace', {
  steps: `  - name: Admin port
    replace: { path: /etc/hs-text/app.ini, after: '^\\[admin\\]', before: '^\\[', regexp: '^port\\s*=.*$', replace: "port = 8081" }
  - name: Domain
    replace: { path: /etc/hs-text/app.ini, regexp: '^host = (\\w+)\\.example$', replace: "host = $1.example.net", mode: "0600" }
`,
  async setup(sb, h) {
    await put(sb, h, '/etc/hs-text/app.ini', INI, '0640', 'nobody:nogroup');
  },
  async verify(sb, h) {
    expect(await sshOk(sb, h, 'cat /etc/hs-text/app.ini')).toBe('[main]\nport = 80\nhost = a.example.net\n[admin]\nport = 8081\nhost = b.example.net\n[other]\nport = 82\n');
    expect(await sshOk(sb, h, 'stat -c "%a %U %G" /etc/hs-text/app.ini')).toBe('600 nobody nogroup\n');
  },
});
