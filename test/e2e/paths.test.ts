/**
 * Paths over real SSH: a ":" in a folder hostsmith creates, a ".." refused before any host is
 * contacted, a command that ignores SIGTERM past its timeout, and copies (backup, restore) that
 * run out of space. The host is snapshotted with plain ssh before and after.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, journalText, sandboxArgs, stepEvents } from './cli.js';

/** Every path under the given roots with its kind, mode, owner and (files) checksum, sorted. */
const SNAPSHOT = (roots: string) =>
  `for r in ${roots}; do [ -e "$r" ] || echo "$r absent"; done; find ${roots} -printf '%p %y %m %u\\n' 2>/dev/null | sort; find ${roots} -type f -exec sha256sum {} + 2>/dev/null | sort`;

const BREAKS = `  - name: Breaks\n    command: { run: "echo 'disk on fire' >&2; exit 3" }\n`;

describeHosts('paths, timeouts and copies that run out of space', () => {
  const sandbox = useSandbox(1);
  const temps: string[] = [];
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    temps.push(state);
  });
  afterAll(() => {
    for (const d of temps) rmSync(d, { recursive: true, force: true });
  });
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];
  const recipe = (steps: string) => {
    const dir = fixture({ 'r.yml': `name: paths-e2e\nsteps:\n${steps}` });
    temps.push(dir);
    return join(dir, 'r.yml');
  };
  const apply = (steps: string) => hostsmith(args('apply', recipe(steps), '--hosts', sandbox().hosts[0]!.name, '--yes', '--json'));

  it('a ":" in missing folders: rollback removes exactly the folders it made, never the look-alikes that were there', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // What a split on ":" would name: /tmp/pre/x, and y, y/z relative to root's home.
    await sshOk(sb, h, 'rm -rf /tmp/pre /root/y && mkdir -p /tmp/pre/x /root/y/z');
    const watched = '/tmp/pre /root/y';
    const before = await sshOk(sb, h, SNAPSHOT(watched));
    const r = await apply(`  - name: Colon\n    file: { path: "/tmp/pre/x:y/z/f", content: "x\\n" }\n${BREAKS}`);
    expect(r.code, r.stderr).toBe(1);
    expect(stepEvents(r).map((e) => [e.step, e.status])).toEqual([
      ['Colon', 'changed'],
      ['Breaks', 'failed'],
    ]);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => [e.step, e.status])).toEqual([['Colon', 'rolled-back']]);
    expect(await sshOk(sb, h, SNAPSHOT(watched))).toBe(before);
    expect(before).toContain('/tmp/pre/x d 755 root');
    expect(before).toContain('/root/y/z d 755 root');
  });

  it('".." in a path: exit 2 at its place, naming the path to write, and the host is not contacted', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    await sshOk(sb, h, 'rm -rf /tmp/newdir /tmp/dd');
    const watched = '/tmp/newdir /tmp/dd /run/lock';
    const before = await sshOk(sb, h, SNAPSHOT(watched));
    const file = recipe(`  - name: Dotdot\n    file: { path: /tmp/newdir/../dd/f, content: "x" }\n${BREAKS}`);
    const r = await hostsmith(args('apply', file, '--hosts', h.name, '--yes'));
    expect(r.code, r.stderr + r.stdout).toBe(2);
    expect(r.stderr).toContain(`${file}:4:19`);
    expect(r.stderr).toContain('"/tmp/newdir/../dd/f" is not a normalised path');
    expect(r.stderr).toContain('write "/tmp/dd/f"');
    expect(journalText(state)).toBe('');
    expect(await sshOk(sb, h, SNAPSHOT(watched))).toBe(before);
  });

  it('a command that ignores SIGTERM past its timeout is reported as timed out and killed, and nothing of it is left running', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const r = await apply(`  - name: Stubborn\n    timeout: 2s\n    command: { run: "trap '' TERM; sleep 31; echo survived" }\n`);
    expect(r.code, r.stderr).toBe(1);
    const failed = stepEvents(r).find((e) => e.step === 'Stubborn')!;
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatch(/timed out after 2s, ignored SIGTERM and was killed \(SIGKILL\)/);
    expect(failed.error).not.toMatch(/exited 255/);
    const running = `for p in /proc/[0-9]*; do case "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)" in 'sleep 31 ') echo $p;; esac; done`;
    expect(await sshOk(sb, h, running)).toBe('');
  });

  describe('on a full filesystem', () => {
    const mounts: string[] = [];
    afterEach(async () => {
      const sb = sandbox();
      const h = sb.hosts[0]!;
      while (mounts.length) {
        const m = mounts.pop()!;
        await sshRun(sb, h, `umount ${m}`);
      }
      await sshRun(sb, h, 'rm -rf /srv/space /mnt/small');
    });
    /** A 200 KiB tmpfs at `dir` on the host (its own mount namespace), unmounted after the test. */
    const small = async (dir: string) => {
      const sb = sandbox();
      await sshOk(sb, sb.hosts[0]!, `mkdir -p ${dir} && mount -t tmpfs -o size=200k,mode=0700 tmpfs ${dir}`);
      mounts.push(dir);
    };

    it('a backup that runs out of space leaves no partial copy and says so; the file is untouched', async () => {
      const sb = sandbox();
      const h = sb.hosts[0]!;
      await sshOk(sb, h, 'mkdir -p /srv/space && head -c 400000 /dev/urandom > /srv/space/big');
      await small('/var/lib/hostsmith/backups');
      const before = await sshOk(sb, h, SNAPSHOT('/srv/space'));
      const r = await apply(`  - name: Shrink\n    file: { path: /srv/space/big, content: "small\\n" }\n`);
      expect(r.code, r.stderr).toBe(1);
      const failed = stepEvents(r).find((e) => e.step === 'Shrink')!;
      expect(failed.status).toBe('failed');
      expect(failed.error).toMatch(new RegExp(`^no space left on ${h.name} while backing up /srv/space/big to /var/lib/hostsmith/backups/.*; the partial copy was removed`));
      // Only the empty folders of this run's backup remain on the small filesystem: no bytes of the copy.
      expect(await sshOk(sb, h, 'find /var/lib/hostsmith/backups -type f -o -type l')).toBe('');
      expect(await sshOk(sb, h, "df -k --output=used /var/lib/hostsmith/backups | tail -1 | tr -d ' '")).toBe('0\n');
      expect(await sshOk(sb, h, SNAPSHOT('/srv/space'))).toBe(before);
    });

    it('a restore that runs out of space leaves no *.hostsmith-restore file and says so (exit 3)', async () => {
      const sb = sandbox();
      const h = sb.hosts[0]!;
      await small('/mnt/small');
      await sshOk(sb, h, 'head -c 120000 /dev/urandom > /mnt/small/f');
      const r = await apply(
        `  - name: Replace\n    file: { path: /mnt/small/f, content: "new\\n" }\n` + `  - name: Fill\n    command: { run: "cat /dev/zero > /mnt/small/fill 2>/dev/null; echo full >&2; exit 1" }\n`,
      );
      expect(r.code, r.stderr).toBe(3);
      const rb = r.events.filter((e) => e.event === 'rollback-finished');
      expect(rb.map((e) => [e.step, e.status])).toEqual([['Replace', 'rollback-failed']]);
      expect(rb[0]!.error).toMatch(new RegExp(`^no space left on ${h.name} while restoring /mnt/small/f from /var/lib/hostsmith/backups/.*; the partial copy was removed`));
      expect(await sshOk(sb, h, 'ls -A /mnt/small')).toBe('f\nfill\n');
      // The file is as the step left it: a failed copy never replaces it.
      expect(await sshOk(sb, h, 'cat /mnt/small/f')).toBe('new\n');
    });
  });
});
