import { readFile } from 'node:fs/promises';
import { constants as osConstants, homedir } from 'node:os';
import { join, resolve } from 'node:path';
import ssh2, { type AnyAuthMethod, type ClientChannel, type ConnectConfig } from 'ssh2';

// ssh2 is CommonJS; its named exports are only reachable through the default export.
const { Client, utils } = ssh2;
type Client = InstanceType<typeof Client>;
import { ConnectError } from '../errors.js';
import { BACKSTOP_MS, ShellTransport } from './base.js';
import { knownKeyTypes, verifyHostKey, type Verdict } from './known-hosts.js';
import type { ExecResult } from './transport.js';

export interface SshTarget {
  /** Name used in messages (inventory name or what was typed). */
  name: string;
  host: string;
  port: number;
  user: string;
  /** Private key files to offer, in order; when empty the agent and ~/.ssh/id_* are used. */
  identities: string[];
  knownHostsFile: string;
  acceptNewHostKeys: boolean;
  connectTimeoutMs?: number;
  /** Reach the host through this one first (ProxyJump); its own key is verified too. */
  jump?: SshTarget;
  /**
   * bootstrap only: log in with this password (password, then keyboard-interactive) instead of
   * keys. Kept in memory for this connection; never logged or put in a message.
   */
  password?: string;
  /** Passphrases typed for encrypted key files (--identity on a terminal), by resolved path; in memory only. */
  passphrases?: ReadonlyMap<string, string>;
}

/** Which signature algorithms to offer for the key types known_hosts records for this host. */
const ALGOS_FOR_TYPE: Record<string, string[]> = {
  'ssh-ed25519': ['ssh-ed25519'],
  'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
};
const ALL_HOSTKEY_ALGOS = Object.values(ALGOS_FOR_TYPE).flat();

/** OpenSSH limits sessions per connection (MaxSessions, default 10); stay under it. */
const MAX_CHANNELS = 8;

async function authMethods(t: SshTarget): Promise<{ methods: AnyAuthMethod[]; notes: string[] }> {
  const methods: AnyAuthMethod[] = [];
  const notes: string[] = [];
  if (t.password !== undefined) {
    const password = t.password;
    methods.push({ type: 'password', username: t.user, password });
    methods.push({ type: 'keyboard-interactive', username: t.user, prompt: (_n, _i, _l, prompts, finish) => finish(prompts.map(() => password)) });
    return { methods, notes };
  }
  const explicit = t.identities.length > 0;
  if (!explicit && process.env.SSH_AUTH_SOCK) methods.push({ type: 'agent', username: t.user, agent: process.env.SSH_AUTH_SOCK });
  const files = explicit ? t.identities : ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((f) => join(homedir(), '.ssh', f));
  for (const file of files) {
    let buf: Buffer;
    try {
      buf = await readFile(file);
    } catch (e) {
      if (explicit) notes.push(`cannot read identity ${file}: ${(e as Error).message}`);
      continue;
    }
    const passphrase = t.passphrases?.get(resolve(file));
    const parsed = utils.parseKey(buf, passphrase);
    if (parsed instanceof Error) {
      notes.push(
        /encrypted|passphrase/i.test(parsed.message)
          ? `identity ${file} is passphrase-protected: load it into ssh-agent (ssh-add ${file}) instead`
          : `identity ${file} is not a usable private key: ${parsed.message}`,
      );
      continue;
    }
    methods.push({ type: 'publickey', username: t.user, key: buf, ...(passphrase !== undefined ? { passphrase } : {}) });
  }
  if (explicit && process.env.SSH_AUTH_SOCK) methods.push({ type: 'agent', username: t.user, agent: process.env.SSH_AUTH_SOCK });
  return { methods, notes };
}

/** The host key a server presents, and what the known_hosts file in use says about it. */
export interface PresentedKey {
  blob: Buffer;
  verdict: Verdict;
}

/**
 * Connects only far enough to see the host key the server presents (the same key types are
 * asked for, in the same order, as a real connection would ask), checks it against known_hosts
 * without recording anything, and hangs up before logging in.
 */
export async function presentedHostKey(t: SshTarget): Promise<PresentedKey> {
  const via = t.jump ? await SshTransport.connect({ ...t.jump, name: `${t.name} (via ${t.jump.host})` }) : undefined;
  try {
    const check = { file: t.knownHostsFile, host: t.host, port: t.port, acceptNew: false };
    const known = await knownKeyTypes(check);
    const preferred = known.flatMap((k) => ALGOS_FOR_TYPE[k] ?? []);
    const serverHostKey = [...preferred, ...ALL_HOSTKEY_ALGOS.filter((a) => !preferred.includes(a))];
    const sock = via ? await via.forward(t.host, t.port) : undefined;
    const conn = new Client();
    return await new Promise<PresentedKey>((resolve, reject) => {
      let seen: PresentedKey | undefined;
      let settled = false;
      // `on`, not `once`: a peer that hangs up mid-handshake can emit a second error, which would crash.
      conn.on('error', (e: Error & { code?: string; level?: string }) => {
        if (settled) return;
        settled = true;
        conn.end();
        if (seen) resolve(seen);
        else reject(new ConnectError(t.name, connectProblem(t, e)));
      });
      conn.once('ready', () => {
        // Not expected (we refuse every key), but never keep a session open.
        conn.end();
        reject(new ConnectError(t.name, `${t.host}:${t.port} let us in without checking its host key`));
      });
      conn.connect({
        host: t.host,
        port: t.port,
        username: t.user,
        readyTimeout: t.connectTimeoutMs ?? 20_000,
        algorithms: { serverHostKey: serverHostKey as never },
        ...(sock ? { sock } : {}),
        hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
          verifyHostKey(key, check).then(
            (verdict) => {
              seen = { blob: Buffer.from(key), verdict };
              verify(false);
            },
            (e: unknown) => {
              conn.end();
              reject(new ConnectError(t.name, `cannot check ${t.knownHostsFile}: ${(e as Error).message}`));
            },
          );
        },
      });
    });
  } finally {
    await via?.close();
  }
}

/** A failed connection in words (not authentication or host keys: those say more). */
function connectProblem(t: SshTarget, e: Error & { code?: string; level?: string }): string {
  if (e.code === 'ECONNREFUSED') return `connection refused at ${t.host}:${t.port}: is sshd running and listening there?`;
  if (e.level === 'client-timeout' || e.code === 'ETIMEDOUT') return `timed out connecting to ${t.host}:${t.port}`;
  if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') return `cannot resolve host name ${t.host}`;
  return `cannot connect to ${t.user}@${t.host}:${t.port}: ${e.message}`;
}

/** One SSH connection per host; every command is a channel on it. */
export class SshTransport extends ShellTransport {
  readonly name: string;
  private active = 0;
  private waiting: Array<() => void> = [];
  private closed = false;

  private constructor(
    private conn: Client,
    readonly target: SshTarget,
    private via?: SshTransport,
  ) {
    super();
    this.name = target.name;
    this.watch(conn);
  }

  /** Marks the transport closed when its current connection closes (an older one closing later does not count). */
  private watch(conn: Client): void {
    conn.on('close', () => {
      if (this.conn === conn) this.closed = true;
    });
  }

  /**
   * A lost link made again, in place (steps hold this object): new TCP connection, new
   * authentication, the host key checked as before. Tries with backoff (0.5 s doubling to 8 s)
   * until `budgetMs` has passed; a refused host key or login is final at once.
   */
  override async reconnect(budgetMs: number): Promise<void> {
    const deadline = Date.now() + budgetMs;
    let delay = 500;
    for (;;) {
      const left = deadline - Date.now();
      try {
        const fresh = await SshTransport.connect({ ...this.target, connectTimeoutMs: Math.max(1000, Math.min(10_000, left)) });
        const old = { conn: this.conn, via: this.via };
        this.conn = fresh.conn;
        this.via = fresh.via;
        this.watch(fresh.conn);
        this.closed = false;
        old.conn.end();
        await old.via?.close().catch(() => {});
        return;
      } catch (e) {
        const final = e instanceof ConnectError && /host key|authentication|password|no SSH credentials/i.test(e.message);
        if (final || Date.now() + delay >= deadline) {
          throw new ConnectError(
            this.name,
            `the connection was lost and could not be made again within ${Math.round(budgetMs / 1000)} s: ${e instanceof Error ? e.message.replace(new RegExp(`^${this.name}: `), '') : String(e)}`,
          );
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 8000);
      }
    }
  }

  static async connect(t: SshTarget): Promise<SshTransport> {
    const via = t.jump ? await SshTransport.connect({ ...t.jump, name: `${t.name} (via ${t.jump.host})` }) : undefined;
    try {
      return await SshTransport.open(t, via);
    } catch (e) {
      await via?.close();
      throw e;
    }
  }

  /** A channel on the jump host's connection to the target's sshd. */
  /** (Also used by presentedHostKey.) */
  forward(host: string, port: number): Promise<ClientChannel> {
    return new Promise((resolve, reject) => {
      this.conn.forwardOut('127.0.0.1', 0, host, port, (err: Error | undefined, ch: ClientChannel) =>
        err ? reject(new ConnectError(this.name, `cannot forward to ${host}:${port}: ${err.message}`)) : resolve(ch),
      );
    });
  }

  private static async open(t: SshTarget, via?: SshTransport): Promise<SshTransport> {
    const { methods, notes } = await authMethods(t);
    const where = `${t.user}@${t.host}:${t.port}`;
    if (!methods.length) {
      throw new ConnectError(t.name, `no SSH credentials to offer ${where}: ${notes.join('; ') || 'no ssh-agent and no ~/.ssh/id_* key'}; pass --identity <keyfile>`);
    }
    const known = await knownKeyTypes({ file: t.knownHostsFile, host: t.host, port: t.port, acceptNew: t.acceptNewHostKeys });
    const preferred = known.flatMap((k) => ALGOS_FOR_TYPE[k] ?? []);
    const serverHostKey = [...preferred, ...ALL_HOSTKEY_ALGOS.filter((a) => !preferred.includes(a))];
    const sock = via ? await via.forward(t.host, t.port) : undefined;
    const conn = new Client();
    let verdict: Verdict | undefined;
    const queue = [...methods];
    const config: ConnectConfig = {
      host: t.host,
      port: t.port,
      username: t.user,
      readyTimeout: t.connectTimeoutMs ?? 20_000,
      // A dead link is noticed within ~20 s even when no packet says so (a host that vanished).
      keepaliveInterval: 5_000,
      keepaliveCountMax: 4,
      algorithms: { serverHostKey: serverHostKey as never },
      ...(sock ? { sock } : {}),
      hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
        verifyHostKey(key, { file: t.knownHostsFile, host: t.host, port: t.port, acceptNew: t.acceptNewHostKeys }).then(
          (v) => {
            verdict = v;
            verify(v.ok);
          },
          (e: unknown) => {
            verdict = { ok: false, reason: 'unknown', message: `cannot check ${t.knownHostsFile}: ${(e as Error).message}` };
            verify(false);
          },
        );
      },
      authHandler: (_left, _partial, next) => {
        const m = queue.shift();
        next(m ?? (false as never));
      },
    };
    return new Promise<SshTransport>((resolve, reject) => {
      let failed = false;
      const fail = (e: Error & { level?: string; code?: string }) => {
        // A peer that hangs up mid-handshake can emit more than one error: the first one counts.
        if (failed) return;
        failed = true;
        conn.removeAllListeners('ready');
        conn.end();
        let msg: string;
        if (verdict && !verdict.ok) msg = verdict.message;
        else if (e.level === 'client-authentication' && t.password !== undefined) {
          msg = `the password for ${t.user} was refused at ${t.host}:${t.port} (or the server takes no password logins for ${t.user}: PasswordAuthentication, PermitRootLogin).`;
        } else if (e.level === 'client-authentication') {
          msg = `authentication as ${t.user} failed at ${t.host}:${t.port} (offered: ${methods.map((m) => m.type).join(', ')}).${notes.length ? ` ${notes.join('; ')}.` : ''} Check the user and --identity.`;
        } else if (e.code === 'ECONNREFUSED') msg = `connection refused at ${t.host}:${t.port}: is sshd running and listening there?`;
        else if (e.level === 'client-timeout' || e.code === 'ETIMEDOUT') msg = `timed out connecting to ${t.host}:${t.port}`;
        else if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') msg = `cannot resolve host name ${t.host}`;
        else msg = `cannot connect to ${where}: ${e.message}`;
        reject(new ConnectError(t.name, msg, { cause: e }));
      };
      conn.on('error', fail);
      conn.once('ready', () => {
        conn.removeListener('error', fail);
        // Later connection errors surface through the channels that fail; keep the process alive.
        conn.on('error', () => {});
        // Each command is a few small packets each way; Nagle plus delayed ACKs would add ~40 ms to every one.
        conn.setNoDelay(true);
        resolve(new SshTransport(conn, t, via));
      });
      conn.connect(config);
    });
  }

  /** Fault injection for tests (HOSTSMITH_FAULT_CUT_AFTER_ARM): ends the connection as a cut link would, without closing the transport. */
  cutForTest(): void {
    this.conn.end();
  }

  private async slot(): Promise<void> {
    if (this.active < MAX_CHANNELS) {
      this.active++;
      return;
    }
    await new Promise<void>((r) => this.waiting.push(r));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }

  /** Exec channels opened (round trips), for the benchmark and the tests that count them. */
  execs = 0;

  protected async raw(cmdline: string, o: { stdin?: string | Buffer; timeoutMs?: number; signal?: AbortSignal }): Promise<ExecResult> {
    this.execs++;
    if (this.closed) throw new ConnectError(this.name, 'the SSH connection is closed');
    await this.slot();
    try {
      return await new Promise<ExecResult>((resolve, reject) => {
        // ssh2 throws at once ("Not connected") when its socket is gone before its close event
        // came: a lost link like any other, so the run reconnects instead of failing the step.
        try {
          this.conn.exec(cmdline, (err: Error | undefined, stream: ClientChannel) => {
            if (err) {
              reject(new ConnectError(this.name, `cannot open a channel: ${err.message}`, { cause: err }));
              return;
            }
            const out: Buffer[] = [];
            const errs: Buffer[] = [];
            const started = Date.now();
            let timedOut = false;
            const timer = o.timeoutMs
              ? setTimeout(() => {
                  timedOut = true;
                  stream.close();
                }, o.timeoutMs + BACKSTOP_MS)
              : undefined;
            stream.on('data', (d: Buffer) => out.push(d));
            stream.stderr.on('data', (d: Buffer) => errs.push(d));
            stream.on('close', (code: number | null, signal?: string) => {
              clearTimeout(timer);
              // No exit status and no signal: the channel died with the connection, not the command.
              if (code == null && !signal && !timedOut) {
                reject(new ConnectError(this.name, 'the SSH connection was lost while a command ran; the command may or may not have finished'));
                return;
              }
              const stdoutRaw = Buffer.concat(out);
              // Killed by a signal: 128 + its number, as sh reports it. `timeout -k` ends a command that
              // ignored SIGTERM with SIGKILL, which kills `timeout` too, so no 124 arrives; a KILL (or
              // 137 from a shell in between) once the limit has passed is that timeout.
              // ssh2 names it as Node does ("SIGKILL"); the protocol itself says "KILL".
              const signum = signal ? osConstants.signals[(signal.startsWith('SIG') ? signal : `SIG${signal}`) as keyof typeof osConstants.signals] : undefined;
              const exit = code ?? (signal ? (signum ? 128 + signum : 255) : 124);
              const killedAfterLimit = o.timeoutMs !== undefined && exit === 128 + osConstants.signals.SIGKILL && Date.now() - started >= o.timeoutMs;
              resolve({
                code: exit,
                stdout: stdoutRaw.toString('utf8'),
                stderr: Buffer.concat(errs).toString('utf8'),
                stdoutRaw,
                timedOut: timedOut || (o.timeoutMs !== undefined && exit === 124) || killedAfterLimit,
              });
            });
            stream.end(o.stdin ?? '');
          });
        } catch (e) {
          reject(new ConnectError(this.name, `the SSH connection was lost before the command was sent (${(e as Error).message}); nothing was run`, { cause: e }));
        }
      });
    } finally {
      this.release();
    }
  }

  async close(): Promise<void> {
    // HOSTSMITH_COUNT_EXECS=1: say how many round trips this host took (benchmark, tests).
    if (process.env.HOSTSMITH_COUNT_EXECS === '1') process.stderr.write(`hostsmith: ${this.name}: ${this.execs} exec channel(s)\n`);
    if (this.closed) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 2000);
      this.conn.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.conn.end();
    });
    this.closed = true;
    await this.via?.close();
  }
}
