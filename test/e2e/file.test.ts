/**
 * The file step over real SSH: metadata-only files, link ownership, and backups that stay apart
 * when step names look alike. Host state is read back with plain ssh (cat, stat, sha256sum).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk } from '../hosts/ssh.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';

/** Kind, sha256 (files), target (links), mode, owner and group of each path — links themselves, not followed. */
const FINGERPRINT = (paths: string) =>
  `for p in ${paths}; do if [ -L "$p" ]; then echo "$p link $(readlink "$p") $(stat -c '%U %G' "$p")"; elif [ -f "$p" ]; then echo "$p file $(sha256sum < "$p" | cut -c1-64) $(stat -c '%a %U %G' "$p")"; elif [ -e "$p" ]; then echo "$p other"; else echo "$p absent"; fi; done`;

const BREAKS = `  - name: Breaks\n    command: { run: "echo 'disk on fire' >&2; exit 3" }\n`;

describeHosts('file step over SSH', () => {
  const sandbox = useSandbox(1);
  let state: string;
  beforeEach(async () => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    await sshOk(sandbox(), sandbox().hosts[0]!, 'rm -rf /etc/ft && mkdir -p /etc/ft');
  });
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];
  const recipe = (steps: string) => join(fixture({ 'r.yml': `name: file-e2e\nsteps:\n${steps}` }), 'r.yml');

  const META_ONLY = `  - name: Tighten
    file: { path: /etc/ft/keep.conf, mode: "0600", owner: deploy }
  - name: Flag
    file: { path: /etc/ft/new.flag }
`;

  it('without content or src: an existing file keeps its content and gets only its metadata; a missing one is created empty', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'printf "precious\\n" > /etc/ft/keep.conf && chmod 0644 /etc/ft/keep.conf');
    const file = recipe(META_ONLY);
    const r1 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1).map((e) => [e.status, e.summary])).toEqual([
      ['changed', '/etc/ft/keep.conf: mode 0644 → 0600, owner root → deploy'],
      ['changed', 'create empty /etc/ft/new.flag'],
    ]);
    expect(await sshOk(sb, h, 'cat /etc/ft/keep.conf; stat -c "%a %U %G %s" /etc/ft/keep.conf /etc/ft/new.flag')).toBe('precious\n600 deploy root 9\n644 root root 0\n');

    const r2 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => e.status)).toEqual(['unchanged', 'unchanged']);
    expect(await sshOk(sb, h, 'cat /etc/ft/keep.conf')).toBe('precious\n');
  });

  it('without content or src: a later failure puts the metadata back and removes the empty file', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'printf "precious\\n" > /etc/ft/keep.conf && chmod 0644 /etc/ft/keep.conf');
    const watched = '/etc/ft/keep.conf /etc/ft/new.flag';
    const before = await sshOk(sb, h, FINGERPRINT(watched));
    const r = await hostsmith(args('apply', recipe(META_ONLY + BREAKS), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r).map((e) => e.status)).toEqual(['changed', 'changed', 'failed']);
    expect(await sshOk(sb, h, FINGERPRINT(watched))).toBe(before);
  });

  const LINKS = `  - name: Own link
    file: { path: /etc/ft/current, state: link, target: /etc/ft/target, owner: deploy }
  - name: New link
    file: { path: /etc/ft/fresh, state: link, target: /etc/ft/target, owner: nosudo, group: nogroup }
`;

  it('a link gets the owner and group it asks for (the link, not its target); a second apply changes nothing', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'echo t > /etc/ft/target && ln -s /etc/ft/target /etc/ft/current');
    const file = recipe(LINKS);
    const r1 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r1.code, r1.stderr + r1.stdout).toBe(0);
    expect(stepEvents(r1).map((e) => [e.status, e.summary])).toEqual([
      ['changed', '/etc/ft/current: owner root → deploy'],
      ['changed', 'link /etc/ft/fresh → /etc/ft/target (nosudo:nogroup)'],
    ]);
    expect(await sshOk(sb, h, FINGERPRINT('/etc/ft/current /etc/ft/fresh'))).toBe('/etc/ft/current link /etc/ft/target deploy root\n/etc/ft/fresh link /etc/ft/target nosudo nogroup\n');
    expect(await sshOk(sb, h, 'stat -c "%U %G" /etc/ft/target')).toBe('root root\n');

    const r2 = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r2.code).toBe(0);
    expect(stepEvents(r2).map((e) => e.status)).toEqual(['unchanged', 'unchanged']);
  });

  it('a later failure gives a link its previous owner back and removes the link it created', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'echo t > /etc/ft/target && ln -s /etc/ft/target /etc/ft/current');
    const watched = '/etc/ft/current /etc/ft/fresh /etc/ft/target';
    const before = await sshOk(sb, h, FINGERPRINT(watched));
    const r = await hostsmith(args('apply', recipe(LINKS + BREAKS), '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r).map((e) => e.status)).toEqual(['changed', 'changed', 'failed']);
    expect(await sshOk(sb, h, FINGERPRINT(watched))).toBe(before);
  });

  it('steps whose names look alike keep separate backups: rollback brings back the original file', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'printf "original\\n" > /etc/ft/app.conf && chmod 0640 /etc/ft/app.conf && chown nobody:nogroup /etc/ft/app.conf');
    const long = 'Write the application configuration file for the service that runs the shop';
    const file = recipe(`  - name: "Write conf (1)"
    file: { path: /etc/ft/app.conf, content: "first\\n" }
  - name: "Write conf [1]"
    file: { path: /etc/ft/app.conf, content: "second\\n" }
  - name: "${long} on the first host"
    file: { path: /etc/ft/app.conf, content: "third\\n" }
  - name: "${long} on the other host"
    file: { path: /etc/ft/app.conf, content: "fourth\\n" }
${BREAKS}`);
    const before = await sshOk(sb, h, FINGERPRINT('/etc/ft/app.conf'));
    const r = await hostsmith(args('apply', file, '--hosts', h.name, '--yes', '--json'));
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r).map((e) => e.status)).toEqual(['changed', 'changed', 'changed', 'changed', 'failed']);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(Array(4).fill('rolled-back'));
    expect(await sshOk(sb, h, 'cat /etc/ft/app.conf')).toBe('original\n');
    expect(await sshOk(sb, h, FINGERPRINT('/etc/ft/app.conf'))).toBe(before);
    // One backup folder per step, each holding what that step replaced.
    const runId = r.events[0]!.runId;
    expect(await sshOk(sb, h, `cd /var/lib/hostsmith/backups/${runId} && for d in */; do cat "$d/etc/ft/app.conf"; done | sort`)).toBe('first\noriginal\nsecond\nthird\n');
  });
});
