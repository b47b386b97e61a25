import { spawn } from 'node:child_process';
import { userInfo } from 'node:os';
import { ShellTransport } from './base.js';
import { BACKSTOP_MS } from './base.js';
import type { ExecResult } from './transport.js';

/**
 * This process's environment with LOGNAME and USER naming the account it runs as, as sshd sets
 * them for a login: the facts take the user from LOGNAME, and one inherited through `su` (which
 * keeps the caller's when the target is root) would name someone else.
 */
function loginEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  try {
    const name = userInfo().username;
    env.LOGNAME = name;
    env.USER = name;
  } catch {
    // No account entry for this uid: without LOGNAME the facts ask `id` (which says the number).
    delete env.LOGNAME;
  }
  return env;
}

/** `--hosts local`: this machine, through /bin/sh, with no SSH. */
export class LocalTransport extends ShellTransport {
  readonly name: string;
  constructor(name = 'local') {
    super();
    this.name = name;
  }

  protected raw(cmdline: string, o: { stdin?: string | Buffer; timeoutMs?: number; signal?: AbortSignal }): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      const child = spawn('/bin/sh', ['-c', cmdline], { stdio: ['pipe', 'pipe', 'pipe'], env: loginEnv() });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let timedOut = false;
      const timer = o.timeoutMs
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, o.timeoutMs + BACKSTOP_MS)
        : undefined;
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => err.push(d));
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const stdoutRaw = Buffer.concat(out);
        const exit = code ?? (signal ? 128 + 9 : 1);
        resolve({
          code: exit,
          stdout: stdoutRaw.toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
          stdoutRaw,
          timedOut: timedOut || (o.timeoutMs !== undefined && exit === 124),
        });
      });
      child.stdin.on('error', () => {});
      child.stdin.end(o.stdin ?? '');
    });
  }

  async close(): Promise<void> {}
}
