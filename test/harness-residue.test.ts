/**
 * The zero-residue checker (test/hosts/residue.ts) on a real sandbox host: it reads the host's
 * overlay from this machine and reports exactly the paths whose state differs from a snapshot —
 * what was made and left, deleted, or changed in mode — and nothing for what was changed and put
 * back byte for byte, nor for a directory made and removed again, nor for dpkg/apt churn.
 */
import { expect, it } from 'vitest';
import { residue, snapshotHost } from './hosts/residue.js';
import { sshOk } from './hosts/ssh.js';
import { describeHosts, useSandbox } from './hosts/use-sandbox.js';

describeHosts('residue(): what a host changed since a snapshot, read from its overlay', () => {
  const sandbox = useSandbox(1);
  const sb = () => sandbox();
  const host = () => sandbox().hosts[0]!;
  const ssh = (cmd: string) => sshOk(sb(), host(), cmd);

  it('no change: nothing', async () => {
    const before = await snapshotHost(sb(), host());
    await ssh('true');
    expect(await residue(sb(), host(), before)).toEqual([]);
  });

  it('a file created is reported; once removed again, nothing', async () => {
    const before = await snapshotHost(sb(), host());
    await ssh("mkdir -p /srv/res && printf 'left\\n' > /srv/res/left.txt && chmod 640 /srv/res/left.txt");
    expect(await residue(sb(), host(), before)).toEqual(['/srv/res: added (directory 0755 0:0) (and 1 entry added under it)']);
    await ssh('rm /srv/res/left.txt && touch /srv/res/other');
    expect(await residue(sb(), host(), before)).toEqual(['/srv/res: added (directory 0755 0:0) (and 1 entry added under it)']);
    await ssh('rm -r /srv/res && printf x > /etc/res-new && chown nobody /etc/res-new');
    expect(await residue(sb(), host(), before)).toEqual(['/etc/res-new: added (file 0644 65534:0, 1 bytes)']);
    await ssh('rm /etc/res-new');
    expect(await residue(sb(), host(), before)).toEqual([]);
  });

  it('a lower file modified, then put back byte for byte with its mode and owner: nothing; its mode alone: reported', async () => {
    const before = await snapshotHost(sb(), host());
    await ssh('cp -p /etc/issue.net /root/issue.net.bak && echo extra >> /etc/issue.net');
    const changed = await residue(sb(), host(), before);
    expect(changed).toHaveLength(2);
    expect(changed[0]).toMatch(/^\/etc\/issue\.net: content changed \(\d+ → \d+ bytes\)$/);
    expect(changed[1]).toMatch(/^\/root\/issue\.net\.bak: added \(file 0644 0:0, \d+ bytes\)$/);
    await ssh('cat /root/issue.net.bak > /etc/issue.net && rm /root/issue.net.bak');
    expect(await residue(sb(), host(), before)).toEqual([]);
    await ssh('chmod 600 /etc/issue.net');
    expect(await residue(sb(), host(), before)).toEqual(['/etc/issue.net: mode 0644 → 0600']);
    await ssh('chmod 644 /etc/issue.net && chown daemon /etc/issue.net');
    expect(await residue(sb(), host(), before)).toEqual(['/etc/issue.net: owner 0:0 → 1:0']);
    await ssh('chown root /etc/issue.net');
    expect(await residue(sb(), host(), before)).toEqual([]);
  });

  it('a lower file deleted is reported; made again as it was: nothing', async () => {
    const before = await snapshotHost(sb(), host());
    const content = await ssh('cat /etc/issue');
    await ssh('rm /etc/issue');
    expect(await residue(sb(), host(), before)).toEqual([`/etc/issue: removed (was file 0644 0:0, ${Buffer.byteLength(content)} bytes)`]);
    await sshOk(sb(), host(), 'cat > /etc/issue', { input: content });
    expect(await residue(sb(), host(), before)).toEqual([]);
  });

  it('a directory created then removed: nothing; a lower directory removed and made again empty (opaque): its lost entries', async () => {
    const before = await snapshotHost(sb(), host());
    await ssh('mkdir -p /opt/res/a/b && touch /opt/res/a/b/c && rm -r /opt/res');
    expect(await residue(sb(), host(), before)).toEqual([]);

    const skel = (await ssh('cd /etc/skel && ls -A')).split('\n').filter(Boolean).sort();
    expect(skel.length).toBeGreaterThan(0);
    await ssh('cp -a /etc/skel /root/skel.bak && rm -r /etc/skel && mkdir /etc/skel');
    const lost = await residue(sb(), host(), before, { ignore: ['/root/skel.bak'] });
    expect(lost).toEqual(skel.map((f) => expect.stringMatching(new RegExp(`^/etc/skel/${f.replace(/\./g, '\\.')}: removed \\(was file 0644 0:0, \\d+ bytes\\)$`))));
    // Put back entry by entry: the directory stays opaque in the overlay, and nothing differs.
    await ssh('cp -a /root/skel.bak/. /etc/skel/ && rm -r /root/skel.bak');
    expect(await residue(sb(), host(), before)).toEqual([]);
    await ssh('rm -r /etc/skel');
    expect(await residue(sb(), host(), before)).toEqual([`/etc/skel: removed (was directory 0755 0:0) (and ${skel.length} entr${skel.length === 1 ? 'y' : 'ies'} removed under it)`]);
    await ssh('mkdir /etc/skel');
  });

  it('installing and purging a package by plain apt leaves nothing; a package left installed is reported in dpkg status', async () => {
    const before = await snapshotHost(sb(), host());
    const apt = 'DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0';
    await ssh(`${apt} install hello >/dev/null && ${apt} purge hello >/dev/null`);
    expect(await residue(sb(), host(), before)).toEqual([]);
    await ssh(`${apt} install hello >/dev/null`);
    const left = await residue(sb(), host(), before);
    expect(left).toContain('/var/lib/dpkg/status: records added: hello');
    expect(left).toContainEqual(expect.stringMatching(/^\/usr\/bin\/hello: added \(file 0755 0:0, \d+ bytes\)$/));
    expect(left).toContainEqual(expect.stringMatching(/^\/usr\/share\/doc\/hello: added \(directory 0755 0:0\) \(and \d+ entries added under it\)$/));
    await ssh(`${apt} purge hello >/dev/null`);
    expect(await residue(sb(), host(), before)).toEqual([]);
  });
});
