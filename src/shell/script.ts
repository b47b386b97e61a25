/**
 * Everything that reaches a remote shell is built here, so quoting lives in one place.
 */
import { HostsmithError } from '../errors.js';
import { octal, quote } from './quote.js';

export { octal, quote } from './quote.js';
import { enterScript, splitPath, withSafePath } from './safe-path.js';

export interface WrapOptions {
  sudo?: boolean;
  user?: string;
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  /** The login user; sudo is skipped when it is root and no other user is asked for. */
  loginUser?: string;
  /**
   * The run the command belongs to: exported as HOSTSMITH_RUN, so that a command a dead
   * controller left running can be found on the host (by its environment) and stopped.
   */
  tag?: string;
}

/** The last line of every script: the bootstrap runs a script only when it arrived whole. */
export const SCRIPT_END = '#hostsmith-end';

/**
 * What runs the script: the first line of stdin is its length in bytes, then come the script
 * and whatever stdin the command itself gets. `read` reads one byte at a time from a pipe and
 * GNU `head -c N` reads no more than N bytes, so the command's stdin is left where it was. A
 * script cut short (a lost connection) is not run at all (exit 125).
 */
export const BOOTSTRAP = 'read -r n; s=$(head -c "$n"); case $s in *"' + SCRIPT_END + '") eval "$s";; *) echo "hostsmith: the command did not arrive whole; nothing was run" >&2; exit 125;; esac';

export interface Framed {
  /** The exec command line: fixed words only, never data (every user on the host can see it in `ps`). */
  cmdline: string;
  /** `<bytes>\n<script><the command's own stdin>`. */
  stdin: Buffer;
}

/**
 * The script for `cmd` with cwd and env: it runs under `sh`, so the login shell's quirks do not
 * matter. It travels on stdin, so secrets in env values or in the command text never reach
 * the host's process list.
 */
export function commandScript(cmd: string, o: Pick<WrapOptions, 'cwd' | 'env' | 'tag'> = {}): string {
  // The bootstrap's own variables are not the command's business. Everything before the command
  // stays on its first line, so the shell's error messages count the command's lines as before.
  const pre = ['unset n s'];
  if (o.tag) pre.push(`export HOSTSMITH_RUN=${quote(o.tag)}`);
  if (o.env && Object.keys(o.env).length) {
    const assigns = Object.entries(o.env).map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid environment variable name: ${k}`);
      return `${k}=${quote(v)}`;
    });
    pre.push(`export ${assigns.join(' ')}`);
  }
  if (o.cwd) pre.push(`cd -- ${quote(o.cwd)} || exit 1`);
  const script = `${pre.join('; ')}; ${cmd}\n${SCRIPT_END}`;
  // A shell cannot hold a NUL byte: it would silently drop it and run a different command.
  if (script.includes('\0')) {
    throw new HostsmithError(
      "a command, its cwd or an environment value holds a NUL byte (often from an earlier step's output), which no shell can pass on; nothing was sent to the host: remove the NUL from the value",
    );
  }
  return script;
}

/** The fixed command line around the bootstrap: timeout, then sudo (as before, sudo is outermost). */
export function bootstrapLine(o: Pick<WrapOptions, 'sudo' | 'user' | 'timeoutMs' | 'loginUser'> = {}): string {
  let full = `sh -c ${quote(BOOTSTRAP)}`;
  if (o.timeoutMs && o.timeoutMs > 0) {
    const secs = Math.max(1, Math.ceil(o.timeoutMs / 1000));
    full = `timeout -k 5 ${secs} ${full}`;
  }
  const root = o.loginUser === 'root';
  if (o.user && o.user !== o.loginUser) {
    full = `sudo -n -H -u ${quote(o.user)} -- ${full}`;
  } else if (o.sudo && !root) {
    full = `sudo -n -- ${full}`;
  }
  return full;
}

/**
 * A command as it goes to the host: a fixed command line, and on stdin the script (cwd, env,
 * the command) followed by the command's own stdin.
 */
export function frameCommand(cmd: string, o: WrapOptions & { stdin?: string | Buffer } = {}): Framed {
  const script = Buffer.from(commandScript(cmd, o), 'utf8');
  const rest = o.stdin === undefined ? Buffer.alloc(0) : Buffer.isBuffer(o.stdin) ? o.stdin : Buffer.from(o.stdin, 'utf8');
  return { cmdline: bootstrapLine(o), stdin: Buffer.concat([Buffer.from(`${script.length}\n`), script, rest]) };
}

/**
 * A script that writes stdin to `path` atomically: temp file in the same directory,
 * metadata set on the temp file, then rename. Without an explicit mode/owner the
 * existing file's are kept.
 */
export function atomicWriteScript(path: string, o: { mode?: number; owner?: string; group?: string }): string {
  const { dir, base } = splitPath(path);
  const own = o.owner || o.group ? `${o.owner ?? ''}${o.group ? `:${o.group}` : ''}` : '';
  // Entered without following a link another user could plant; the file opened without following one.
  return withSafePath([enterScript(dir), `hs_write ${quote(base)} ${o.mode !== undefined ? octal(o.mode) : "''"} ${quote(own)}`].join('\n'));
}

/** Reads a file as raw bytes; exit 44 means it does not exist. */
export function readFileScript(path: string): string {
  const p = quote(path);
  return `if [ -e ${p} ] || [ -L ${p} ]; then cat -- ${p}; else exit 44; fi`;
}
