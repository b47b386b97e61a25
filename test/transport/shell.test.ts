import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalTransport } from '../../src/transport/local.js';
import { BOOTSTRAP, bootstrapLine, commandScript, frameCommand, quote } from '../../src/shell/script.js';
import type { ExecResult } from '../../src/transport/transport.js';

const sh = (cmd: string) => execFileSync('/bin/sh', ['-c', cmd], { encoding: 'utf8' });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('quote', () => {
  it.each([['plain'], ["it's"], ['$HOME `id` "x"'], ['a\nb'], [''], ['--flag'], ['* ?']])('round-trips %j through sh', (s) => {
    expect(sh(`printf %s ${quote(s)}`)).toBe(s);
  });
});

/** The local transport, keeping every exec command line it was asked to run. */
class Recording extends LocalTransport {
  readonly lines: string[] = [];
  protected override raw(cmdline: string, o: { stdin?: string | Buffer; timeoutMs?: number }): Promise<ExecResult> {
    this.lines.push(cmdline);
    return super.raw(cmdline, o);
  }
  /** The bootstrap with a stdin of our own making. */
  rawFramed(stdin: Buffer): Promise<ExecResult> {
    return super.raw(bootstrapLine(), { stdin });
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'hostsmith-shell-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('exec: the command line is a fixed bootstrap, the script comes on stdin', () => {
  const hostile = [`it's "quoted"`, '$(touch /tmp/never) `id` $HOME', 'line one\nline two\n', '\\back\\slash\\', 'ünïcødé ✓', '-leading dash', ''];

  it.each(hostile)('env value %j arrives exactly and is never on the command line', async (value) => {
    const t = new Recording();
    const r = await t.exec('printf %s "$DB_PASSWORD"', { env: { DB_PASSWORD: value } });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(value);
    expect(t.lines).toEqual([`sh -c ${quote(BOOTSTRAP)}`]);
    if (value) expect(t.lines[0]).not.toContain(value);
  });

  it('the command text, cwd and env are absent from the command line under sudo, user and timeout too', () => {
    const secret = 'S3cr3t-in-command';
    const f = frameCommand(`echo ${secret}`, { env: { X: secret }, cwd: `/tmp/${secret}`, sudo: true, user: 'www', timeoutMs: 1500, loginUser: 'deploy' });
    expect(f.cmdline).not.toContain(secret);
    expect(f.cmdline).toBe(`sudo -n -H -u www -- timeout -k 5 2 sh -c ${quote(BOOTSTRAP)}`);
    expect(f.stdin.toString()).toContain(secret);
  });

  it('adds sudo only when not root, and timeout(1) inside it', () => {
    expect(bootstrapLine({ sudo: true, loginUser: 'deploy' })).toMatch(/^sudo -n -- sh -c /);
    expect(bootstrapLine({ sudo: true, loginUser: 'root' })).toMatch(/^sh -c /);
    expect(bootstrapLine({ user: 'www', loginUser: 'root' })).toMatch(/^sudo -n -H -u www -- sh -c /);
    expect(bootstrapLine({ user: 'root', loginUser: 'root' })).toMatch(/^sh -c /);
    expect(bootstrapLine({ timeoutMs: 1500 })).toMatch(/^timeout -k 5 2 sh -c /);
    expect(bootstrapLine({ sudo: true, loginUser: 'deploy', timeoutMs: 61_001 })).toMatch(/^sudo -n -- timeout -k 5 62 sh -c /);
  });

  it('frames stdin as <byte length>\\n<script><data>', () => {
    const f = frameCommand('cat', { env: { A: 'ü' }, stdin: Buffer.from([0, 1, 2]) });
    const script = commandScript('cat', { env: { A: 'ü' } });
    const head = `${Buffer.byteLength(script)}\n`;
    expect(f.stdin.subarray(0, head.length).toString()).toBe(head);
    expect(f.stdin.subarray(head.length, head.length + Buffer.byteLength(script)).toString()).toBe(script);
    expect([...f.stdin.subarray(-3)]).toEqual([0, 1, 2]);
  });

  it('runs in cwd with env, and the bootstrap variables are not visible to the command', async () => {
    const t = new LocalTransport();
    const r = await t.exec('echo "$GREETING from $(pwd) [$n] [$s]"', { cwd: tmp, env: { GREETING: "it's me" } });
    expect(r.stdout).toBe(`it's me from ${tmp} [] []\n`);
  });

  it('a cwd that does not exist fails before the command runs', async () => {
    const marker = join(tmp, 'ran-despite-cwd');
    const r = await new LocalTransport().exec(`touch ${quote(marker)}`, { cwd: join(tmp, 'nope') });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/can't cd|No such file/);
    expect(existsSync(marker)).toBe(false);
  });

  it.each([
    ['exit 7', 7],
    ['false', 1],
    ['true', 0],
    ['false\n# a comment last', 1],
    ['sh -c "kill -TERM \\$\\$"', 143],
    ['exit 0\necho not reached; exit 9', 0],
    ['', 0],
  ])('%j exits %i', async (cmd, code) => {
    expect((await new LocalTransport().exec(cmd)).code).toBe(code);
  });

  it("error messages count the command's own lines", async () => {
    const r = await new LocalTransport().exec('no-such-command-xyz', { env: { A: '1' }, cwd: '/' });
    expect(r.code).toBe(127);
    // dash names the eval that runs the script; the line number is the command's own.
    expect(r.stderr).toMatch(/^sh: 1: (eval: )?no-such-command-xyz: not found/);
  });

  it('stdin after the script reaches the command byte for byte: binary, > 1 MiB, and none', async () => {
    const t = new LocalTransport();
    const data = Buffer.concat([Buffer.from('\n\n12\n\0\xff'), randomBytes(3 * 1024 * 1024 + 17)]);
    const r = await t.exec('sha256sum | cut -d" " -f1; wc -c </dev/null', { stdin: data });
    expect(r.stdout.split('\n')[0]).toBe(sha(data));
    const echo = await t.exec('cat', { stdin: data });
    expect(echo.stdoutRaw.equals(data)).toBe(true);
    const none = await t.exec('wc -c');
    expect(none.stdout.trim()).toBe('0');
    const str = await t.exec('cat', { stdin: 'ünï\n' });
    expect(str.stdout).toBe('ünï\n');
  });

  it('writeFile and readFile carry binary content through the same framing', async () => {
    const t = new LocalTransport();
    const data = randomBytes(1024 * 1024 + 3);
    const path = join(tmp, 'bin file');
    await t.writeFile(path, data, { mode: 0o600 });
    expect((await t.readFile(path))!.equals(data)).toBe(true);
    expect(await t.readFile(join(tmp, 'absent'))).toBeNull();
  });

  it('a script cut short is not run at all (exit 125)', async () => {
    const t = new Recording();
    const marker = join(tmp, 'ran-truncated');
    const script = Buffer.from(commandScript(`touch ${quote(marker)}`));
    // The connection dropped mid-send: fewer bytes arrive than the length says.
    const cut = await t.rawFramed(Buffer.concat([Buffer.from(`${script.length}\n`), script.subarray(0, script.length - 5)]));
    expect(cut.code).toBe(125);
    expect(cut.stderr).toMatch(/did not arrive whole; nothing was run/);
    expect(existsSync(marker)).toBe(false);
    // The whole script, as a check that the same frame does run when it is complete.
    const whole = await t.rawFramed(Buffer.concat([Buffer.from(`${script.length}\n`), script]));
    expect(whole.code).toBe(0);
    expect(existsSync(marker)).toBe(true);
    const none = await t.rawFramed(Buffer.alloc(0));
    expect(none.code).toBe(125);
  });

  it('refuses a NUL byte before anything is sent', async () => {
    const t = new Recording();
    await expect(t.exec('echo a\0b')).rejects.toThrow(/NUL byte.*nothing was sent/);
    await expect(t.exec('echo', { env: { A: 'x\0' } })).rejects.toThrow(/NUL byte/);
    expect(t.lines).toEqual([]);
  });

  it('rejects env names a shell would misread', async () => {
    expect(() => commandScript('x', { env: { 'A-B': '1' } })).toThrow(/invalid environment variable name/);
    await expect(new LocalTransport().exec('x', { env: { 'A;B': '1' } })).rejects.toThrow(/invalid environment variable name/);
  });

  it('a timeout stops the command on the host (timeout -k) and says so', async () => {
    const started = Date.now();
    const r = await new LocalTransport().exec('sleep 30', { timeoutMs: 1000 });
    expect(r.timedOut).toBe(true);
    expect(r.code).toBe(124);
    expect(Date.now() - started).toBeLessThan(8000);
  });

  it('while a command runs, neither its env nor its text is in the process list', async () => {
    const secret = `Pw-${randomBytes(6).toString('hex')}`;
    const flag = join(tmp, 'started');
    const t = new LocalTransport();
    const run = t.exec(`touch ${quote(flag)}; sleep 2 # ${secret}`, { env: { DB_PASSWORD: secret } });
    for (let i = 0; i < 100 && !existsSync(flag); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(flag)).toBe(true);
    const ps = await new Promise<string>((resolve) => {
      const c = spawn('ps', ['-eo', 'args']);
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('close', () => resolve(out));
    });
    // The check works: the command that is running is there, by its bootstrap.
    expect(ps).toContain('head -c');
    expect(ps).toContain('sleep 2');
    expect(ps).not.toContain(secret);
    expect((await run).code).toBe(0);
  });
});
