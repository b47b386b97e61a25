/**
 * The password login's one job: put the person's public key in the login user's
 * ~/.ssh/authorized_keys, so every later login (this run's included) is by key.
 */
import { readFileSync } from 'node:fs';
import ssh2 from 'ssh2';
import type { ShellTransport } from '../../transport/base.js';

const { utils } = ssh2;

export interface PublicKey {
  /** `type base64 [comment]`, one line, as it goes into authorized_keys. */
  line: string;
  type: string;
  blob: string;
}

/** Reads an OpenSSH public key file (one key); returns the reason when it is not one. */
export function readPublicKey(file: string): PublicKey | string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    return `cannot read ${file}: ${(e as Error).message}`;
  }
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) return `${file} is a private key: give its public key (${file}.pub), which is what goes on the server`;
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (lines.length !== 1) return `${file} should hold one public key line (type, key, comment); it has ${lines.length}`;
  const m = /^([a-z0-9@.-]+)\s+([A-Za-z0-9+/]+={0,2})(\s+[^\r\n]*)?$/.exec(lines[0]!);
  const parsed = m ? utils.parseKey(lines[0]!) : undefined;
  if (!m || !parsed || parsed instanceof Error || (Array.isArray(parsed) ? parsed.length !== 1 : parsed.isPrivateKey())) {
    return `${file} is not an OpenSSH public key (expected a line like "ssh-ed25519 AAAA… you@laptop")`;
  }
  return { line: lines[0]!, type: m[1]!, blob: m[2]! };
}

/** Checks a private key file hostsmith can log in with (no passphrase); returns the reason when not. */
export function checkPrivateKey(file: string, pub?: PublicKey): true | string {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    return `cannot read ${file}: ${(e as Error).message}`;
  }
  const parsed = utils.parseKey(buf);
  if (parsed instanceof Error) {
    return /encrypted|passphrase/i.test(parsed.message)
      ? `${file} is passphrase-protected: load it into ssh-agent (ssh-add ${file}) and choose ssh-agent instead`
      : `${file} is not a private key hostsmith can use: ${parsed.message}`;
  }
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key?.isPrivateKey()) return `${file} is not a private key`;
  if (pub && key.getPublicSSH().toString('base64') !== pub.blob) return `${file} is not the private key of that public key`;
  return true;
}

/**
 * Creates ~/.ssh (0700) and authorized_keys (0600) when missing, and appends the key unless it
 * is already there (matched by the key itself, whatever the comment or options). Modes of an
 * existing folder or file are left alone. The key travels on stdin.
 */
export const INSTALL_KEY_SCRIPT = [
  'umask 077',
  'key=$(cat)',
  "blob=$(printf '%s\\n' \"$key\" | awk '{print $2}')",
  '[ -n "$blob" ] || { echo "no key arrived" >&2; exit 1; }',
  'd="$HOME/.ssh"; f="$d/authorized_keys"',
  '[ -d "$d" ] || mkdir -m 700 -- "$d" || exit 1',
  'if [ -f "$f" ] && grep -qF -- " $blob" "$f"; then echo present; exit 0; fi',
  'if [ -s "$f" ] && [ -n "$(tail -c1 -- "$f")" ]; then printf \'\\n\' >> "$f" || exit 1; fi',
  'printf \'%s\\n\' "$key" >> "$f" || exit 1',
  'echo added',
].join('\n');

export async function installAuthorizedKey(t: ShellTransport, key: PublicKey): Promise<'added' | 'present'> {
  const r = await t.exec(INSTALL_KEY_SCRIPT, { sudo: false, stdin: `${key.line}\n`, timeoutMs: 30_000 });
  const said = r.stdout.trim();
  if (r.code !== 0 || (said !== 'added' && said !== 'present')) {
    throw new Error(`cannot add the key to ~/.ssh/authorized_keys: ${r.stderr.trim() || said || `exit ${r.code}`}`);
  }
  return said;
}
