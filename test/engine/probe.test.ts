/**
 * Batched probes (engine/probe.ts): commands run in one batch give exactly what each gives when
 * run on its own — exit code, stdout bytes, stderr — whatever they print. Run for real through
 * /bin/sh with the local transport (the real-host tier is test/e2e/probes.test.ts).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { execBatch } from '../../src/engine/probe.js';
import { LocalTransport } from '../../src/transport/local.js';
import { frameCommand } from '../../src/shell/script.js';
import { checkScript } from '../../src/steps/file-state.js';
import { askKey, existsScript, pathAnswers } from '../../src/steps/path-batch.js';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, lchownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CASES: Array<[string, string, string?]> = [
  ['plain output', 'echo hello'],
  ['no final newline', "printf 'no newline'"],
  ['empty output', 'true'],
  ['exit codes pass through', 'echo out; echo err >&2; exit 3'],
  ['command not found', 'no-such-command-hostsmith'],
  ['a syntax error fails that command only', 'if then fi'],
  ['binary bytes and NUL', "printf 'a\\000b\\377\\376\\nc'"],
  ['lines shaped like frames', "printf '0123456789abcdef 0 0 aGVsbG8= Zm9v\\n0123456789abcdef 1 0 x y\\n'"],
  ['base64-looking text and spaces', "printf 'x y z\\n  \\t\\n'"],
  ['large output', 'seq 1 200000'],
  ['stderr only', 'echo only-err >&2; exit 1'],
  ['it reads its own stdin', 'cat; echo; wc -c', 'given on stdin\n'],
  ['exit inside the command', 'echo before; exit 0; echo after'],
  ['a command that kills its own shell', 'echo x; kill -9 $$'],
  // What a command does to its shell ends with it: the commands after it in the batch do not see it.
  ['it changes its folder and umask', 'cd / && umask 077 && pwd && umask'],
  ['it sets shell options and traps', 'set -eu; trap "echo trapped" EXIT; echo $HOSTSMITH_UNSET_VAR; echo not here'],
  ['it replaces its shell', 'echo before; exec echo replaced'],
  ['it names its own process id', 'test "$$" != "$PPID" && echo own; echo "$$" | grep -c "^[0-9]*$"'],
  ['it runs where its own exec would (the login folder)', 'pwd; umask; ls -a | head -c 200; set -o | grep -E "errexit|nounset"'],
];

describe('execBatch: a batch gives each command what it gives on its own', () => {
  const t = new LocalTransport();

  it.each(CASES)('%s', async (_name, cmd, stdin) => {
    const live = await t.exec(cmd, stdin !== undefined ? { stdin } : {});
    const [batched] = await execBatch(t, [frameCommand(cmd, stdin !== undefined ? { stdin } : {})]);
    expect(batched).toBeDefined();
    expect(batched!.code).toBe(live.code);
    expect(batched!.stdoutRaw.equals(live.stdoutRaw)).toBe(true);
    expect(batched!.stderr).toBe(live.stderr);
  });

  it.each(CASES)('%s, under a timeout (as a step with timeout_s reads)', async (_name, cmd, stdin) => {
    const o = { timeoutMs: 20_000, ...(stdin !== undefined ? { stdin } : {}) };
    const live = await t.exec(cmd, o);
    const [batched] = await execBatch(t, [frameCommand(cmd, o)]);
    expect(batched!.code).toBe(live.code);
    expect(batched!.stdoutRaw.equals(live.stdoutRaw)).toBe(true);
    expect(batched!.stderr).toBe(live.stderr);
  });

  it('a command sees no variable of the batch (nor of the bootstrap), as in its own exec', async () => {
    const cmd = 'echo "[$s][$n][$T][$c][$0][$#]"; set | grep -c "^r=" || true';
    const live = await t.exec(cmd);
    const [batched] = await execBatch(t, [frameCommand(cmd)]);
    expect(batched!.stdout).toBe(live.stdout);
  });

  it('all of them in one batch, each with its own result, in order', async () => {
    const framed = CASES.map(([, cmd, stdin]) => frameCommand(cmd, stdin !== undefined ? { stdin } : {}));
    const batched = await execBatch(t, framed);
    for (const [i, [name, cmd, stdin]] of CASES.entries()) {
      const live = await t.exec(cmd, stdin !== undefined ? { stdin } : {});
      expect(batched[i]?.code, name).toBe(live.code);
      expect(batched[i]?.stdoutRaw.equals(live.stdoutRaw), name).toBe(true);
    }
  });

  it('a batch that cannot run gives no results (each command then runs on its own)', async () => {
    // A TMPDIR that cannot hold the batch's scratch folder: the batch exits before running anything.
    class NoScratch extends LocalTransport {
      override exec(cmd: string, o?: Parameters<LocalTransport['exec']>[1]) {
        return super.exec(`TMPDIR=/nonexistent/hostsmith; export TMPDIR\n${cmd}`, o);
      }
    }
    expect(await execBatch(new NoScratch(), [frameCommand('echo hi')])).toEqual([undefined]);
  });
});

describe('execBatch: path reads answered together give what each read gives on its own', () => {
  const root = mkdtempSync(join(tmpdir(), 'hostsmith-pathbatch-'));
  const R = (p: string) => join(root, p);
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const asRoot = process.getuid?.() === 0;
  // Every command of a run carries its tag (HOSTSMITH_RUN), as on a host.
  const TAG = '20261207T000000Z-abcdef';

  // A tree with what a hostile local user, or an odd host, puts in the way.
  mkdirSync(R('etc/app'), { recursive: true });
  writeFileSync(R('etc/app/plain.conf'), 'key = value\n');
  writeFileSync(R('etc/app/binary'), Buffer.from([0x61, 0, 0x62, 0xff, 0xfe, 0x0a, 0x63]));
  writeFileSync(R('etc/app/empty'), '');
  writeFileSync(R('etc/app/big'), 'x'.repeat(300_000));
  writeFileSync(R('etc/app/odd\nname \xff'), 'odd name\n');
  chmodSync(R('etc/app/plain.conf'), 0o4755);
  writeFileSync(R('etc/app/none'), 'no permissions\n');
  chmodSync(R('etc/app/none'), 0);
  symlinkSync('plain.conf', R('etc/app/link'));
  symlinkSync('/nowhere/at\nall', R('etc/app/dangling'));
  writeFileSync(R('etc/app/a-file'), 'a file, used as a folder\n');
  mkdirSync(R('real/sub'), { recursive: true });
  writeFileSync(R('real/sub/through.conf'), 'reached through a link\n');
  // Root's link in a folder only root changes: followed. A user's link, or root's in a folder
  // anyone may change: refused. A sticky folder protects root's entries: followed.
  symlinkSync('real', R('rootlink'));
  mkdirSync(R('open'), { recursive: true });
  chmodSync(R('open'), 0o777);
  symlinkSync('../real', R('open/rootlink'));
  mkdirSync(R('sticky'), { recursive: true });
  chmodSync(R('sticky'), 0o1777);
  symlinkSync('../real', R('sticky/rootlink'));
  symlinkSync('real', R('userlink'));
  if (asRoot) {
    lchownSync(R('userlink'), 12345, 12345);
    writeFileSync(R('etc/app/nameless'), 'owned by no account\n');
    chownSync(R('etc/app/nameless'), 54321, 54321);
  }
  execFileSync('mkfifo', [R('etc/app/fifo')]);

  const paths = [
    'etc/app/plain.conf',
    'etc/app/binary',
    'etc/app/empty',
    'etc/app/big',
    'etc/app/odd\nname \xff',
    'etc/app/none',
    'etc/app/link',
    'etc/app/dangling',
    'etc/app',
    'etc/app/absent',
    'etc/missing/deeper/still',
    'etc/app/a-file/below',
    'etc/app/dangling/below',
    'rootlink/sub/through.conf',
    'rootlink/sub/absent/x',
    'open/rootlink/sub/through.conf',
    'sticky/rootlink/sub/through.conf',
    'userlink/sub/through.conf',
    'etc/app/plain.conf',
  ].map(R);
  const unsure = [R('etc/app/fifo'), ...(asRoot ? [R('etc/app/nameless')] : [])];

  /** The transport, counting its execs. */
  class Counting extends LocalTransport {
    execs = 0;
    readsOnTheirOwn = 0;
    override exec(cmd: string, o?: Parameters<LocalTransport['exec']>[1]) {
      this.execs++;
      // A read run as its own script in the batch (not answered from the shared look).
      this.readsOnTheirOwn += cmd.split(`eval "$s"`).length - 1;
      return super.exec(cmd, o);
    }
  }

  /** The batch's answers to `scripts` against each script run on its own: equal, byte for byte. */
  async function expectSame(scripts: string[], execs: number, onTheirOwn: number): Promise<void> {
    const t = new Counting();
    t.tagRun(TAG);
    const batched = await execBatch(
      t,
      scripts.map((s) => frameCommand(s, { tag: TAG })),
    );
    expect(t.execs).toBe(execs);
    expect(t.readsOnTheirOwn).toBe(onTheirOwn);
    for (const [i, s] of scripts.entries()) {
      const live = await t.exec(s);
      expect(batched[i], s).toBeDefined();
      expect(batched[i]!.code, s).toBe(live.code);
      expect(batched[i]!.stdoutRaw.toString('hex'), s).toBe(live.stdoutRaw.toString('hex'));
      expect(batched[i]!.stderr, s).toBe(live.stderr);
    }
  }

  it('every kind of path, link, refusal and missing folder, in one exec', async () => {
    await expectSame(paths.map(checkScript), 1, 0);
  });

  it('what one look cannot be sure of (a fifo, an owner with no name) runs its own read, in one more exec', async () => {
    await expectSame([...paths, ...unsure].map(checkScript), 2, unsure.length);
  });

  it('`test -e` of a path (creates:, removes:) is answered from the same look; a link at the end runs its own', async () => {
    const there = ['etc/app/plain.conf', 'etc/app', 'etc/app/fifo', 'etc/missing/x', 'etc/app/a-file/below', 'rootlink/sub/through.conf', 'userlink/sub/through.conf', 'etc/app/odd\nname \xff'].map(R);
    const links = ['etc/app/link', 'etc/app/dangling'].map(R);
    await expectSame([...there.map(existsScript), ...links.map(existsScript), ...paths.slice(0, 3).map(checkScript)], 2, links.length);
    // A relative path is not one the look can answer (it depends on the login's folder): run as written.
    await expectSame([existsScript('etc/app'), existsScript(R('etc/app')), existsScript(R('etc/app/plain.conf'))], 1, 1);
  });

  it("the refusals are the read's own: a user's link, and root's link in a folder anyone may change", async () => {
    const t = new LocalTransport();
    const [open, user, followed] = await execBatch(
      t,
      [R('open/rootlink/sub/through.conf'), R('userlink/sub/through.conf'), R('rootlink/sub/through.conf')].map((p) => frameCommand(checkScript(p))),
    );
    expect(open!.code).toBe(77);
    expect(open!.stderr).toContain(`refusing ${R('open/rootlink')}`);
    expect(user!.code).toBe(77);
    expect(followed!.code).toBe(0);
    expect(followed!.stdoutRaw.toString()).toContain('reached through a link');
  });

  it('files that moved between the two looks are not answered from them', () => {
    const p = [
      { kind: 'read' as const, path: '/a' },
      { kind: 'read' as const, path: '/b' },
    ];
    // NUL-terminated fields, as find prints them.
    const z = (...xs: Array<string | number>) => Buffer.from(xs.map((x) => `${x}\u0000`).join(''));
    const meta = (n: string, kind: string, size: number) => z(n, kind, '644', 'root', 'root', 0, 0, size, '');
    const pm = Buffer.concat([meta('/', 'd', 4096), meta('/a', 'f', 3), meta('/b', 'f', 2)]);
    const ok = pathAnswers(p, { pm, pf: z('/a', 3, '/b', 2), pd: Buffer.from('abcde') });
    expect(ok?.get(askKey(p[0]!))?.stdout.toString()).toContain('abc');
    expect(ok?.get(askKey(p[1]!))?.stdout.subarray(-2).toString()).toBe('de');
    expect(pathAnswers(p, { pm, pf: z('/a', 3, '/b', 2), pd: Buffer.from('abcdef') })).toBeUndefined();
    expect(pathAnswers(p, { pm, pf: z('/a', 4, '/b', 1), pd: Buffer.from('abcde') })).toBeUndefined();
    expect(pathAnswers(p, { pm, pf: z('/a', 3), pd: Buffer.from('abc') })).toBeUndefined();
    // find did not run: no `/`.
    expect(pathAnswers(p, { pm: Buffer.alloc(0), pf: Buffer.alloc(0), pd: Buffer.alloc(0) })).toBeUndefined();
  });
});
