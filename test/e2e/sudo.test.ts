/**
 * sudo at recipe, step, command-line and inventory level, logged in as the sandbox user `deploy`
 * (passwordless sudo) and `nosudo` (none). Results are checked as root with plain ssh.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import type { SandboxHost } from '../hosts/hosts.js';
import { fixture, hostsmith, stepEvents } from './cli.js';

const FINGERPRINT = (paths: string) =>
  `for p in ${paths}; do if [ -e "$p" ]; then printf '%s %s %s\\n' "$p" "$(sha256sum < "$p" | cut -c1-64)" "$(stat -c '%a %U %G' "$p")"; else echo "$p absent"; fi; done; crontab -l -u root 2>&1; echo "rc=$?"`;

describeHosts('sudo: recipe, step, --sudo and inventory levels', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });
  /** Target options for logging in as `user` (not root) with the sandbox key. */
  const as = (user: string, h: SandboxHost, ...extra: string[]) => {
    const sb = sandbox();
    return ['--hosts', `${user}@${h.address}:${h.port}`, '--identity', sb.keyPath, '--known-hosts', sb.knownHostsPath, '--state-dir', state, '--yes', '--json', ...extra];
  };
  const loginUser = (r: { events: Array<Record<string, any>> }) => r.events.find((e) => e.event === 'host-connected')?.facts.user;

  const ROOT_RECIPE = (content: string, tail = '') => `name: sudo-recipe
sudo: true
steps:
  - name: Root file
    file: { path: /etc/hostsmith-sudo.conf, content: "${content}\\n" }
  - name: Root cron
    cron: { name: sudo-nightly, schedule: "0 3 * * *", command: "/usr/local/bin/${content}" }
  - name: Root-only line
    line: { path: /etc/hostsmith-secret.conf, line: "token=${content}", match: "^token=" }
${tail}`;

  it('recipe sudo: true as deploy writes root-owned files, root crontab and root-only files; again is unchanged', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'rm -f /etc/hostsmith-sudo.conf; crontab -r -u root 2>/dev/null || true; printf "token=old\\n" > /etc/hostsmith-secret.conf; chmod 0600 /etc/hostsmith-secret.conf');
    const dir = fixture({ 'r.yml': ROOT_RECIPE('one') });
    const r = await hostsmith(['apply', join(dir, 'r.yml'), ...as('deploy', h)]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(loginUser(r)).toBe('deploy');
    expect(stepEvents(r).map((e) => e.status)).toEqual(['changed', 'changed', 'changed']);
    expect(await sshOk(sb, h, 'stat -c "%U %G %a" /etc/hostsmith-sudo.conf /etc/hostsmith-secret.conf; cat /etc/hostsmith-sudo.conf /etc/hostsmith-secret.conf; crontab -l -u root')).toBe(
      'root root 644\nroot root 600\none\ntoken=one\n# hostsmith: sudo-nightly\n0 3 * * * /usr/local/bin/one\n',
    );
    const again = await hostsmith(['apply', join(dir, 'r.yml'), ...as('deploy', h)]);
    expect(again.code).toBe(0);
    expect(stepEvents(again).map((e) => e.status)).toEqual(['unchanged', 'unchanged', 'unchanged']);
  });

  it('rollback runs with sudo too: a failed run as deploy leaves root files and crontab exactly as before', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'printf "keep\\n" > /etc/hostsmith-sudo.conf; chmod 0640 /etc/hostsmith-sudo.conf; printf "token=old\\n" > /etc/hostsmith-secret.conf; chmod 0600 /etc/hostsmith-secret.conf');
    await sshOk(sb, h, 'crontab -u root -', { input: 'MAILTO=""\n@weekly /bin/weekly\n' });
    const dir = fixture({ 'r.yml': ROOT_RECIPE('two', '  - name: Breaks\n    command: { run: "exit 7" }\n') });
    const watched = '/etc/hostsmith-sudo.conf /etc/hostsmith-secret.conf';
    const before = await sshOk(sb, h, FINGERPRINT(watched));
    const r = await hostsmith(['apply', join(dir, 'r.yml'), ...as('deploy', h)]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back', 'rolled-back', 'rolled-back']);
    expect(await sshOk(sb, h, FINGERPRINT(watched))).toBe(before);
  });

  it('step-level sudo: true raises only that step in an otherwise non-sudo recipe', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'rm -f /etc/hostsmith-step.conf /home/deploy/hs-own.txt');
    const recipe = (stepSudo: boolean) => `name: step-sudo
steps:
  - name: Own file
    file: { path: /home/deploy/hs-own.txt, content: "mine\\n" }
  - name: Root file
${stepSudo ? '    sudo: true\n' : ''}    file: { path: /etc/hostsmith-step.conf, content: "step\\n" }
`;
    // Without the step's sudo, deploy cannot write /etc: the run fails and the first step is undone.
    const denied = await hostsmith(['apply', join(fixture({ 'r.yml': recipe(false) }), 'r.yml'), ...as('deploy', h)]);
    expect(denied.code).toBe(1);
    expect(stepEvents(denied)[1]!.error).toMatch(/Permission denied.*deploy may not write there: log in as root, or use sudo: true on the recipe or step, or --sudo/);
    expect(await sshOk(sb, h, 'ls /etc/hostsmith-step.conf /home/deploy/hs-own.txt 2>&1 || true')).toMatch(/No such file.*\n.*No such file/);

    const r = await hostsmith(['apply', join(fixture({ 'r.yml': recipe(true) }), 'r.yml'), ...as('deploy', h)]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(await sshOk(sb, h, 'stat -c "%n %U %G" /home/deploy/hs-own.txt /etc/hostsmith-step.conf; cat /etc/hostsmith-step.conf')).toBe(
      '/home/deploy/hs-own.txt deploy deploy\n/etc/hostsmith-step.conf root root\nstep\n',
    );
  });

  it('--sudo on the command line, and an inventory with user: deploy, sudo: true', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'rm -f /etc/hostsmith-cli.conf');
    const dir = fixture({
      'r.yml': `name: cli-sudo\nsteps:\n  - name: Root file\n    file: { path: /etc/hostsmith-cli.conf, content: "cli\\n", mode: "0640" }\n`,
      'inventory.yml': `defaults: { user: deploy, identity: ${sb.keyPath}, sudo: true }\nhosts:\n  web: { address: ${h.address}, port: ${h.port} }\n`,
    });
    const plain = await hostsmith(['apply', join(dir, 'r.yml'), ...as('deploy', h)]);
    expect(plain.code).toBe(1);
    expect((await sshRun(sb, h, 'test -e /etc/hostsmith-cli.conf')).code).toBe(1);

    const r = await hostsmith(['apply', join(dir, 'r.yml'), ...as('deploy', h, '--sudo')]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(loginUser(r)).toBe('deploy');
    expect(await sshOk(sb, h, 'stat -c "%U %G %a" /etc/hostsmith-cli.conf; cat /etc/hostsmith-cli.conf')).toBe('root root 640\ncli\n');

    await sshOk(sb, h, 'rm -f /etc/hostsmith-cli.conf');
    const inv = await hostsmith(['apply', join(dir, 'r.yml'), '-i', join(dir, 'inventory.yml'), '--hosts', 'web', '--known-hosts', sb.knownHostsPath, '--state-dir', state, '--yes', '--json']);
    expect(inv.code, inv.stderr + inv.stdout).toBe(0);
    expect(loginUser(inv)).toBe('deploy');
    expect(await sshOk(sb, h, 'stat -c "%U %G %a" /etc/hostsmith-cli.conf')).toBe('root root 640\n');
  });

  it('a user without sudo rights fails clearly with exit 1 and changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'printf "token=old\\n" > /etc/hostsmith-secret.conf; chmod 0600 /etc/hostsmith-secret.conf; rm -f /etc/hostsmith-sudo.conf');
    const watched = '/etc/hostsmith-sudo.conf /etc/hostsmith-secret.conf /home/nosudo/hs-own.txt';
    const before = await sshOk(sb, h, FINGERPRINT(watched));
    const recipe = fixture({ 'r.yml': ROOT_RECIPE('three') });
    const r = await hostsmith(['apply', join(recipe, 'r.yml'), ...as('nosudo', h)]);
    expect(r.code).toBe(1);
    expect(r.events.find((e) => e.event === 'host-finished')).toMatchObject({ status: 'failed', changed: 0 });
    expect(r.events.find((e) => e.event === 'host-finished')!.error).toMatch(/sudo: a password is required/);

    const step = fixture({
      'r.yml': `name: nosudo-step\nsteps:\n  - name: Own file\n    file: { path: /home/nosudo/hs-own.txt, content: "x" }\n  - name: Root file\n    sudo: true\n    file: { path: /etc/hostsmith-sudo.conf, content: "x" }\n`,
    });
    const r2 = await hostsmith(['apply', join(step, 'r.yml'), ...as('nosudo', h)]);
    expect(r2.code).toBe(1);
    expect(stepEvents(r2)[1]).toMatchObject({ step: 'Root file', status: 'failed', error: expect.stringMatching(/sudo: a password is required/) });
    expect(await sshOk(sb, h, FINGERPRINT(watched))).toBe(before);
  });

  // A non-root login keeps its backups in its home; a sudo step's backups are root's and must go
  // to /var/lib/hostsmith, or later non-sudo backups in the home folder would be refused.
  it('a sudo step that backs up a file does not break backups of later non-sudo steps', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'printf "old\\n" > /etc/hostsmith-step.conf; rm -rf /home/deploy/.local; printf "mine\\n" > /home/deploy/hs-own.txt; chown deploy: /home/deploy/hs-own.txt');
    const dir = fixture({
      'r.yml': `name: step-backups\nsteps:\n  - name: Root file\n    sudo: true\n    file: { path: /etc/hostsmith-step.conf, content: "new\\n" }\n  - name: Own file\n    file: { path: /home/deploy/hs-own.txt, content: "changed\\n" }\n`,
    });
    const r = await hostsmith(['apply', join(dir, 'r.yml'), ...as('deploy', h)]);
    expect(stepEvents(r).map((e) => [e.step, e.status, e.error])).toEqual([
      ['Root file', 'changed', undefined],
      ['Own file', 'changed', undefined],
    ]);
    expect(r.code).toBe(0);
  });
});
