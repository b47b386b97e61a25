/** The `group` step on real hosts; the account files are compared byte for byte through plain ssh. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';

const ACCOUNTS = 'for f in passwd group gshadow; do echo "== $f"; cat /etc/$f; done';

describeHosts('group step on real hosts', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });
  const apply = (recipe: string, host: string) => hostsmith(['apply', recipe, '--hosts', host, '--yes', '--json', ...sandboxArgs(sandbox(), state)]);

  it('creates groups with a gid or as system groups; a second apply changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sb.restart(h, { wipe: true });
    const dir = fixture({
      'r.yml': `name: groups
steps:
  - name: App group
    group: { name: app, gid: 1500 }
  - name: Service group
    group: { name: svc, system: true }
  - name: Existing
    group: { name: sudo }
`,
    });
    const r1 = await apply(join(dir, 'r.yml'), h.name);
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1).map((e) => [e.status, e.summary])).toEqual([
      ['changed', 'create group app (gid 1500)'],
      ['changed', 'create group svc (system)'],
      ['unchanged', 'group sudo is as wanted (gid 27)'],
    ]);
    expect(await sshOk(sb, h, 'getent group app; grep ^app: /etc/gshadow')).toBe('app:x:1500:\napp:!::\n');
    const svcGid = Number((await sshOk(sb, h, 'getent group svc')).split(':')[2]);
    expect(svcGid).toBeLessThan(1000);

    const r2 = await apply(join(dir, 'r.yml'), h.name);
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => e.status)).toEqual(['unchanged', 'unchanged', 'unchanged']);
  });

  it('a later failure restores /etc/group, /etc/gshadow and /etc/passwd byte for byte (create, gid change, removal)', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sb.restart(h, { wipe: true });
    // legacy has members and a group after it, so its line must come back in place with them;
    // svcgrp is a user's primary group, so changing its gid rewrites that user's passwd line.
    await sshOk(
      sb,
      h,
      'groupadd -g 1600 legacy && gpasswd -a nosudo legacy && gpasswd -a deploy legacy && gpasswd -A deploy legacy && groupadd -g 1700 zlast && groupadd -g 1800 svcgrp && useradd -M -g svcgrp svcuser',
    );
    const dir = fixture({
      'r.yml': `name: groups
steps:
  - name: App group
    group: { name: app, gid: 1500 }
  - name: Drop legacy
    group: { name: legacy, state: absent }
  - name: Move svcgrp
    group: { name: svcgrp, gid: 1900 }
  - name: Breaks
    command: { run: "exit 4" }
`,
    });
    const before = await sshOk(sb, h, ACCOUNTS);
    expect(before).toContain('legacy:x:1600:nosudo,deploy\n');
    expect(before).toContain('legacy:!:deploy:nosudo,deploy\n');
    const r = await apply(join(dir, 'r.yml'), h.name);
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r).map((e) => [e.step, e.status, e.summary])).toEqual([
      ['App group', 'changed', 'create group app (gid 1500)'],
      ['Drop legacy', 'changed', 'remove group legacy (gid 1600, members nosudo, deploy)'],
      ['Move svcgrp', 'changed', 'modify group svcgrp: gid 1800 → 1900; primary group of svcuser, whose gid follows'],
      ['Breaks', 'failed', 'run: exit 4'],
    ]);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back', 'rolled-back', 'rolled-back']);
    expect(await sshOk(sb, h, ACCOUNTS)).toBe(before);
  });

  it('removes a group for good when nothing fails, and refuses to remove a primary group', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'getent group gone >/dev/null || groupadd gone');
    const dir = fixture({
      'ok.yml': `name: rm\nsteps:\n  - name: Gone\n    group: { name: gone, state: absent }\n`,
      'bad.yml': `name: rm\nsteps:\n  - name: Primary\n    group: { name: nosudo, state: absent }\n`,
    });
    const r = await apply(join(dir, 'ok.yml'), h.name);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect((await sshRun(sb, h, 'getent group gone || grep ^gone: /etc/gshadow')).code).not.toBe(0);
    const before = await sshOk(sb, h, ACCOUNTS);
    const bad = await apply(join(dir, 'bad.yml'), h.name);
    expect(bad.code).toBe(1);
    expect(stepEvents(bad)[0]!.error).toBe('group nosudo is the primary group of nosudo; remove or change that user first');
    expect(await sshOk(sb, h, ACCOUNTS)).toBe(before);
  });
});
