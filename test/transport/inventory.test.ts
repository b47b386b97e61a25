import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { loadConfig } from '../../src/cli/config.js';
import { loadInventory, resolveTargets } from '../../src/transport/targets.js';

function file(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-inv-'));
  writeFileSync(join(dir, name), text);
  return join(dir, name);
}

async function issues(p: Promise<unknown> | (() => unknown)): Promise<string[]> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (e instanceof InputError) return e.issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`);
    throw e;
  }
  throw new Error('expected an InputError');
}

describe('inventory and config files report every problem at file:line:col', () => {
  it('inventory: wrong types and unknown keys, each at its place', async () => {
    const f = file('inv.yml', 'hosts:\n  h1: { adress: 1.2.3.4, port: x }\n');
    expect((await issues(loadInventory(f))).sort()).toEqual(['2:32 hosts.h1.port: expected number, got string', '2:9 hosts.h1.adress: unknown key "adress" (did you mean "address"?)']);
  });

  it('config: the same for hostsmith.config.yml', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostsmith-cfg-'));
    writeFileSync(join(dir, 'hostsmith.config.yml'), 'concurrency: many\nbogus: 1\n');
    expect(await issues(() => loadConfig(dir, { XDG_CONFIG_HOME: join(dir, 'none') }))).toEqual([
      '1:14 concurrency: expected number, got string',
      expect.stringMatching(/^2:1 bogus: unknown key "bogus"/),
    ]);
  });

  it('resolves inventory hosts with group and host vars, identities from the inventory folder', async () => {
    const f = file(
      'inv.yml',
      'defaults: { user: deploy, identity: keys/id }\nhosts:\n  web1: { address: 10.0.0.1, groups: [web], vars: { a: host } }\ngroups:\n  web: { vars: { a: group, b: group } }\n',
    );
    const [t] = resolveTargets({ hosts: 'web', inventory: await loadInventory(f) });
    expect(t).toMatchObject({ name: 'web1', host: '10.0.0.1', port: 22, user: 'deploy', vars: { a: 'host', b: 'group' } });
    expect(t!.identities[0]).toBe(join(f, '..', 'keys/id'));
  });
});

describe('--hosts: only hosts, addresses and inventory names become targets; the rest is exit 2 before any lookup', () => {
  const inv = () => loadInventory(file('inv.yml', 'hosts:\n  web1: { address: 10.0.0.1, groups: [web] }\n  web2: { address: 10.0.0.2, groups: [web] }\n'));
  const sshConfig = file('config', 'Host bastion\n  HostName 10.9.9.9\nHost *.corp\n  User ops\nHost *\n  User any\n');
  const refused = async (hosts: string) => {
    try {
      resolveTargets({ hosts, inventory: await inv(), sshConfigFile: sshConfig });
    } catch (e) {
      expect(e).toBeInstanceOf(InputError);
      expect((e as InputError).exitCode).toBe(2);
      return (e as Error).message;
    }
    throw new Error(`--hosts ${JSON.stringify(hosts)} was accepted`);
  };

  it.each([
    ['', /--hosts is empty/],
    [' , ', /--hosts is empty/],
    ['-oProxyCommand=touch /tmp/x', /is not a host name/],
    ['web 3', /is not a host name/],
    ['web3', /"web3" is neither in the inventory nor in ~\/.ssh\/config nor an address.*did you mean "web1"/],
    ['-l@host.example', /is not a user name/],
  ])('%j is refused', async (hosts, why) => {
    expect(await refused(hosts)).toMatch(why);
  });

  it.each([['root@10.0.0.9'], ['example.com'], ['localhost'], ['db.example.com:2222'], ['[::1]:22'], ['bastion'], ['build.corp'], ['web1'], ['web'], ['local']])('%j is a target', async (hosts) => {
    expect(resolveTargets({ hosts, inventory: await inv(), sshConfigFile: sshConfig }).length).toBeGreaterThan(0);
  });
});

describe('host patterns, as Ansible users write them', () => {
  const inv = () =>
    loadInventory(
      file(
        'inv.yml',
        'hosts:\n  web1: { address: 10.0.0.1, groups: [web, prod] }\n  web2: { address: 10.0.0.2, groups: [web] }\n  db1: { address: 10.0.0.3, groups: [db, prod] }\n  cache1: { address: 10.0.0.4 }\ngroups:\n  edge: { hosts: [cache1] }\n',
      ),
    );
  const pick = async (hosts: string | undefined, limit?: string) => resolveTargets({ hosts, limit, inventory: await inv(), sshConfigFile: '/nonexistent' }).map((t) => t.name);
  const rows: Array<[string | undefined, string | undefined, string[]]> = [
    [undefined, undefined, ['web1', 'web2', 'db1', 'cache1']],
    ['all', undefined, ['web1', 'web2', 'db1', 'cache1']],
    ['web*', undefined, ['web1', 'web2']],
    ['web', undefined, ['web1', 'web2']],
    ['web,!web2', undefined, ['web1']],
    ['all,!db1', undefined, ['web1', 'web2', 'cache1']],
    ['!db1', undefined, ['web1', 'web2', 'cache1']],
    ['web,&prod', undefined, ['web1']],
    ['*1', undefined, ['web1', 'db1', 'cache1']],
    ['edge,db1', undefined, ['cache1', 'db1']],
    ['all', 'prod', ['web1', 'db1']],
    [undefined, 'web1,db1', ['web1', 'db1']],
    ['web,10.9.9.9', undefined, ['web1', 'web2', '10.9.9.9']],
  ];
  it.each(rows)('--hosts %j --limit %j selects %j', async (hosts, limit, want) => {
    expect(await pick(hosts, limit)).toEqual(want);
  });

  it.each([
    ['wab*', undefined, /--hosts: "wab\*" matches no host or group of the inventory/],
    ['web,&nope', undefined, /"nope" matches no host or group/],
    ['web', 'db1', /--limit db1 leaves none of the hosts/],
    ['all', '', /--limit is empty/],
  ])('--hosts %j --limit %j is exit 2', async (hosts, limit, why) => {
    await expect(pick(hosts, limit)).rejects.toSatisfy((e: unknown) => e instanceof InputError && e.exitCode === 2 && why.test(e.message));
  });
});
