/**
 * Batched probes (engine/probe.ts): commands run in one batch give exactly what each gives when
 * run on its own — exit code, stdout bytes, stderr — whatever they print. Run for real through
 * /bin/sh with the local transport (the real-host tier is test/e2e/probes.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { execBatch } from '../../src/engine/probe.js';
import { LocalTransport } from '../../src/transport/local.js';
import { frameCommand } from '../../src/shell/script.js';

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
  ['it runs where its own exec would (the login folder)', 'pwd; ls -a | head -c 200'],
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
