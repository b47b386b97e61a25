/**
 * The `user` step on real hosts. Account files are compared byte for byte through plain ssh;
 * hostsmith's own code never reads them back for the assertions.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, journalText, sandboxArgs, stepEvents } from './cli.js';

const ACCOUNTS = 'for f in passwd group shadow gshadow subuid subgid; do echo "== $f"; cat /etc/$f; done';
/** Path, content hash, mode, owner and group of everything under the given paths. */
const SNAPSHOT = (paths: string) =>
  `for p in ${paths}; do if [ -e "$p" ]; then find "$p" -xdev \\( -type f -printf '%p %m %u %g ' -exec sh -c 'sha256sum < "$1" | cut -c1-16' _ {} \\; \\) -o \\( ! -type f -printf '%p %m %u %g %y\\n' \\); else echo "$p absent"; fi; done | sort`;

const K1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostsmithTestKeyNumberOne000000000000000 one@test';
const K2 = 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQHostsmithTestKeyNumberTwo two@test';
const K3 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostsmithTestKeyNumberThree0000000000000 three@test';

describeHosts('user step on real hosts', () => {
  const sandbox = useSandbox(2);
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];
  const apply = (recipe: string, host: string, ...more: string[]) => hostsmith(args('apply', recipe, '--hosts', host, '--yes', '--json', ...more));

  it('creates a user with shell, home, groups and exact authorized_keys; again is unchanged', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sb.restart(h, { wipe: true });
    const pub = readFileSync(`${sb.keyPath}.pub`, 'utf8').trim();
    const recipe = (keys: string[]) => `name: users
steps:
  - name: Deploy user
    user:
      name: deploy2
      shell: /bin/bash
      comment: Deploy bot
      groups: [sudo, adm]
      authorized_keys: ${JSON.stringify(keys)}
`;
    const dir = fixture({ 'a.yml': recipe([K1, pub]), 'b.yml': recipe([pub, K3]) });
    const plan = await hostsmith(args('plan', join(dir, 'a.yml'), '--hosts', h.name, '--json'));
    expect(plan.code, plan.stderr).toBe(0);
    expect(stepEvents(plan)[0]).toMatchObject({ status: 'planned', summary: 'create user deploy2 (shell /bin/bash, home /home/deploy2, groups sudo, adm, comment "Deploy bot", 2 authorized keys)' });
    expect(stepEvents(plan)[0]!.diff).toContain(`+${K1}`);
    expect((await sshRun(sb, h, 'getent passwd deploy2')).code).toBe(2);

    const r1 = await apply(join(dir, 'a.yml'), h.name);
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1).map((e) => e.status)).toEqual(['changed']);
    expect(await sshOk(sb, h, 'getent passwd deploy2 | cut -d: -f5-7; id -nG deploy2')).toBe('Deploy bot:/home/deploy2:/bin/bash\ndeploy2 adm sudo\n');
    expect(await sshOk(sb, h, 'cat /home/deploy2/.ssh/authorized_keys')).toBe(`${K1}\n${pub}\n`);
    expect(await sshOk(sb, h, 'stat -c "%n %a %U %G" /home/deploy2 /home/deploy2/.ssh /home/deploy2/.ssh/authorized_keys')).toBe(
      '/home/deploy2 755 deploy2 deploy2\n/home/deploy2/.ssh 700 deploy2 deploy2\n/home/deploy2/.ssh/authorized_keys 600 deploy2 deploy2\n',
    );

    const r2 = await apply(join(dir, 'a.yml'), h.name);
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => [e.status, e.summary])).toEqual([['unchanged', 'user deploy2 is as wanted']]);

    // Modes and content drift is put right; the key list is exact (K1 goes, K3 comes).
    await sshOk(sb, h, 'chmod 755 /home/deploy2/.ssh && chmod 644 /home/deploy2/.ssh/authorized_keys');
    const r3 = await apply(join(dir, 'b.yml'), h.name);
    expect(r3.code, r3.stderr + r3.stdout).toBe(0);
    expect(stepEvents(r3)[0]!.summary).toBe('modify user deploy2: authorized_keys +1 -1, /home/deploy2/.ssh mode 0755 → 0700, /home/deploy2/.ssh/authorized_keys mode 0644 → 0600');
    expect(stepEvents(r3)[0]!.diff).toMatch(new RegExp(`^-${K1}$`, 'm'));
    expect(await sshOk(sb, h, 'cat /home/deploy2/.ssh/authorized_keys; stat -c "%a %U" /home/deploy2/.ssh /home/deploy2/.ssh/authorized_keys')).toBe(`${pub}\n${K3}\n700 deploy2\n600 deploy2\n`);

    // sshd (StrictModes, PAM as on Debian servers) accepts the file: the key logs in as is.
    expect(await sshOk(sb, h, 'id -un', { user: 'deploy2' })).toBe('deploy2\n');
  });

  it('a later failure puts passwd, group, shadow and gshadow back byte for byte (created and modified users)', async () => {
    const sb = sandbox();
    const h = sb.hosts[1]!;
    await sb.restart(h, { wipe: true });
    // nosudo sits in the middle of a member list: re-adding it with usermod would append it.
    await sshOk(sb, h, 'gpasswd -a deploy audio && gpasswd -a nosudo audio && gpasswd -a root audio && gpasswd -a nosudo video');
    expect(await sshOk(sb, h, 'getent group audio')).toBe('audio:x:29:deploy,nosudo,root\n');
    const recipe = `name: users
steps:
  - name: App group
    group: { name: app }
  - name: Deploy user
    user: { name: deploy2, shell: /bin/bash, groups: [sudo, app, audio], authorized_keys: ["${K1}"] }
  - name: Nosudo
    user: { name: nosudo, shell: /bin/sh, groups: [adm, app, video], authorized_keys: ["${K2}", "${K3}"] }
  - name: Breaks
    command: { run: "echo 'later step broke' >&2; exit 7" }
`;
    const dir = fixture({ 'r.yml': recipe });
    const watched = '/home /var/mail';
    const before = await sshOk(sb, h, ACCOUNTS);
    const filesBefore = await sshOk(sb, h, SNAPSHOT(watched));
    const r = await apply(join(dir, 'r.yml'), h.name);
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([
      ['App group', 'changed'],
      ['Deploy user', 'changed'],
      ['Nosudo', 'changed'],
      ['Breaks', 'failed'],
    ]);
    expect(stepEvents(r)[2]!.summary).toBe('modify user nosudo: shell /bin/bash → /bin/sh, groups +adm +app -audio, authorized_keys +2 -1');
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => [e.step, e.status])).toEqual([
      ['Nosudo', 'rolled-back'],
      ['Deploy user', 'rolled-back'],
      ['App group', 'rolled-back'],
    ]);
    expect(await sshOk(sb, h, ACCOUNTS)).toBe(before);
    expect(await sshOk(sb, h, SNAPSHOT(watched))).toBe(filesBefore);
    expect(await sshOk(sb, h, 'getent group audio')).toBe('audio:x:29:deploy,nosudo,root\n');

    // The same recipe without the failing step applies, and then is unchanged.
    const ok = fixture({ 'r.yml': recipe.replace(/ {2}- name: Breaks[\s\S]*$/, '') });
    const a1 = await apply(join(ok, 'r.yml'), h.name);
    expect(a1.code, a1.stderr + a1.stdout).toBe(0);
    expect(await sshOk(sb, h, 'getent passwd nosudo | cut -d: -f7; id -nG nosudo; getent group audio')).toBe('/bin/sh\nnosudo adm video app\naudio:x:29:deploy,root,deploy2\n');
    const a2 = await apply(join(ok, 'r.yml'), h.name);
    expect(a2.code).toBe(0);
    expect(stepEvents(a2).map((e) => e.status)).toEqual(['unchanged', 'unchanged', 'unchanged']);
  });

  it('removing a user is rolled back with its home contents, mail, password hash and memberships', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sb.restart(h, { wipe: true });
    const hash = '$6$hostsmith$CHVUBPm9eLBXZf4.5fqRwmQO3UFmlBtSpwH1r1uhM5q5OKJBp.1AQXqkqq8jTtRAoVfEjp0BL4jhgKxGVYBYA0';
    await sshOk(
      sb,
      h,
      [
        'useradd -m -s /bin/bash -c "Old User" -G audio,sudo olduser',
        'useradd -m later', // olduser's lines are not the last ones: rollback must put them back in place
        'gpasswd -a deploy audio',
        `echo 'olduser:${hash}' | chpasswd -e`,
        'chage -M 90 -W 14 olduser',
        'mkdir -p /home/olduser/data/deep && echo secret > /home/olduser/data/deep/f && chmod 0640 /home/olduser/data/deep/f && ln -s /etc/hostname /home/olduser/link',
        'chown -R olduser:olduser /home/olduser/data && chown -h olduser:olduser /home/olduser/link && chmod 0700 /home/olduser',
        'echo mail > /var/mail/olduser && chown olduser:mail /var/mail/olduser && chmod 0660 /var/mail/olduser',
      ].join(' && '),
    );
    const recipe = (fail: boolean) => `name: remove
steps:
  - name: Remove olduser
    user: { name: olduser, state: absent }
${fail ? '  - name: Breaks\n    command: { run: "exit 9" }\n' : ''}`;
    const dir = fixture({ 'fail.yml': recipe(true), 'ok.yml': recipe(false) });
    const watched = '/home /var/mail';
    const before = await sshOk(sb, h, ACCOUNTS);
    const filesBefore = await sshOk(sb, h, SNAPSHOT(watched));
    const MTIMES = "find /home/olduser /var/mail/olduser -printf '%p %T@\\n' | sort";
    const mtimesBefore = await sshOk(sb, h, MTIMES);
    expect(before).toContain(`olduser:${hash}:`);

    const r = await apply(join(dir, 'fail.yml'), h.name);
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r)[0]).toMatchObject({ status: 'changed', summary: 'remove user olduser (uid 1002, groups sudo, audio, home /home/olduser with its contents)' });
    expect(await sshOk(sb, h, ACCOUNTS)).toBe(before);
    expect(await sshOk(sb, h, SNAPSHOT(watched))).toBe(filesBefore);
    expect(await sshOk(sb, h, MTIMES)).toBe(mtimesBefore);
    expect(await sshOk(sb, h, 'readlink /home/olduser/link')).toBe('/etc/hostname\n');
    // The hash travelled only in the root-only backup on the host, never into the journal.
    expect(journalText(state)).toContain('olduser');
    expect(journalText(state)).not.toContain('$6$');
    const runId = r.events[0]!.runId;
    expect(await sshOk(sb, h, `stat -c %a /var/lib/hostsmith/backups /var/lib/hostsmith/backups/${runId}/Remove_olduser-3d5b78a0/accounts/shadow`)).toBe('700\n640\n');

    const ok = await apply(join(dir, 'ok.yml'), h.name);
    expect(ok.code, ok.stderr + ok.stdout).toBe(0);
    expect((await sshRun(sb, h, 'getent passwd olduser || getent group olduser || ls /home/olduser || ls /var/mail/olduser')).code).not.toBe(0);
    expect(await sshOk(sb, h, 'getent group audio sudo')).toBe('audio:x:29:deploy\nsudo:x:27:\n');
    const again = await apply(join(dir, 'ok.yml'), h.name);
    expect(stepEvents(again).map((e) => [e.status, e.summary])).toEqual([['unchanged', 'user olduser is absent']]);

    // Undone later, from the journal alone: the account, its home and mail come back as they were.
    // (Its backups are named home and mail, not after the paths: undo once refused them as
    // "not the backup of /home/olduser".)
    const undo = await hostsmith(['undo', ok.events[0]!.runId as string, '--yes', '--state-dir', state]);
    expect(undo.code, undo.stderr + undo.stdout).toBe(0);
    expect(await sshOk(sb, h, ACCOUNTS)).toBe(before);
    expect(await sshOk(sb, h, SNAPSHOT(watched))).toBe(filesBefore);
    expect(await sshOk(sb, h, 'readlink /home/olduser/link')).toBe('/etc/hostname\n');
  });

  it('a missing group: the plan notes it, apply fails before any change', async () => {
    const sb = sandbox();
    const h = sb.hosts[1]!;
    const dir = fixture({ 'r.yml': `name: missing\nsteps:\n  - name: U\n    user: { name: ghost, groups: [no-such-group] }\n` });
    const before = await sshOk(sb, h, ACCOUNTS);
    const p = await hostsmith(args('plan', join(dir, 'r.yml'), '--hosts', h.name, '--json'));
    expect(stepEvents(p)[0]!.summary).toBe('create user ghost (shell /bin/sh, home /home/ghost, groups no-such-group (not there yet: no-such-group))');
    const r = await apply(join(dir, 'r.yml'), h.name);
    expect(r.code).toBe(1);
    expect(stepEvents(r)[0]!.error).toBe('group no-such-group does not exist (create it with a group step before this one)');
    expect(await sshOk(sb, h, ACCOUNTS)).toBe(before);
    expect((await sshRun(sb, h, 'ls /home/ghost')).code).not.toBe(0);
  });

  it('a refused userdel (the user is busy) fails the step and leaves account and home as they were', async () => {
    const sb = sandbox();
    const h = sb.hosts[1]!;
    await sb.restart(h, { wipe: true });
    await sshOk(sb, h, 'echo kept > /home/nosudo/notes && chown nosudo: /home/nosudo/notes');
    await sshOk(sb, h, 'nohup runuser -u nosudo -- sleep 120 >/dev/null 2>&1 &');
    const dir = fixture({ 'r.yml': `name: busy\nsteps:\n  - name: Remove nosudo\n    user: { name: nosudo, state: absent }\n` });
    const before = await sshOk(sb, h, ACCOUNTS);
    const filesBefore = await sshOk(sb, h, SNAPSHOT('/home/nosudo'));
    const r = await apply(join(dir, 'r.yml'), h.name);
    expect(r.code).toBe(1);
    expect(stepEvents(r)[0]!.error).toMatch(/^userdel failed \(exit 8\): userdel: user nosudo is currently used by process \d+/);
    expect(await sshOk(sb, h, ACCOUNTS)).toBe(before);
    expect(await sshOk(sb, h, SNAPSHOT('/home/nosudo'))).toBe(filesBefore);
  });

  it('a step that fails half-way undoes itself: useradd done, authorized_keys refused', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sb.restart(h, { wipe: true });
    // useradd -m copies this symlink into the new home; writing keys through it is refused.
    await sshOk(sb, h, 'ln -s /etc /etc/skel/.ssh');
    const dir = fixture({ 'r.yml': `name: half\nsteps:\n  - name: Keyed\n    user: { name: keyed, authorized_keys: ["${K1}"] }\n` });
    const before = await sshOk(sb, h, ACCOUNTS);
    const filesBefore = await sshOk(sb, h, SNAPSHOT('/home /var/mail'));
    const r = await apply(join(dir, 'r.yml'), h.name);
    expect(r.code).toBe(1);
    expect(stepEvents(r)[0]!.error).toMatch(/writing authorized_keys of keyed failed .*symbolic link/);
    expect(await sshOk(sb, h, ACCOUNTS)).toBe(before);
    expect(await sshOk(sb, h, SNAPSHOT('/home /var/mail'))).toBe(filesBefore);
    expect(await sshOk(sb, h, 'ls /etc/authorized_keys 2>&1 || true')).toMatch(/No such file/);
  });
});
