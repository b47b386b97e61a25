import { createHash, createHmac } from 'node:crypto';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** A host key as the server sent it: the SSH wire blob. */
export function keyType(blob: Buffer): string {
  const len = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + len).toString('ascii');
}

export function keyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** How OpenSSH names a host in known_hosts: bare for port 22, else [host]:port. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** The key type as `ssh` names it in messages: ED25519, ECDSA, RSA, DSA. */
export function keyTypeLabel(type: string): string {
  if (type === 'ssh-ed25519') return 'ED25519';
  if (type.startsWith('ecdsa-sha2-')) return 'ECDSA';
  if (type === 'ssh-rsa') return 'RSA';
  if (type === 'ssh-dss') return 'DSA';
  return type.toUpperCase();
}

/** The fingerprint line exactly as `ssh` shows it for an unknown host: `ED25519 key fingerprint is SHA256:….` */
export function fingerprintMessage(blob: Buffer): string {
  return `${keyTypeLabel(keyType(blob))} key fingerprint is ${keyFingerprint(blob)}.`;
}

/** One known_hosts line for a host key, named as OpenSSH names it (see knownHostName). */
export function knownHostsLine(host: string, port: number, blob: Buffer): string {
  return `${knownHostName(host, port)} ${keyType(blob)} ${blob.toString('base64')}`;
}

/** Appends the host's key to a known_hosts file (created 0600, its folder 0700, when missing). */
export async function appendKnownHost(file: string, host: string, port: number, blob: Buffer): Promise<void> {
  const text = await readText(file);
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const sep = text && !text.endsWith('\n') ? '\n' : '';
  await appendFile(file, `${sep}${knownHostsLine(host, port, blob)}\n`, { mode: 0o600 });
}

function matchesPattern(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    return createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64') === hash;
  }
  if (pattern.includes('*') || pattern.includes('?')) {
    const re = new RegExp(
      `^${pattern
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/\?/g, '.')}$`,
    );
    return re.test(name);
  }
  return pattern === name;
}

export interface KnownKey {
  type: string;
  blob: Buffer;
  line: number;
}

/** Keys recorded for `name`; negated patterns and @revoked/@cert-authority lines are honoured or skipped. */
export function keysFor(text: string, name: string): { keys: KnownKey[]; revoked: Buffer[] } {
  const keys: KnownKey[] = [];
  const revoked: Buffer[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    let fields = line.split(/\s+/);
    let marker = '';
    if (fields[0]?.startsWith('@')) {
      marker = fields[0];
      fields = fields.slice(1);
    }
    const [hosts, type, b64] = fields;
    if (!hosts || !type || !b64 || marker === '@cert-authority') return;
    const patterns = hosts.split(',');
    if (patterns.some((p) => p.startsWith('!') && matchesPattern(p.slice(1), name))) return;
    if (!patterns.some((p) => !p.startsWith('!') && matchesPattern(p, name))) return;
    const blob = Buffer.from(b64, 'base64');
    if (marker === '@revoked') revoked.push(blob);
    else keys.push({ type, blob, line: i + 1 });
  });
  return { keys, revoked };
}

export type Verdict = { ok: true; added?: boolean } | { ok: false; reason: 'unknown' | 'changed' | 'revoked'; message: string };

export interface VerifyOptions {
  file: string;
  host: string;
  port: number;
  acceptNew: boolean;
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw e;
  }
}

/** Key types recorded for the host, so the client asks the server for those first (as OpenSSH does). */
export async function knownKeyTypes(o: VerifyOptions): Promise<string[]> {
  const { keys } = keysFor(await readText(o.file), knownHostName(o.host, o.port));
  return [...new Set(keys.map((k) => k.type))];
}

export async function verifyHostKey(blob: Buffer, o: VerifyOptions): Promise<Verdict> {
  const name = knownHostName(o.host, o.port);
  const text = await readText(o.file);
  const { keys, revoked } = keysFor(text, name);
  const type = keyType(blob);
  const fp = keyFingerprint(blob);
  if (revoked.some((r) => r.equals(blob))) {
    return { ok: false, reason: 'revoked', message: `host key ${fp} for ${name} is marked @revoked in ${o.file}` };
  }
  if (keys.some((k) => k.blob.equals(blob))) return { ok: true };
  const sameType = keys.filter((k) => k.type === type);
  if (sameType.length) {
    const lines = sameType.map((k) => k.line).join(', ');
    return {
      ok: false,
      reason: 'changed',
      message:
        `HOST KEY CHANGED for ${name}: it now presents ${type} ${fp}, but ${o.file} (line ${lines}) records another key. ` +
        `This may be an attack, or the host was reinstalled. If you know why it changed, remove the old entry ` +
        `(ssh-keygen -R '${name}' -f ${o.file}) and connect again. --accept-new-host-keys does not override a changed key.`,
    };
  }
  if (!o.acceptNew) {
    return {
      ok: false,
      reason: 'unknown',
      message: `unknown host key for ${name} (${type} ${fp}); it is not in ${o.file}. ` + `Check the fingerprint, then run again with --accept-new-host-keys to record it, or add it with ssh-keyscan.`,
    };
  }
  await appendKnownHost(o.file, o.host, o.port, blob);
  return { ok: true, added: true };
}
