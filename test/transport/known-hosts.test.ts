import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { keysFor, verifyHostKey } from '../../src/transport/known-hosts.js';

function blob(type: string, body: Buffer): Buffer {
  const t = Buffer.from(type);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(t.length);
  return Buffer.concat([len, t, body]);
}
const keyA = blob('ssh-ed25519', randomBytes(36));
const keyB = blob('ssh-ed25519', randomBytes(36));
const keyC = blob('ecdsa-sha2-nistp256', randomBytes(40));

function file(content: string): string {
  const f = join(mkdtempSync(join(tmpdir(), 'kh-')), 'known_hosts');
  writeFileSync(f, content);
  return f;
}

describe('known_hosts', () => {
  it('matches plain, bracketed-port and hashed entries', () => {
    const salt = randomBytes(20);
    const hash = createHmac('sha1', salt).update('[10.0.0.5]:2222').digest('base64');
    const text = [`web1,10.0.0.1 ssh-ed25519 ${keyA.toString('base64')}`, `|1|${salt.toString('base64')}|${hash} ssh-ed25519 ${keyB.toString('base64')}`].join('\n');
    expect(keysFor(text, '10.0.0.1').keys).toHaveLength(1);
    expect(keysFor(text, '[10.0.0.5]:2222').keys[0]!.blob.equals(keyB)).toBe(true);
    expect(keysFor(text, '10.0.0.5').keys).toHaveLength(0);
  });

  it('accepts a known key', async () => {
    const f = file(`[h]:22022 ssh-ed25519 ${keyA.toString('base64')}\n`);
    expect(await verifyHostKey(keyA, { file: f, host: 'h', port: 22022, acceptNew: false })).toEqual({ ok: true });
  });

  it('refuses an unknown key unless told to accept new ones, then records it', async () => {
    const f = file('');
    const v = await verifyHostKey(keyA, { file: f, host: 'h', port: 2200, acceptNew: false });
    expect(v).toMatchObject({ ok: false, reason: 'unknown' });
    expect(await verifyHostKey(keyA, { file: f, host: 'h', port: 2200, acceptNew: true })).toEqual({ ok: true, added: true });
    expect(readFileSync(f, 'utf8')).toBe(`[h]:2200 ssh-ed25519 ${keyA.toString('base64')}\n`);
    expect(await verifyHostKey(keyA, { file: f, host: 'h', port: 2200, acceptNew: false })).toEqual({ ok: true });
  });

  it('refuses a changed key even with acceptNew', async () => {
    const f = file(`h ssh-ed25519 ${keyA.toString('base64')}\n`);
    const v = await verifyHostKey(keyB, { file: f, host: 'h', port: 22, acceptNew: true });
    expect(v).toMatchObject({ ok: false, reason: 'changed' });
    if (!v.ok) expect(v.message).toMatch(/HOST KEY CHANGED.*ssh-keygen -R/);
    expect(readFileSync(f, 'utf8')).not.toContain(keyB.toString('base64'));
  });

  it('treats a key of another type as new, not changed', async () => {
    const f = file(`h ssh-ed25519 ${keyA.toString('base64')}\n`);
    expect(await verifyHostKey(keyC, { file: f, host: 'h', port: 22, acceptNew: false })).toMatchObject({ ok: false, reason: 'unknown' });
  });

  it('honours @revoked', async () => {
    const f = file(`@revoked h ssh-ed25519 ${keyA.toString('base64')}\nh ssh-ed25519 ${keyA.toString('base64')}\n`);
    expect(await verifyHostKey(keyA, { file: f, host: 'h', port: 22, acceptNew: true })).toMatchObject({ ok: false, reason: 'revoked' });
  });
});
