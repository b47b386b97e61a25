/**
 * `unarchive` on a real host: a tar.gz made here by the system tar and a zip, both shipped from
 * beside the recipe, and a tar already on the host (remote_src). dest already holds a file the
 * archive replaces and one it leaves alone: rollback, undo and recover must put back the one and
 * never touch the other. Then a hostile local user plants links in a dest it owns.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, expect, it } from 'vitest';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { tarOf, zipOf } from '../steps/archive-fixtures.js';
import { fixture, hostsmith, sandboxArgs, stepEvents, type CliResult } from './cli.js';
import { stepBattery } from './step-battery.js';

/** app-1.2.tar.gz, as a release tarball is: one top folder, a tool, a config, docs, a link. */
function appTarball(): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'hs-unarc-src-'));
  try {
    const top = join(dir, 'app-1.2');
    mkdirSync(join(top, 'bin'), { recursive: true });
    mkdirSync(join(top, 'share/doc'), { recursive: true });
    writeFileSync(join(top, 'bin/app'), '#!/bin/sh\necho "app 1.2"\n', { mode: 0o755 });
    writeFileSync(join(top, 'app.conf'), 'port = 8080\n', { mode: 0o640 });
    writeFileSync(join(top, 'share/doc/README'), 'read me\n');
    symlinkSync('bin/app', join(top, 'current'));
    execFileSync('tar', ['-czf', join(dir, 'app.tgz'), '--owner=0', '--group=0', '-C', dir, 'app-1.2']);
    return readFileSync(join(dir, 'app.tgz'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ZIP = zipOf([
  { name: 'site/index.html', data: '<h1>hi</h1>\n' },
  { name: 'site/img/', type: 'dir' },
  { name: 'site/img/logo.svg', data: '<svg/>\n' },
]);
const REMOTE = tarOf([{ name: 'tool.sh', data: 'echo tool\n', mode: 0o755 }]);

stepBattery('unarchive', {
  steps: `  - name: Unpack app
    unarchive: { src: files/app-1.2.tar.gz, dest: /opt/hs-app, strip_components: 1 }
  - name: Unpack site
    unarchive: { src: files/site.zip, dest: /srv/hs-www/site, strip_components: 1, owner: nosudo, group: nosudo }
  - name: Unpack tool
    unarchive: { remote_src: /var/tmp/hs-tool.tar, dest: /usr/local/lib/hs-tool, creates: /usr/local/lib/hs-tool/tool.sh }
`,
  files: { 'files/app-1.2.tar.gz': appTarball(), 'files/site.zip': ZIP },
  async setup(sb, h) {
    // app.conf is replaced (and put back); keep.txt is not the archive's and stays as it is.
    await sshOk(sb, h, "mkdir -p /opt/hs-app && printf 'old conf\\n' > /opt/hs-app/app.conf && chmod 0600 /opt/hs-app/app.conf && printf 'mine\\n' > /opt/hs-app/keep.txt");
    await sshOk(sb, h, `printf %s ${REMOTE.toString('base64')} | base64 -d > /var/tmp/hs-tool.tar`);
  },
  async verify(sb, h) {
    const listing = await sshOk(sb, h, 'cd /opt/hs-app && find . -printf "%p %y %m %u\\n" | sort');
    expect(listing).toBe(
      [
        '. d 755 root',
        './app.conf f 640 root',
        './bin d 755 root',
        './bin/app f 755 root',
        './current l 777 root',
        './keep.txt f 644 root',
        './share d 755 root',
        './share/doc d 755 root',
        './share/doc/README f 644 root',
        '',
      ].join('\n'),
    );
    expect(await sshOk(sb, h, '/opt/hs-app/current; cat /opt/hs-app/app.conf /opt/hs-app/keep.txt; readlink /opt/hs-app/current')).toBe('app 1.2\nport = 8080\nmine\nbin/app\n');
    expect(await sshOk(sb, h, 'cd /srv/hs-www && find . -printf "%p %y %u:%g\\n" | sort')).toBe(
      ['. d root:root', './site d nosudo:nosudo', './site/img d nosudo:nosudo', './site/img/logo.svg f nosudo:nosudo', './site/index.html f nosudo:nosudo', ''].join('\n'),
    );
    expect(await sshOk(sb, h, 'sh /usr/local/lib/hs-tool/tool.sh')).toBe('tool\n');
  },
});

describeHosts('unarchive: a hostile local user owns dest and plants links in it', () => {
  const sandbox = useSandbox(1);
  const temps: string[] = [];
  const host = () => sandbox().hosts[0]!;
  const nosudo = (cmd: string) => sshOk(sandbox(), host(), cmd, { user: 'nosudo' });
  const root = (cmd: string) => sshOk(sandbox(), host(), cmd);
  const TGZ = execFileSync('gzip', ['-c'], {
    input: tarOf([
      { name: 'conf/new.conf', data: 'owned by root?\n' },
      { name: 'app.conf', data: 'managed\n' },
    ]),
  });
  const apply = async (dest: string): Promise<CliResult> => {
    const dir = fixture({ 'r.yml': `name: hostile-unarchive\nsteps:\n  - name: Unpack\n    unarchive: { src: files/evil.tgz, dest: ${dest} }\n`, 'files/evil.tgz': TGZ });
    const state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    temps.push(dir, state);
    return hostsmith(['apply', join(dir, 'r.yml'), '--yes', '--hosts', host().name, '--json', ...sandboxArgs(sandbox(), state)]);
  };
  /** /etc as it matters here: nothing new in it, nothing of ours in it. */
  const etc = () => root('ls -la --time-style=+ /etc | md5sum; test ! -e /etc/new.conf && test ! -e /etc/app.conf && echo clean');
  const said = (r: CliResult) => `exit ${r.code}\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`;

  afterEach(() => root('rm -rf /tmp/hs-unarc /tmp/hs-unarc2'));
  afterAll(() => temps.forEach((d) => rmSync(d, { recursive: true, force: true })));

  it('a link to /etc where the archive has a folder: the plan refuses it, nothing is written into /etc', async () => {
    await nosudo('mkdir /tmp/hs-unarc && ln -s /etc /tmp/hs-unarc/conf');
    const before = await etc();
    expect(before).toMatch(/clean\n$/);
    const r = await apply('/tmp/hs-unarc');
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toContain('/tmp/hs-unarc/conf is a symbolic link on the host where evil.tgz has a folder; hostsmith does not unpack through or over it');
    expect(await etc()).toBe(before);
    expect(await sshOk(sandbox(), host(), 'ls -A /tmp/hs-unarc')).toBe('conf\n');
  });

  it('a link where the archive has a file: the link itself is replaced, its target never written', async () => {
    await nosudo('mkdir /tmp/hs-unarc && ln -s /etc/app.conf /tmp/hs-unarc/app.conf');
    const before = await etc();
    const r = await apply('/tmp/hs-unarc');
    expect(r.code, said(r)).toBe(0);
    expect(stepEvents(r).map((e) => e.summary)).toEqual(['unpack evil.tgz into /tmp/hs-unarc: 1 new file, 1 replaced, 1 new folder']);
    expect(await etc()).toBe(before);
    expect(await root('stat -c "%F %U" /tmp/hs-unarc/app.conf; cat /tmp/hs-unarc/app.conf /tmp/hs-unarc/conf/new.conf')).toBe('regular file root\nmanaged\nowned by root?\n');
  });

  it('dest itself planted as a link to /etc: refused naming it, /etc unchanged', async () => {
    await nosudo('ln -s /etc /tmp/hs-unarc2');
    const before = await etc();
    const r = await apply('/tmp/hs-unarc2');
    expect(r.code, said(r)).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/refusing \/tmp\/hs-unarc2: it is a symbolic link/);
    expect(await etc()).toBe(before);
    expect((await sshRun(sandbox(), host(), 'test -e /etc/conf')).code).not.toBe(0);
  });
});
