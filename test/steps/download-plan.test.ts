import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import { downloadSchema, downloadStep, fetchVerified, planDownload } from '../../src/steps/download/download.js';
import type { PathState } from '../../src/steps/file-state.js';
import { sha256 } from '../../src/steps/step.js';

const env = { runId: 'R1', step: 'Get tool', backupDir: '/var/lib/hostsmith/backups/R1' };
const BODY = Buffer.from('#!/bin/sh\necho tool 1.2\n');
const HASH = sha256(BODY);
const params = (o: Record<string, unknown> = {}) => downloadSchema.parse({ url: 'https://example.test/tool', dest: '/usr/local/bin/tool', sha256: HASH, ...o });
const file = (content: Buffer, mode = 0o755): PathState => ({ kind: 'file', content, mode, owner: 'root', group: 'root', missing: [] });

describe('download: params', () => {
  it.each([
    [{ sha256: 'abc' }, /64 hex digits/],
    [{ url: 'ftp://example.test/x' }, /http:\/\/ and https:\/\//],
    [{ url: 'not a url' }, /must be a URL/],
    [{ dest: 'tool' }, /absolute path/],
    [{ checksum: HASH }, /Unrecognized key/],
  ])('%j is refused: %s', (o, why) => {
    const r = downloadSchema.safeParse({ url: 'https://example.test/tool', dest: '/usr/local/bin/tool', sha256: HASH, ...o });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });

  it('an upper-case checksum is the same checksum', () => {
    expect(params({ sha256: HASH.toUpperCase() }).sha256).toBe(HASH);
  });

  it('reads and may write exactly its dest (and the folders on the way)', () => {
    const f = downloadStep.footprint(params());
    expect(f.reads).toContain('path:/usr/local/bin/tool');
    expect(f.writes).toContain('path:/usr/local/bin/tool');
    expect(f.writes).not.toContain('*');
  });
});

describe('download: plan (no fetch at plan time: the checksum decides)', () => {
  it('absent: create, with the URL and checksum in the summary; undo removes it and its new folders', () => {
    const plan = planDownload(params(), { kind: 'absent', missing: ['/usr/local/bin'] }, env);
    expect(plan).toMatchObject({ changed: true, action: 'create', undo: { kind: 'absent', path: '/usr/local/bin/tool', created: ['/usr/local/bin'] } });
    expect(plan.summary).toBe(`download https://example.test/tool to /usr/local/bin/tool (sha256 ${HASH.slice(0, 12)}…)`);
  });

  it('the same bytes already there: unchanged, never fetched again', () => {
    expect(planDownload(params(), file(BODY), env)).toMatchObject({ changed: false, undo: null });
  });

  it('the same bytes with another mode: only the mode changes (no backup of the content)', () => {
    const plan = planDownload(params({ mode: '0700' }), file(BODY), env);
    expect(plan.changed).toBe(true);
    expect(plan.summary).toMatch(/mode 0755 → 0700/);
    expect(plan.undo).toMatchObject({ kind: 'file', mode: 0o755 });
    expect((plan.undo as { backup?: string }).backup).toBeUndefined();
  });

  it('other bytes: replaced, old and new checksums shown, the old file backed up', () => {
    const old = Buffer.from('old\n');
    const plan = planDownload(params(), file(old), env);
    expect(plan.summary).toBe(`download https://example.test/tool over /usr/local/bin/tool (sha256 ${sha256(old).slice(0, 12)}… → ${HASH.slice(0, 12)}…)`);
    expect(plan.undo).toMatchObject({ kind: 'file', path: '/usr/local/bin/tool', backup: expect.stringMatching(/^\/var\/lib\/hostsmith\/backups\/R1\/.*\/usr\/local\/bin\/tool$/) });
  });

  it('a directory or a link at dest is an error that says what is there', () => {
    expect(() => planDownload(params(), { kind: 'directory', mode: 0o755, owner: 'root', group: 'root', missing: [] }, env)).toThrow(StepError);
    expect(() => planDownload(params(), { kind: 'link', target: '/etc/shadow', owner: 'root', group: 'root', missing: [] }, env)).toThrow(/is a link/);
  });
});

describe('download: fetching (a real HTTP server on this machine)', () => {
  let server: Server;
  let base: string;
  let hits = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      hits++;
      if (req.url === '/tool') res.end(BODY);
      else if (req.url === '/changed') res.end('something else');
      else {
        res.statusCode = 404;
        res.end('no');
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('fetches once for any number of hosts', async () => {
    hits = 0;
    const all = await Promise.all([1, 2, 3].map(() => fetchVerified(`${base}/tool`, HASH)));
    expect(all.every((b) => b.equals(BODY))).toBe(true);
    expect(hits).toBe(1);
  });

  it('a checksum that does not match is refused, with both checksums, and not kept', async () => {
    await expect(fetchVerified(`${base}/changed`, HASH)).rejects.toThrow(new RegExp(`${base}/changed has sha256 ${sha256('something else')}, not the ${HASH}`));
    hits = 0;
    await expect(fetchVerified(`${base}/changed`, HASH)).rejects.toThrow(StepError);
    expect(hits).toBe(1);
  });

  it('an HTTP error and an unreachable server say so', async () => {
    await expect(fetchVerified(`${base}/missing`, HASH)).rejects.toThrow(/answered 404/);
    await expect(fetchVerified('http://127.0.0.1:1/x', HASH)).rejects.toThrow(/cannot fetch http:\/\/127\.0\.0\.1:1\/x from this machine/);
  });
});
