/**
 * `download` on a real host: the bytes come from an HTTP server on this machine (the controller
 * fetches, the host needs no curl), are checked against the recipe's sha256 before anything is
 * written, and a host that already has them is never fetched for again.
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents } from './cli.js';
import { stepBattery } from './step-battery.js';

const TOOL = Buffer.from('#!/bin/sh\necho "tool 1.2"\n');
const DATA = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251));
const hash = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
let hits: string[] = [];
const server = createServer((req, res) => {
  hits.push(req.url ?? '');
  if (req.url === '/tool') res.end(TOOL);
  else if (req.url === '/data.bin') res.end(DATA);
  else {
    res.statusCode = 404;
    res.end();
  }
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const BASE = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
afterAll(() => new Promise<void>((r) => server.close(() => r())));

stepBattery('download', {
  steps: `  - name: Get tool
    download: { url: "${BASE}/tool", dest: /opt/hs-dl/bin/tool, sha256: ${hash(TOOL)}, mode: "0755" }
  - name: Get data
    download: { url: "${BASE}/data.bin", dest: /etc/hs-dl-data.bin, sha256: ${hash(DATA)} }
`,
  async setup(sb, h) {
    // An older copy to be replaced (and put back by rollback and undo).
    await sshOk(sb, h, "printf 'old data\\n' > /etc/hs-dl-data.bin && chmod 0640 /etc/hs-dl-data.bin");
  },
  async verify(sb, h) {
    expect(await sshOk(sb, h, 'sha256sum /opt/hs-dl/bin/tool /etc/hs-dl-data.bin | cut -d" " -f1')).toBe(`${hash(TOOL)}\n${hash(DATA)}\n`);
    expect(await sshOk(sb, h, '/opt/hs-dl/bin/tool; stat -c %a /opt/hs-dl/bin/tool')).toBe('tool 1.2\n755\n');
  },
});

describeHosts('download: checksums and fetching', () => {
  const sandbox = useSandbox(1);
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const state = () => {
    const d = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    dirs.push(d);
    return d;
  };

  it('a file already there with the checksum is not fetched again, by plan or apply', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({ 'r.yml': `name: dl\nsteps:\n  - name: Get tool\n    download: { url: "${BASE}/tool", dest: /usr/local/bin/hs-tool, sha256: ${hash(TOOL)} }\n` });
    dirs.push(dir);
    const s = state();
    hits = [];
    const first = await hostsmith(['apply', join(dir, 'r.yml'), '--yes', '--hosts', h.name, ...sandboxArgs(sb, s), '--json']);
    expect(first.code, first.stderr).toBe(0);
    expect(hits).toEqual(['/tool']);
    hits = [];
    const plan = await hostsmith(['plan', join(dir, 'r.yml'), '--hosts', h.name, ...sandboxArgs(sb, s), '--json']);
    const again = await hostsmith(['apply', join(dir, 'r.yml'), '--yes', '--hosts', h.name, ...sandboxArgs(sb, s), '--json']);
    expect([plan.code, again.code], again.stderr).toEqual([0, 0]);
    expect(stepEvents(again).map((e) => e.status)).toEqual(['unchanged']);
    expect(hits).toEqual([]);
  });

  it('bytes that do not match the checksum: the step fails, nothing is written, earlier steps rolled back', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const dir = fixture({
      'r.yml': `name: dl-bad
steps:
  - name: Marker
    file: { path: /etc/hs-dl-marker, content: "m\\n" }
  - name: Get tool
    download: { url: "${BASE}/tool", dest: /usr/local/bin/hs-bad, sha256: "${'0'.repeat(64)}" }
`,
    });
    dirs.push(dir);
    const r = await hostsmith(['apply', join(dir, 'r.yml'), '--yes', '--hosts', h.name, ...sandboxArgs(sb, state())]);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout + r.stderr).toContain(`${BASE}/tool has sha256 ${hash(TOOL)}, not the ${'0'.repeat(64)} the recipe gives`);
    expect((await sshRun(sb, h, 'test -e /usr/local/bin/hs-bad || test -e /etc/hs-dl-marker')).code).not.toBe(0);
  });
});
