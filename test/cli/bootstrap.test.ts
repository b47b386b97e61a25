/**
 * bootstrap's pieces that need no host: the inventory writer, the fingerprint line, known_hosts
 * lines, key files, the authorized_keys installer (run by the local shell), and what is offered.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as loadYaml } from 'yaml';
import { checkPrivateKey, INSTALL_KEY_SCRIPT, installAuthorizedKey, readPublicKey, type PublicKey } from '../../src/cli/bootstrap/authorized-key.js';
import { hostSuggestions, recipeChoices, sshConfigHostNames } from '../../src/cli/bootstrap/choices.js';
import { addHostToInventory, addHostToInventoryText } from '../../src/transport/inventory-write.js';
import { appendKnownHost, fingerprintMessage, keysFor, knownHostsLine } from '../../src/transport/known-hosts.js';
import { LocalTransport } from '../../src/transport/local.js';
import { loadInventory } from '../../src/transport/targets.js';

const dirs: string[] = [];
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), 'hostsmith-bs-unit-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A fresh key pair from ssh-keygen: [private path, public key line]. */
function keyPair(dir: string, type = 'ed25519'): [string, string] {
  const f = join(dir, `id_${type}`);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', 'me@laptop', '-f', f]);
  return [f, readFileSync(`${f}.pub`, 'utf8').trim()];
}
const blobOf = (pubLine: string) => Buffer.from(pubLine.split(' ')[1]!, 'base64');

const INVENTORY = `# team inventory: keep this comment
defaults: { user: deploy, port: 22 }   # most hosts
hosts:
  # web tier
  web1: { address: 203.0.113.10, groups: [web] }
  web2: { address: 203.0.113.11, groups: [web] }   # spare
groups:
  web: { vars: { upstream_port: 8080 } }
# end of file
`;

describe('inventory writer', () => {
  it('refuses an inventory that is not UTF-8, at the bad byte, and leaves it as it was', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostsmith-inv-'));
    const file = join(dir, 'inventory.yml');
    const bytes = Buffer.concat([Buffer.from('hosts:\n  web1: { address: caf'), Buffer.from([0xe9]), Buffer.from(' }\n')]);
    writeFileSync(file, bytes);
    await expect(addHostToInventory(file, 'db1', { address: '10.0.0.9' })).rejects.toThrow(/inventory\.yml:2:.*not UTF-8/);
    expect(readFileSync(file).equals(bytes)).toBe(true);
    rmSync(dir, { recursive: true, force: true });
  });

  it('adds the host at the end of hosts:, every other byte kept (comments, order, spacing)', () => {
    const out = addHostToInventoryText(INVENTORY, 'db1', { address: '127.0.0.5', port: 2222, user: 'root', identity: '~/.ssh/id_ed25519' });
    expect(out).toBe(INVENTORY.replace('# spare\n', '# spare\n  db1: { address: 127.0.0.5, port: 2222, user: root, identity: ~/.ssh/id_ed25519 }\n'));
  });

  it('follows block style when the hosts are written as blocks', () => {
    const text = 'hosts:\n    a:\n        address: x\n        port: 2\n# trailing\n';
    expect(addHostToInventoryText(text, 'b', { address: 'y' })).toBe('hosts:\n    a:\n        address: x\n        port: 2\n    b:\n      address: y\n# trailing\n');
  });

  it.each([
    ['a missing file', undefined, 'hosts:\n  n1: { address: 10.0.0.1 }\n'],
    ['an empty file', '', 'hosts:\n  n1: { address: 10.0.0.1 }\n'],
    ['a file with only a comment', '# nothing yet\n', '# nothing yet\nhosts:\n  n1: { address: 10.0.0.1 }\n'],
    ['no hosts key', 'defaults: { user: root }\n', 'defaults: { user: root }\nhosts:\n  n1: { address: 10.0.0.1 }\n'],
    ['no trailing newline', 'defaults: { user: root }', 'defaults: { user: root }\nhosts:\n  n1: { address: 10.0.0.1 }\n'],
    ['hosts: {}', 'hosts: {}   # none\ngroups: {}\n', 'hosts: # none\n  n1: { address: 10.0.0.1 }\ngroups: {}\n'],
    ['an empty hosts:', 'hosts:\ngroups: {}\n', 'hosts:\n  n1: { address: 10.0.0.1 }\ngroups: {}\n'],
  ])('%s', (_what, before, after) => {
    const out = addHostToInventoryText(before, 'n1', { address: '10.0.0.1' });
    expect(out).toBe(after);
  });

  it('refuses a name already taken, hosts that is not a map, and text that is not YAML', () => {
    expect(() => addHostToInventoryText(INVENTORY, 'web1', { address: 'x' })).toThrow(/a host named "web1" is already in the inventory/);
    expect(() => addHostToInventoryText('hosts: [a, b]\n', 'n', { address: 'x' })).toThrow(/`hosts:` is not a map/);
    expect(() => addHostToInventoryText('hosts: {a: [\n', 'n', { address: 'x' })).toThrow(/not valid YAML/);
  });

  it('a flow-style inventory is still edited with comments and order kept', () => {
    const out = addHostToInventoryText('{ hosts: { a: { address: x } }, groups: {} }  # all on one line\n', 'b', { address: 'y' });
    expect(out).toContain('# all on one line');
    expect(Object.keys((loadYaml(out) as { hosts: object }).hosts)).toEqual(['a', 'b']);
  });

  it('writes the file (created when missing), which then loads as an inventory with the new host', async () => {
    const dir = temp();
    const file = join(dir, 'inventory.yml');
    expect(await addHostToInventory(file, 'n1', { address: '10.0.0.1', port: 2200 })).toEqual({ created: true });
    writeFileSync(file, INVENTORY);
    execFileSync('chmod', ['640', file]);
    expect(await addHostToInventory(file, 'n2', { address: '10.0.0.2', user: 'root', sudo: true })).toEqual({ created: false });
    expect(statSync(file).mode & 0o777).toBe(0o640);
    const inv = await loadInventory(file);
    expect(Object.keys(inv.hosts ?? {})).toEqual(['web1', 'web2', 'n2']);
    expect(inv.hosts!.n2).toEqual({ address: '10.0.0.2', user: 'root', sudo: true });
    expect(readFileSync(file, 'utf8').startsWith('# team inventory: keep this comment\n')).toBe(true);
    await expect(addHostToInventory(file, 'n2', { address: 'x' })).rejects.toThrow(/already in the inventory/);
  });
});

describe('host keys', () => {
  it('shows the fingerprint exactly as ssh-keygen computes it, with the type as ssh names it', () => {
    const dir = temp();
    for (const [type, label] of [
      ['ed25519', 'ED25519'],
      ['ecdsa', 'ECDSA'],
      ['rsa', 'RSA'],
    ] as const) {
      const [priv] = keyPair(dir, type);
      const fp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${priv}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
      expect(fp).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
      expect(fingerprintMessage(blobOf(readFileSync(`${priv}.pub`, 'utf8')))).toBe(`${label} key fingerprint is ${fp}.`);
    }
  });

  it('known_hosts lines: bare host on port 22, [host]:port otherwise; ssh-keygen -F finds them', async () => {
    const dir = temp();
    const [, pub] = keyPair(dir);
    const blob = blobOf(pub);
    expect(knownHostsLine('203.0.113.10', 22, blob)).toBe(`203.0.113.10 ${pub.split(' ').slice(0, 2).join(' ')}`);
    expect(knownHostsLine('203.0.113.10', 2222, blob)).toBe(`[203.0.113.10]:2222 ${pub.split(' ').slice(0, 2).join(' ')}`);
    const file = join(dir, 'sub', 'known_hosts');
    await appendKnownHost(file, '203.0.113.10', 22, blob);
    writeFileSync(file, readFileSync(file, 'utf8') + '# no newline at the end');
    await appendKnownHost(file, 'h.example', 2222, blob);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'sub')).mode & 0o777).toBe(0o700);
    expect(execFileSync('ssh-keygen', ['-F', '203.0.113.10', '-f', file], { encoding: 'utf8' })).toContain(pub.split(' ')[1]);
    expect(execFileSync('ssh-keygen', ['-F', '[h.example]:2222', '-f', file], { encoding: 'utf8' })).toContain(pub.split(' ')[1]);
    expect(keysFor(readFileSync(file, 'utf8'), 'h.example').keys).toEqual([]);
    expect(readFileSync(file, 'utf8')).toContain('# no newline at the end\n[h.example]:2222 ');
  });
});

describe('key files', () => {
  it('reads a public key and checks its private key beside it', () => {
    const dir = temp();
    const [priv, pub] = keyPair(dir);
    const k = readPublicKey(`${priv}.pub`) as PublicKey;
    expect(k).toEqual({ line: pub, type: 'ssh-ed25519', blob: pub.split(' ')[1] });
    expect(checkPrivateKey(priv, k)).toBe(true);
    const [other] = keyPair(temp());
    expect(checkPrivateKey(other, k)).toMatch(/is not the private key of that public key/);
    expect(readPublicKey(priv)).toMatch(/is a private key: give its public key/);
    writeFileSync(join(dir, 'bad.pub'), 'ssh-ed25519 not-base64!\n');
    expect(readPublicKey(join(dir, 'bad.pub'))).toMatch(/is not an OpenSSH public key/);
    expect(readPublicKey(join(dir, 'nope.pub'))).toMatch(/cannot read/);
    expect(checkPrivateKey(`${priv}.pub`)).toMatch(/not a private key/);
    const locked = join(dir, 'locked');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'pass phrase', '-f', locked]);
    expect(checkPrivateKey(locked)).toMatch(/passphrase-protected: load it into ssh-agent/);
  });

  it('installs the key: ~/.ssh 0700 and authorized_keys 0600 when missing, appended once, other lines kept', async () => {
    const home = temp();
    const [priv, pub] = keyPair(temp());
    const key = readPublicKey(`${priv}.pub`) as PublicKey;
    const t = new LocalTransport('test');
    const install = () => t.exec(INSTALL_KEY_SCRIPT, { env: { HOME: home }, stdin: `${key.line}\n` });
    expect((await install()).stdout).toBe('added\n');
    expect(statSync(join(home, '.ssh')).mode & 0o777).toBe(0o700);
    expect(statSync(join(home, '.ssh/authorized_keys')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(home, '.ssh/authorized_keys'), 'utf8')).toBe(`${pub}\n`);
    expect((await install()).stdout).toBe('present\n');
    // An existing file without a final newline, the key there under options and another comment.
    writeFileSync(join(home, '.ssh/authorized_keys'), 'ssh-ed25519 AAAAother someone');
    expect((await install()).stdout).toBe('added\n');
    expect(readFileSync(join(home, '.ssh/authorized_keys'), 'utf8')).toBe(`ssh-ed25519 AAAAother someone\n${pub}\n`);
    writeFileSync(join(home, '.ssh/authorized_keys'), `from="10.0.0.0/8" ${pub.split(' ').slice(0, 2).join(' ')} old-comment\n`);
    expect((await install()).stdout).toBe('present\n');
    // Through the helper, as bootstrap calls it (HOME is this process's: use a transport that sets it).
    const t2 = new (class extends LocalTransport {
      override exec(cmd: string, o: Parameters<LocalTransport['exec']>[1] = {}) {
        return super.exec(cmd, { ...o, env: { ...(o.env ?? {}), HOME: home } });
      }
    })('test');
    expect(await installAuthorizedKey(t2, key)).toBe('present');
  });
});

describe('what bootstrap offers', () => {
  it('ssh config Host names that name one host, with their HostName', () => {
    const text = 'Host *\n  ServerAliveInterval 30\nHost web db\n  HostName 10.0.0.9\nHost *.corp !x.corp\n  User u\nHost jump\n  Port 2200\n';
    expect(sshConfigHostNames(text)).toEqual([{ name: 'web', hostName: '10.0.0.9' }, { name: 'db', hostName: '10.0.0.9' }, { name: 'jump' }]);
  });

  it('inventory hosts first, then ssh config names not already offered', async () => {
    const dir = temp();
    writeFileSync(join(dir, 'inv.yml'), 'defaults: { user: deploy }\nhosts:\n  web: { address: 10.0.0.1, port: 2222 }\n  db: {}\n');
    writeFileSync(join(dir, 'ssh_config'), 'Host web other\n  HostName 10.9.9.9\n');
    const s = hostSuggestions(await loadInventory(join(dir, 'inv.yml')), join(dir, 'ssh_config'));
    expect(s).toEqual([
      { value: 'web', hint: 'inventory: deploy@10.0.0.1:2222' },
      { value: 'db', hint: 'inventory: deploy@db' },
      { value: 'other', hint: '~/.ssh/config: 10.9.9.9' },
    ]);
  });

  it('recipes/*.yml with their descriptions, sorted; an unreadable one is listed with why', () => {
    const dir = temp();
    mkdirSync(join(dir, 'recipes'));
    writeFileSync(join(dir, 'recipes', 'b.yml'), 'name: b\ndescription: Second one\nsteps: []\n');
    writeFileSync(join(dir, 'recipes', 'a.yaml'), 'name: a\nsteps: []\n');
    writeFileSync(join(dir, 'recipes', 'c.yml'), 'name: [\n');
    writeFileSync(join(dir, 'recipes', 'notes.txt'), 'x');
    const list = recipeChoices(dir);
    expect(list.map((r) => r.file)).toEqual(['recipes/a.yaml', 'recipes/b.yml', 'recipes/c.yml']);
    expect(list[1]!.description).toBe('Second one');
    expect(list[2]!.problem).toMatch(/cannot be read/);
    expect(recipeChoices(temp())).toEqual([]);
  });
});
