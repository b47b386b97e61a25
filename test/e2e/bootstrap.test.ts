/**
 * `hostsmith bootstrap` on a real pseudo-terminal against a real host whose root login takes a
 * password and has no authorized key: the answers are typed as a person would, and the host,
 * the known_hosts file, the inventory and every file the run leaves are checked afterwards.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshExec, sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, journalText, onTerminal } from './cli.js';

const RECIPE = `name: site
description: A small site config for the bootstrap test
vars:
  site_name: { pattern: "^[a-z][a-z0-9-]*$", required: true, description: Name of the site }
  site_port: { default: 8080, type: number, description: Port the site listens on }
steps:
  - name: Site folder
    file: { path: /etc/hostsmith-site, state: directory, mode: "0755" }
  - name: Site config
    file: { path: /etc/hostsmith-site/site.conf, content: "name={{site_name}}\\nport={{site_port}}\\n", mode: "0644" }
`;
const OTHER = `name: other
description: Another recipe, listed first, not chosen
steps:
  - name: Marker
    file: { path: /etc/hostsmith-other, state: directory }
`;
const INVENTORY = `# team inventory: keep this comment
defaults: { user: deploy, sudo: true }   # most hosts
hosts:
  # web tier
  web1: { address: 203.0.113.10 }
groups:
  web: { vars: { upstream_port: 8080 } }
# end of file
`;

describeHosts('bootstrap on a terminal', () => {
  const sandbox = useSandbox(1);
  const password = `Pa55-${randomBytes(6).toString('hex')}`;
  const dirs: string[] = [];
  const temp = (prefix: string) => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
  /** As deploy, through sudo: the way back in while root has no authorized key. */
  const asRoot = (cmd: string) => sshRun(sandbox(), sandbox().hosts[0]!, `sudo sh -c '${cmd.replace(/'/g, `'\\''`)}'`, { user: 'deploy' });
  let home = '';
  let keyPath = '';
  /** sshd re-executes itself on SIGHUP: wait until it takes logins again. */
  const sshdBack = async (user: string) => {
    for (let i = 0; i < 50; i++) {
      if ((await sshRun(sandbox(), sandbox().hosts[0]!, 'true', { user })).code === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('sshd did not come back after its reload');
  };

  beforeAll(async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // Root takes a password over ssh and has no ~/.ssh yet; deploy (key + sudo) stays our way in.
    await sshOk(sb, h, 'chpasswd', { input: `root:${password}\n` });
    await sshOk(
      sb,
      h,
      `cp /etc/ssh/sshd_config /etc/ssh/sshd_config.hostsmith-test && sed -i -e 's/^PermitRootLogin .*/PermitRootLogin yes/' -e 's/^PasswordAuthentication .*/PasswordAuthentication yes/' /etc/ssh/sshd_config && kill -HUP $(cat /run/sshd.pid)`,
    );
    await sshdBack('root');
    await sshOk(sb, h, 'mv /root/.ssh /root/.ssh.hostsmith-test');
    expect((await sshRun(sb, h, 'true')).code).not.toBe(0);
    // The person's own key: new, in their (test) home.
    home = temp('hostsmith-home-');
    mkdirSync(join(home, '.ssh'), { mode: 0o700 });
    keyPath = join(home, '.ssh', 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'person@laptop', '-f', keyPath]);
  });

  afterAll(async () => {
    try {
      // Each part only when its setup happened, so a setup that failed halfway is undone too.
      const r = await asRoot(
        'set -e; if [ -e /root/.ssh.hostsmith-test ]; then rm -rf /root/.ssh; mv /root/.ssh.hostsmith-test /root/.ssh; fi; usermod -p "*" root; ' +
          'if [ -e /etc/ssh/sshd_config.hostsmith-test ]; then mv /etc/ssh/sshd_config.hostsmith-test /etc/ssh/sshd_config; kill -HUP $(cat /run/sshd.pid); fi',
      );
      if (r.code !== 0) throw new Error(`restoring the host failed: ${r.stderr}`);
      await sshdBack('root');
      expect(await sshOk(sandbox(), sandbox().hosts[0]!, 'grep -c "^PasswordAuthentication no" /etc/ssh/sshd_config; passwd -S root | cut -d" " -f2')).toBe('1\nL\n');
    } finally {
      dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
    }
  });

  const env = () => ({ HOME: home, SSH_AUTH_SOCK: '', XDG_CONFIG_HOME: join(home, '.config') });
  const where = () => `root@${sandbox().hosts[0]!.address}:${sandbox().hosts[0]!.port}`;

  it('without a terminal: exit 2, nothing asked', async () => {
    const r = await hostsmith(['bootstrap'], { env: env() });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/bootstrap asks its questions on a terminal, and there is none here/);
    expect(r.stdout).toBe('');
  });

  it('Ctrl-C at a var prompt: exit 130, the host unchanged (no key installed, no recipe state)', async () => {
    const dir = temp('hostsmith-bs-');
    writeFileSync(join(dir, 'known_hosts'), '');
    mkdirSync(join(dir, 'recipes'));
    writeFileSync(join(dir, 'recipes', 'site.yml'), RECIPE);
    const r = await onTerminal(
      ['bootstrap', '--known-hosts', join(dir, 'known_hosts'), '--state-dir', join(dir, 'state')],
      [
        [/Host to set up/, `${where()}\r`],
        [/How do you log in/, '\x1b[B\r'],
        [/Public key to install/, `${keyPath}.pub\r`],
        [/Trust this host key/, 'y\r'],
        [/Password for root@/, `${password}\r`],
        [/Recipe to apply/, '\r'],
        [/Name of the site/, '\x03'],
      ],
      { env: env(), cwd: dir },
    );
    expect(r.code, r.screen.slice(-3000)).toBe(130);
    expect(r.screen).toContain('stopped at the prompt; nothing was changed');
    expect((await asRoot('test -e /root/.ssh')).code).toBe(1);
    expect((await asRoot('test -e /etc/hostsmith-site')).code).toBe(1);
    expect(r.screen).not.toContain(password);
  });

  it('host key: "no" → exit 4 with nothing recorded; a CHANGED key is refused (exit 4) without a question', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = temp('hostsmith-bs-');
    const knownHosts = join(dir, 'known_hosts');
    const args = ['bootstrap', 'recipe.yml', '--known-hosts', knownHosts, '--state-dir', join(dir, 'state')];
    // Enter at every question: key login with ~/.ssh/id_ed25519, and "no" is the default at the host key.
    const no = await onTerminal(
      args,
      [
        [/Host to set up/, `${where()}\r`],
        [/How do you log in/, '\r'],
        [/Private key file/, '\r'],
        [/Trust this host key/, '\r'],
      ],
      { env: env(), cwd: dir },
    );
    expect(no.code, no.screen.slice(-2000)).toBe(4);
    expect(no.screen).toMatch(/ED25519 key fingerprint is SHA256:[A-Za-z0-9+/]{43}\./);
    expect(no.screen).toMatch(/host key not trusted, so hostsmith did not log in; nothing was recorded or changed/);
    expect(() => readFileSync(knownHosts)).toThrow();
    // A known_hosts that records another ED25519 key for the host: refused as in normal runs.
    const other = join(dir, 'other');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    writeFileSync(knownHosts, `[${h.address}]:${h.port} ${readFileSync(`${other}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    const before = readFileSync(knownHosts, 'utf8');
    const changed = await onTerminal(
      args,
      [
        [/Host to set up/, `${where()}\r`],
        [/How do you log in/, '\r'],
        [/Private key file/, '\r'],
      ],
      { env: env(), cwd: dir },
    );
    expect(changed.code, changed.screen.slice(-2000)).toBe(4);
    expect(changed.screen).toContain(`HOST KEY CHANGED for [${h.address}]:${h.port}`);
    expect(changed.screen).not.toContain('Trust this host key');
    expect(readFileSync(knownHosts, 'utf8')).toBe(before);
  });

  it('Enter through a known inventory host: every question has a default, applying included', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({
      'recipes/a-other.yml': OTHER,
      'recipes/site.yml': RECIPE,
      'inventory.yml': `defaults: { user: deploy, identity: ${sb.keyPath}, sudo: true }\nhosts:\n  ${h.name}: { address: ${h.address}, port: ${h.port} }\n`,
    });
    dirs.push(dir);
    const before = readFileSync(join(dir, 'inventory.yml'), 'utf8');
    const r = await onTerminal(
      ['bootstrap', '-i', 'inventory.yml', '--known-hosts', sb.knownHostsPath, '--state-dir', join(dir, 'state')],
      [
        [/Host to set up/, '\r'],
        [/How do you log in/, '\r'],
        [/Private key file/, '\r'],
        [/Recipe to apply/, '\r'],
        [/Apply these 1 change\(s\)\? \(Y\/n\)/, '\r'],
      ],
      { env: env(), cwd: dir },
    );
    expect(r.code, r.screen.slice(-3000)).toBe(0);
    expect(r.screen).toContain(`Setting up deploy@${h.address}:${h.port} (${h.name} in inventory.yml)`);
    expect(r.screen).toMatch(/Done \(run \S+\)/);
    expect(r.screen).not.toContain('to an inventory, so later runs');
    expect((await asRoot('test -d /etc/hostsmith-other && rmdir /etc/hostsmith-other')).code).toBe(0);
    expect(readFileSync(join(dir, 'inventory.yml'), 'utf8')).toBe(before);
  });

  it('password once → key installed; host key trusted; recipe and vars asked; applied; host saved to the inventory', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({ 'recipes/a-other.yml': OTHER, 'recipes/site.yml': RECIPE, 'inventory.yml': INVENTORY });
    dirs.push(dir);
    const knownHosts = join(dir, 'known_hosts');
    const state = join(dir, 'state');
    // The process list, read while bootstrap runs: the password must never be in it.
    let ps = '';
    const poll = setInterval(() => {
      try {
        ps += execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
      } catch {
        /* a ps that fails this once is read again */
      }
    }, 150);
    let r: { code: number; screen: string };
    try {
      r = await onTerminal(
        ['bootstrap', '-i', join(dir, 'inventory.yml'), '--known-hosts', knownHosts, '--state-dir', state],
        [
          [/Host to set up/, `${where()}\r`],
          [/How do you log in/, '\x1b[B\r'],
          [/Public key to install/, `${keyPath}.pub\r`],
          [/Trust this host key/, 'y\r'],
          [/Password for root@/, `${password}\r`],
          [/Recipe to apply/, '\x1b[B\r'],
          [/Name of the site/, 'Bad Name\r'],
          [/does not match pattern/, 'blog-1\r'],
          [/Port the site listens on/, '\r'],
          [/Apply these 2 change\(s\)\?/, 'y\r'],
          [/to an inventory, so later runs can name it/, '\r'],
          [/Inventory file/, '\r'],
          [/Name for this host in the inventory/, 'newbox\r'],
        ],
        { env: env(), cwd: dir, timeoutMs: 60_000 },
      );
    } finally {
      clearInterval(poll);
    }
    const screen = r.screen;
    expect(r.code, screen.slice(-4000)).toBe(0);
    // What the person saw: ssh's fingerprint line, the pattern's reason, the plan, progress, the summary.
    const blob = readFileSync(join(sb.dir, h.name, 'keys', 'ssh_host_ed25519_key.pub'), 'utf8');
    const fp = execFileSync('ssh-keygen', ['-lf', '-'], { input: blob, encoding: 'utf8' }).split(' ')[1]!;
    expect(screen).toContain(`ED25519 key fingerprint is ${fp}.`);
    expect(screen).toMatch(/site_name: does not match pattern \^\[a-z\]\[a-z0-9-\]\*\$; type it again/);
    expect(screen).toContain('A small site config for the bootstrap test');
    expect(screen).toMatch(/Installed .*id_ed25519\.pub in root's ~\/\.ssh\/authorized_keys/);
    expect(screen).toMatch(/\+name=blog-1/);
    expect(screen).toMatch(/Done \(run \S+\)/);
    expect(screen).toContain('Saved to inventory.yml: newbox');

    // Plain ssh with the new key alone (BatchMode: no password possible) logs in as root.
    const byKey = await sshExec({ address: h.address, port: h.port, keyPath, knownHostsPath: knownHosts }, 'stat -c %a /root/.ssh /root/.ssh/authorized_keys; cat /etc/hostsmith-site/site.conf');
    expect(byKey.code, byKey.stderr).toBe(0);
    expect(byKey.stdout).toBe('700\n600\nname=blog-1\nport=8080\n');
    expect((await asRoot('test -e /etc/hostsmith-other')).code).toBe(1);
    // The host key is in the test's known_hosts, under [address]:port.
    const found = execFileSync('ssh-keygen', ['-F', `[${h.address}]:${h.port}`, '-f', knownHosts], { encoding: 'utf8' });
    expect(found).toContain(blob.split(' ')[1]!);
    // The inventory gained the host and kept its comments and order.
    const inv = readFileSync(join(dir, 'inventory.yml'), 'utf8');
    // With the vars typed for it (as their types), so the suggested command is this very run.
    expect(inv).toBe(
      INVENTORY.replace(
        '  web1: { address: 203.0.113.10 }\n',
        `  web1: { address: 203.0.113.10 }\n  newbox: { address: ${h.address}, port: ${h.port}, user: root, identity: ~/.ssh/id_ed25519, vars: { site_name: blog-1, site_port: 8080 } }\n`,
      ),
    );
    expect(screen).toMatch(/Next time: hostsmith apply recipes\/site\.yml -i inventory\.yml --hosts newbox/);
    // And it works as an inventory: the suggested command, no vars given, reaches the host and finds nothing to change.
    const again = await hostsmith(['plan', join(dir, 'recipes/site.yml'), '-i', join(dir, 'inventory.yml'), '--hosts', 'newbox', '--known-hosts', knownHosts, '--state-dir', state], { env: env() });
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain('Plan: nothing to change.');
    // The password is nowhere: the screen, the journal, the inventory, known_hosts, the process list.
    for (const [what, text] of [
      ['screen', screen],
      ['journal', journalText(state)],
      ['inventory', inv],
      ['known_hosts', readFileSync(knownHosts, 'utf8')],
      ['process list', ps],
    ] as const) {
      expect(text.includes(password), `${what} shows the password`).toBe(false);
    }
    expect(journalText(state)).toContain('blog-1');
    expect(ps).toContain('bootstrap');
  });
});
