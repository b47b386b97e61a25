/**
 * Everything that reaches a remote shell is built here, so quoting lives in one place.
 */

/** POSIX single-quote a string for sh. */
export function quote(s: string | number): string {
  const str = String(s);
  if (str !== '' && /^[A-Za-z0-9_\/.,:=@%+-]+$/.test(str)) return str;
  return `'${str.replace(/'/g, `'\\''`)}'`;
}

export interface WrapOptions {
  sudo?: boolean;
  user?: string;
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  /** The login user; sudo is skipped when it is root and no other user is asked for. */
  loginUser?: string;
}

/**
 * Wraps a shell command with cwd, env, timeout and sudo. The command itself always runs
 * under `sh -c`, so the login shell's quirks do not matter.
 */
export function wrapCommand(cmd: string, o: WrapOptions = {}): string {
  let inner = cmd;
  if (o.cwd) inner = `cd ${quote(o.cwd)} && ${inner}`;
  if (o.env && Object.keys(o.env).length) {
    const assigns = Object.entries(o.env).map(([k, v]) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`invalid environment variable name: ${k}`);
      return `${k}=${quote(v)}`;
    });
    inner = `export ${assigns.join(' ')}; ${inner}`;
  }
  let full = `sh -c ${quote(inner)}`;
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

export function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

/**
 * A script that writes stdin to `path` atomically: temp file in the same directory,
 * metadata set on the temp file, then rename. Without an explicit mode/owner the
 * existing file's are kept.
 */
export function atomicWriteScript(path: string, o: { mode?: number; owner?: string; group?: string }): string {
  const p = quote(path);
  const lines = [
    'set -e',
    `dir=$(dirname -- ${p})`,
    `tmp=$(mktemp "$dir/.hostsmith.XXXXXXXX")`,
    `trap 'rm -f -- "$tmp"' EXIT`,
    'cat > "$tmp"',
    `if [ -e ${p} ]; then chmod --reference=${p} "$tmp"; chown --reference=${p} "$tmp" 2>/dev/null || true; else chmod 0644 "$tmp"; fi`,
  ];
  if (o.mode !== undefined) lines.push(`chmod ${octal(o.mode)} "$tmp"`);
  if (o.owner || o.group) lines.push(`chown ${quote(`${o.owner ?? ''}${o.group ? `:${o.group}` : ''}`)} "$tmp"`);
  lines.push(`mv -f -- "$tmp" ${p}`, 'trap - EXIT');
  return lines.join('\n');
}

/** Reads a file as raw bytes; exit 44 means it does not exist. */
export function readFileScript(path: string): string {
  const p = quote(path);
  return `if [ -e ${p} ] || [ -L ${p} ]; then cat -- ${p}; else exit 44; fi`;
}
