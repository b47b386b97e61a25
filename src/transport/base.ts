import { HostsmithError } from '../errors.js';
import { atomicWriteScript, frameCommand, readFileScript } from '../shell/script.js';
import type { ExecOptions, ExecResult, Transport, WriteOptions } from './transport.js';

export interface RawExec {
  /** Runs a complete shell command line as the login user. */
  (cmdline: string, o: { stdin?: string | Buffer; timeoutMs?: number; signal?: AbortSignal }): Promise<ExecResult>;
}

/**
 * Transports differ only in how a command line gets to a shell; reading and writing files,
 * sudo, cwd, env and timeouts are built once here on top of that.
 */
/** Batched results a transport may answer a command from. */
export interface Prefetch {
  take(cmdline: string, stdin: Buffer): ExecResult | undefined;
  /** What a change read back of the state it left: answers the same read, framed the same way, until the next change. */
  seed?(cmdline: string, stdin: Buffer, result: ExecResult): void;
}

export abstract class ShellTransport implements Transport {
  abstract readonly name: string;
  // Set through the methods below by whoever owns the connection, read by everyone.
  #loginUser: string | undefined;
  #defaultSudo = false;
  #runTag: string | undefined;
  #prefetched: Prefetch | undefined;

  /** The login user, once known (facts); sudo is skipped for root. */
  get loginUser(): string | undefined {
    return this.#loginUser;
  }
  /** Whether a command takes sudo when it does not say (the host's default). */
  get defaultSudo(): boolean {
    return this.#defaultSudo;
  }
  /** The run whose commands this transport runs: each gets HOSTSMITH_RUN=<id> in its environment. */
  get runTag(): string | undefined {
    return this.#runTag;
  }

  /** Who the commands run as, once the host's facts say, and whether they take sudo unless told. */
  identify(loginUser: string | undefined, o: { defaultSudo?: boolean } = {}): void {
    this.#loginUser = loginUser;
    this.#defaultSudo = o.defaultSudo ?? false;
  }

  /** Tags every command from now on as the run's (recover finds what a dead controller left running by it). */
  tagRun(runId: string | undefined): void {
    this.#runTag = runId;
  }

  /**
   * Results of commands already run in a batch (engine/probe.ts), by their exact framed form: a
   * command framed the same way gets its batched result instead of a round trip of its own.
   */
  usePrefetched(p: Prefetch | undefined): void {
    this.#prefetched = p;
  }

  /** Takes over another transport's identity and run tag (a stand-in that records, a fresh login). */
  sameAs(other: ShellTransport): void {
    this.identify(other.loginUser, { defaultSudo: other.defaultSudo });
    this.tagRun(other.runTag);
  }

  /** Makes a lost connection again, in place, within `budgetMs`; absent where a link cannot be lost (local). */
  reconnect?(budgetMs: number): Promise<void>;

  protected abstract raw(cmdline: string, o: { stdin?: string | Buffer; timeoutMs?: number; signal?: AbortSignal }): Promise<ExecResult>;
  abstract close(): Promise<void>;

  /**
   * Every command goes the same way: the exec command line is a fixed bootstrap with no data in
   * it, and the script (env, cwd, the command) comes first on stdin, so nothing a command holds
   * shows in the host's process list.
   */
  async exec(cmd: string, o: ExecOptions = {}): Promise<ExecResult> {
    const framed = frameCommand(cmd, {
      sudo: o.sudo ?? this.defaultSudo,
      user: o.user,
      cwd: o.cwd,
      env: o.env,
      timeoutMs: o.timeoutMs,
      loginUser: this.loginUser,
      stdin: o.stdin,
      tag: this.runTag,
    });
    const ready = this.#prefetched?.take(framed.cmdline, framed.stdin);
    if (ready) return ready;
    return this.raw(framed.cmdline, { stdin: framed.stdin, timeoutMs: o.timeoutMs, signal: o.signal });
  }

  /**
   * `cmd`, run with `o` as exec would run it, printed `stdout` with exit 0: a change's exec read
   * back the state it left with the very script a later read would send, so that read is
   * answered from here (engine/probe.ts drops it with the next change) instead of a round trip.
   */
  seedRead(cmd: string, o: ExecOptions, stdout: Buffer): void {
    if (!this.#prefetched?.seed) return;
    const framed = frameCommand(cmd, { sudo: o.sudo ?? this.defaultSudo, user: o.user, cwd: o.cwd, env: o.env, timeoutMs: o.timeoutMs, loginUser: this.loginUser, tag: this.runTag });
    this.#prefetched.seed(framed.cmdline, framed.stdin, { code: 0, stdout: stdout.toString('utf8'), stderr: '', stdoutRaw: stdout });
  }

  async readFile(path: string, o: { sudo?: boolean } = {}): Promise<Buffer | null> {
    const r = await this.exec(readFileScript(path), { sudo: o.sudo });
    if (r.code === 44) return null;
    if (r.code !== 0) throw new HostsmithError(`${this.name}: cannot read ${path}: ${r.stderr.trim() || `exit ${r.code}`}`);
    return r.stdoutRaw;
  }

  async writeFile(path: string, data: Buffer, o: WriteOptions = {}): Promise<void> {
    const r = await this.exec(atomicWriteScript(path, o), { sudo: o.sudo, stdin: data });
    if (r.code !== 0) {
      const denied = /Permission denied|Operation not permitted/.test(r.stderr) && !(o.sudo ?? this.defaultSudo) && this.loginUser !== 'root';
      const hint = denied ? ` (${this.loginUser ?? 'the login user'} may not write there: log in as root, or use sudo: true on the recipe or step, or --sudo)` : '';
      throw new HostsmithError(`${this.name}: cannot write ${path}: ${r.stderr.trim() || `exit ${r.code}`}${hint}`);
    }
  }
}

/** Timeouts are enforced on the host by `timeout`; this is the controller's backstop. */
export const BACKSTOP_MS = 15_000;
