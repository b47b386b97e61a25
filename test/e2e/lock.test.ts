/**
 * The host lock on a real host: a user without root cannot fake it, runs still exclude each other,
 * none is left behind, and text from the host (lock owners, stderr) reaches the terminal escaped.
 * Host state is checked with plain OpenSSH (sshRun), never with hostsmith's own transport.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, sandboxArgs, type CliResult } from './cli.js';

const ESC = '\x1b';
/** The owner text a hostile user plants: sets the terminal title, then clears the screen. */
const EVIL_SH = String.raw`\033]0;pwned\007\033[2J`;
const EVIL_SHOWN = String.raw`\x1b]0;pwned\x07\x1b[2J`;
const ROOT_LOCK = '/run/hostsmith/lock';

/** Every lock path a user could try to pre-create: the ones hostsmith uses, used or would use. */
const USER_TRIES = [
  '/run/hostsmith',
  ROOT_LOCK,
  '/run/lock/hostsmith.lock',
  '/var/lock/hostsmith.lock',
  '/var/lib/hostsmith',
  '/var/lib/hostsmith/lock',
  '/tmp/.local/state/hostsmith/lock',
  '/root/.local/state/hostsmith/lock',
];

const all = (r: CliResult) => r.stdout + r.stderr;

describeHosts('host lock: not fakeable, exclusive, released; foreign text escaped', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  beforeAll(() => {
    dir = fixture({
      'mark.yml': `name: mark\nsteps:\n  - name: Mark\n    file: { path: /root/lock-mark, content: "{{stamp}}\\n" }\nvars:\n  stamp: { default: one }\n`,
      'slow.yml': `name: slow\nsteps:\n  - name: Wait\n    command: { run: "sleep 3" }\n`,
      'slower.yml': `name: slower\nsteps:\n  - name: Wait\n    command: { run: "sleep 7" }\n`,
      'loud.yml': `name: loud\nsteps:\n  - name: Loud\n    command:\n      run: |\n        printf '${EVIL_SH} boom\\n' >&2; exit 1\n`,
      'state/.keep': '',
    });
    state = join(dir, 'state');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const rootArgs = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state), '--hosts', sandbox().hosts[0]!.name];
  const asUser = (user: string, ...a: string[]) => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    return [...a, '--hosts', `${user}@${h.address}:${h.port}`, '--identity', sb.keyPath, '--known-hosts', sb.knownHostsPath, '--state-dir', state];
  };
  const noLockLeft = async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    expect((await sshRun(sb, h, `test -e ${ROOT_LOCK} || test -e /home/nosudo/.local/state/hostsmith/lock || test -e /home/deploy/.local/state/hostsmith/lock`)).code).toBe(1);
  };

  it('locks a user made at every path they could do not block a root run, and nothing raw reaches the terminal', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    try {
      const made = await sshRun(sb, h, `for p in ${USER_TRIES.join(' ')}; do mkdir -p "$p" 2>/dev/null && printf '${EVIL_SH}' > "$p/owner" 2>/dev/null && echo "$p"; done; true`, { user: 'nosudo' });
      // What a user can make: only in the world-writable folders, none of root's.
      expect(made.stdout.split('\n').filter(Boolean)).toEqual(['/run/lock/hostsmith.lock', '/var/lock/hostsmith.lock', '/tmp/.local/state/hostsmith/lock']);
      expect(await sshOk(sb, h, `stat -c '%U %a' /run/hostsmith`)).toBe('root 755\n');

      const r = await hostsmith(rootArgs('apply', join(dir, 'mark.yml'), '--yes', '--var', 'stamp=fake-locks'));
      expect(r.code, all(r)).toBe(0);
      expect(all(r)).not.toContain(ESC);
      expect(await sshOk(sb, h, 'cat /root/lock-mark')).toBe('fake-locks\n');
      // The user's folders are untouched: hostsmith neither honoured nor removed them.
      expect((await sshRun(sb, h, 'test -f /run/lock/hostsmith.lock/owner && test -f /tmp/.local/state/hostsmith/lock/owner')).code).toBe(0);
      await noLockLeft();
    } finally {
      await sshRun(sb, h, 'rm -rf /run/lock/hostsmith.lock /var/lock/hostsmith.lock /tmp/.local /root/lock-mark');
    }
  });

  it('a lock of a root run is reported with its owner text escaped (human and --json), and is left alone', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    try {
      await sshOk(sb, h, `mkdir ${ROOT_LOCK} && printf 'run=other ${EVIL_SH}\\n' > ${ROOT_LOCK}/owner`);
      const r = await hostsmith(rootArgs('apply', join(dir, 'mark.yml'), '--yes'));
      expect(r.code).toBe(1);
      expect(all(r)).not.toContain(ESC);
      expect(all(r)).toContain(`locked by another hostsmith run (run=other ${EVIL_SHOWN}; lock ${ROOT_LOCK}, owned by root)`);
      expect(all(r)).toContain(`then remove ${ROOT_LOCK} on the host`);
      const j = await hostsmith(rootArgs('apply', join(dir, 'mark.yml'), '--yes', '--json'));
      expect(j.code).toBe(1);
      expect(j.stdout).not.toContain(ESC);
      const fin = j.events.find((e) => e.event === 'host-finished')!;
      expect(fin.error).toContain(`run=other \x1b]0;pwned\x07\x1b[2J`); // JSON carries the text as it is, escaped by JSON
      expect(await sshOk(sb, h, `cat ${ROOT_LOCK}/owner`)).toBe(`run=other \x1b]0;pwned\x07\x1b[2J\n`);
      expect((await sshRun(sb, h, 'test -e /root/lock-mark')).code).toBe(1);
    } finally {
      await sshRun(sb, h, `rm -rf ${ROOT_LOCK}`);
    }
  });

  it('a /run/hostsmith that root did not make is refused, naming it and its owner; nothing changes', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    try {
      await sshOk(sb, h, 'chown nosudo /run/hostsmith');
      const r = await hostsmith(rootArgs('apply', join(dir, 'mark.yml'), '--yes'));
      expect(r.code).toBe(1);
      expect(all(r)).toContain('cannot take the run lock: /run/hostsmith is owned by nosudo, not by root, so hostsmith did not make it');
      expect(all(r)).toContain('remove it (as root: rm -rf -- /run/hostsmith), and run again');
      expect((await sshRun(sb, h, `test -e /root/lock-mark || test -e ${ROOT_LOCK}`)).code).toBe(1);
    } finally {
      await sshRun(sb, h, 'chown root /run/hostsmith');
    }
  });

  it('runs exclude each other (root, sudo and a user without root); none leaves a lock', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    // Two root runs started together: exactly one holds the host.
    const [a, b] = await Promise.all([hostsmith(rootArgs('apply', join(dir, 'slow.yml'), '--yes')), hostsmith(rootArgs('apply', join(dir, 'slow.yml'), '--yes'))]);
    expect([a.code, b.code].sort()).toEqual([0, 1]);
    expect(all(a.code === 1 ? a : b)).toMatch(/locked by another hostsmith run \(run=\S+ controller=\S+ pid=\d+ since=\S+; lock \/run\/hostsmith\/lock, owned by root\)/);
    await noLockLeft();

    // While a root run holds it, a sudo run and a run without root are both held off.
    const first = hostsmith(rootArgs('apply', join(dir, 'slower.yml'), '--yes'));
    for (let i = 0; i < 50 && (await sshRun(sb, h, `test -d ${ROOT_LOCK}`)).code !== 0; i++) await new Promise((r) => setTimeout(r, 100));
    const [viaSudo, plain] = await Promise.all([hostsmith(asUser('deploy', 'apply', join(dir, 'slow.yml'), '--yes', '--sudo')), hostsmith(asUser('nosudo', 'apply', join(dir, 'slow.yml'), '--yes'))]);
    expect(viaSudo.code, all(viaSudo)).toBe(1);
    expect(all(viaSudo)).toContain('locked by another hostsmith run (run=');
    expect(plain.code, all(plain)).toBe(1);
    expect(all(plain)).toContain(`lock ${ROOT_LOCK}, owned by root)`);
    expect((await first).code).toBe(0);
    // The user's own run takes its own lock, in its home, and removes it.
    const alone = await hostsmith(asUser('nosudo', 'apply', join(dir, 'slow.yml'), '--yes'));
    expect(alone.code, all(alone)).toBe(0);
    expect(await sshOk(sb, h, 'stat -c "%U %a" /home/nosudo/.local/state/hostsmith')).toBe('nosudo 700\n');
    await noLockLeft();
  });

  it("a host's stderr with escape sequences is printed escaped by apply, show and history", async () => {
    const r = await hostsmith(rootArgs('apply', join(dir, 'loud.yml'), '--yes'));
    expect(r.code).toBe(1);
    expect(all(r)).not.toContain(ESC);
    expect(all(r)).toContain(`${EVIL_SHOWN} boom`);
    const runId = /\(run (\S+)\)/.exec(r.stdout)?.[1];
    expect(runId).toBeTruthy();
    const show = await hostsmith(['show', runId!, '--state-dir', state]);
    expect(show.code).toBe(0);
    expect(all(show)).not.toContain(ESC);
    expect(show.stdout).toContain(`${EVIL_SHOWN} boom`);
    const history = await hostsmith(['history', '--state-dir', state]);
    expect(history.code).toBe(0);
    expect(all(history)).not.toContain(ESC);
    expect(history.stdout).toContain(runId!);
    await noLockLeft();
  });
});
