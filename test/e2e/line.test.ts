/**
 * The line step over real SSH. Files are read back with plain ssh (cat, sha256sum, stat).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { ROOT, fixture, hostsmith, journalText, sandboxArgs, stepEvents } from './cli.js';

const SSHD = '# sshd\nPort 22\n#PermitRootLogin prohibit-password\nPermitRootLogin yes\nUsePAM yes\n';
/** Ends without a newline and holds a secret the journal must never see. */
const APP = 'db_password=s3cr3t-in-file\nlisten=8080\nworkers=2';

/** sha256, mode, owner and group of each file (or "absent"). */
const FINGERPRINT = (paths: string) =>
  `for p in ${paths}; do if [ -e "$p" ]; then printf '%s %s %s\\n' "$p" "$(sha256sum < "$p" | cut -c1-64)" "$(stat -c '%a %U %G' "$p")"; else echo "$p absent"; fi; done`;

async function put(sb: Sandbox, h: SandboxHost, path: string, content: string, mode: string, owner: string): Promise<void> {
  await sshOk(sb, h, `mkdir -p "$(dirname ${path})" && cat > ${path} && chmod ${mode} ${path} && chown ${owner} ${path}`, { input: content });
}

describeHosts('line step over SSH', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];

  const RECIPE = `name: line-edit
steps:
  - name: No root login
    line: { path: /etc/lt/sshd_config, line: "PermitRootLogin no", match: "^#?PermitRootLogin" }
  - name: Port after comment
    line: { path: /etc/lt/sshd_config, line: "Port 2222", match: "^Port ", after: "^# sshd" }
  - name: More workers
    line: { path: /etc/lt/app.conf, line: "workers=8", match: "^workers=" }
  - name: Log level
    line: { path: /etc/lt/app.conf, line: "log=info" }
  - name: Drop listen
    line: { path: /etc/lt/app.conf, match: "^listen=", state: absent }
  - name: New file
    line: { path: /etc/lt-new/sub/extra.conf, line: "enabled=1", create: true }
`;

  it('edits lines in place, keeps mode and owner; a second apply changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await put(sb, h, '/etc/lt/sshd_config', SSHD, '0640', 'root:adm');
    await put(sb, h, '/etc/lt/app.conf', APP, '0600', 'nobody:nogroup');
    await sshOk(sb, h, 'rm -rf /etc/lt-new');
    const dir = fixture({ 'r.yml': RECIPE });
    const r1 = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1).map((e) => e.summary)).toEqual([
      '/etc/lt/sshd_config: replace line 4 "PermitRootLogin yes" with "PermitRootLogin no"',
      '/etc/lt/sshd_config: replace line 2 "Port 22" with "Port 2222"',
      '/etc/lt/app.conf: replace line 3 "workers=2" with "workers=8"',
      '/etc/lt/app.conf: add "log=info" at the end',
      '/etc/lt/app.conf: remove 1 line matching /^listen=/',
      'create /etc/lt-new/sub/extra.conf with "enabled=1"',
    ]);
    expect(stepEvents(r1)[0]!.diff).toContain('-PermitRootLogin yes\n+PermitRootLogin no');
    expect(await sshOk(sb, h, 'cat /etc/lt/sshd_config')).toBe('# sshd\nPort 2222\n#PermitRootLogin prohibit-password\nPermitRootLogin no\nUsePAM yes\n');
    expect(await sshOk(sb, h, 'cat /etc/lt/app.conf')).toBe('db_password=s3cr3t-in-file\nworkers=8\nlog=info\n');
    expect(await sshOk(sb, h, 'cat /etc/lt-new/sub/extra.conf')).toBe('enabled=1\n');
    expect(await sshOk(sb, h, 'stat -c "%a %U %G" /etc/lt/sshd_config /etc/lt/app.conf /etc/lt-new/sub/extra.conf')).toBe('640 root adm\n600 nobody nogroup\n644 root root\n');

    const r2 = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => e.status)).toEqual(Array(6).fill('unchanged'));
  });

  it('a failure later in the run restores each file exactly (sha256, mode, owner) and removes what it created', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await put(sb, h, '/etc/lt/sshd_config', SSHD, '0640', 'root:adm');
    await put(sb, h, '/etc/lt/app.conf', APP, '0600', 'nobody:nogroup');
    await sshOk(sb, h, 'rm -rf /etc/lt-new');
    const dir = fixture({ 'r.yml': `${RECIPE}  - name: Breaks\n    command: { run: "echo 'disk on fire' >&2; exit 3" }\n` });
    const watched = '/etc/lt/sshd_config /etc/lt/app.conf /etc/lt-new';
    const before = await sshOk(sb, h, FINGERPRINT(watched));
    expect(before).toContain('/etc/lt-new absent');
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r).map((e) => e.status)).toEqual([...Array(6).fill('changed'), 'failed']);
    expect(r.events.filter((e) => e.event === 'rollback-finished').every((e) => e.status === 'rolled-back')).toBe(true);
    expect(await sshOk(sb, h, FINGERPRINT(watched))).toBe(before);
    expect(await sshOk(sb, h, 'cat /etc/lt/app.conf')).toBe(APP);
    // Undo data names root-only backups on the host; the file's content never reaches the journal.
    const runId = r.events[0]!.runId;
    expect(journalText(state)).toContain(`/var/lib/hostsmith/backups/${runId}/More_workers-28708236/etc/lt/app.conf`);
    expect(journalText(state)).not.toContain('s3cr3t-in-file');
    expect(await sshOk(sb, h, `stat -c %a /var/lib/hostsmith/backups/${runId}`)).toBe('700\n');
  });

  it('a missing file is an error unless create: true, and nothing is changed', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'rm -f /etc/lt-missing.conf; mkdir -p /etc/lt && echo keep > /etc/lt/keep.conf');
    const dir = fixture({
      'r.yml': `name: line-missing
steps:
  - name: Keep
    line: { path: /etc/lt/keep.conf, line: "added" }
  - name: Missing
    line: { path: /etc/lt-missing.conf, line: "x=1" }
`,
    });
    const r = await hostsmith(args('apply', join(dir, 'r.yml'), '--hosts', h.name, '--yes', '--json'));
    expect(r.code).toBe(1);
    expect(stepEvents(r)[1]).toMatchObject({ status: 'failed', error: '/etc/lt-missing.conf does not exist; set create: true to create it' });
    expect(await sshOk(sb, h, 'cat /etc/lt/keep.conf')).toBe('keep\n');
    expect((await sshRun(sb, h, 'test -e /etc/lt-missing.conf')).code).toBe(1);
  });

  it('plan of recipes/web-server.yml on a host without nginx: the line step is planned, not an error', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // The file the line step edits comes with the nginx package an earlier step installs.
    expect((await sshRun(sb, h, 'test -e /etc/logrotate.d/nginx')).code).toBe(1);
    const r = await hostsmith(args('plan', join(ROOT, 'recipes/web-server.yml'), '--hosts', h.name, '--var', `listen=${h.address}:8080`, '--json'));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    // Known after apply (it reads what the package step may write), with its outcome as the host is now.
    const step = stepEvents(r).find((e) => e.step === 'Keep logs longer')!;
    expect(step).toMatchObject({ status: 'planned', dynamic: true, dependsOn: ['Install nginx'] });
    expect(step.summary).toContain(
      'as the host is now: /etc/logrotate.d/nginx does not exist yet: will set the line matching /^\\s*rotate\\s/ to "\\trotate 30" once an earlier step creates it (apply fails if none does)',
    );
    expect((await sshRun(sb, h, 'test -e /etc/logrotate.d/nginx')).code).toBe(1);
  });
});
