/**
 * Plans as Terraform users read them: + create, ~ change, - remove, ? known after apply, and
 * "N to add, N to change, N to remove" per host and in total; `plan --detailed-exitcode` exits 2
 * when something would change and 0 when nothing would (this machine, through `--hosts local`).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Output } from '../../src/cli/output.js';
import type { RunEvent } from '../../src/engine/events.js';

function capture() {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => (text += d));
  const o = new Output({ json: false, color: false, verbose: false, tty: false, out, err: out });
  return { o, text: () => text };
}

const step = (host: string, name: string, extra: Record<string, unknown>): RunEvent =>
  ({ event: 'step-finished', runId: 'R', time: 't', host, step: name, type: 'file', status: 'planned', summary: `${name} summary`, irreversible: false, durationMs: 1, ...extra }) as RunEvent;

describe('plan symbols and the summary', () => {
  it('shows + ~ - ? per step and counts them per host and in total', () => {
    const { o, text } = capture();
    o.event({ event: 'run-started', runId: 'R', time: 't', recipe: 'r', mode: 'plan', hosts: ['h1', 'h2'] } as RunEvent);
    o.event(step('h1', 'Make', { action: 'create' }));
    o.event(step('h1', 'Edit', { action: 'change' }));
    o.event(step('h1', 'Drop', { action: 'remove' }));
    o.event(step('h2', 'Later', { dynamic: true, dependsOn: ['Make'], action: 'create' }));
    o.event(step('h2', 'Same', { status: 'unchanged' }));
    const host = (changed: number, unchanged: number) => ({ status: 'ok', changed, unchanged, skipped: 0, failed: 0, rolledBack: 0, durationMs: 5 });
    o.summary({ runId: 'R', mode: 'plan', status: 'ok', exitCode: 0, hosts: { h1: host(3, 0), h2: host(1, 1) }, durationMs: 9, sources: {} } as never);
    const t = text();
    expect(t).toContain('h1  + Make  will create: Make summary');
    expect(t).toContain('h1  ~ Edit  will change: Edit summary');
    expect(t).toContain('h1  - Drop  will remove: Drop summary');
    expect(t).toContain('h2  ? Later  Later summary');
    expect(t).toContain('h2  = Same  unchanged: Same summary');
    expect(t).toContain('h1: 1 to add, 1 to change, 1 to remove\n');
    expect(t).toContain('h2: 0 to add, 0 to change, 0 to remove, 1 known after apply\n');
    expect(t).toContain('Plan: 1 to add, 1 to change, 1 to remove, 1 known after apply (on 2 of 2 hosts).');
  });
});

describe('plan --detailed-exitcode', () => {
  const BIN = resolve(import.meta.dirname, '../../bin/hostsmith.js');
  it('2 when something would change, 0 when nothing would; without the flag 0 both times', () => {
    const dir = mkdtempSync(join(tmpdir(), 'hostsmith-dx-'));
    writeFileSync(join(dir, 'r.yml'), `name: dx\nsteps:\n  - name: Marker\n    file: { path: ${dir}/marker, content: "x\\n" }\n`);
    const run = (...extra: string[]) =>
      spawnSync(process.execPath, [BIN, 'plan', join(dir, 'r.yml'), '--hosts', 'local', '--state-dir', join(dir, 'state'), ...extra], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    const changes = run('--detailed-exitcode');
    expect(changes.status, changes.stderr + changes.stdout).toBe(2);
    expect(changes.stdout + changes.stderr).toContain('+ Marker  will create');
    expect(run().status).toBe(0);
    writeFileSync(join(dir, 'marker'), 'x\n');
    const none = run('--detailed-exitcode');
    expect(none.status, none.stderr + none.stdout).toBe(0);
    expect(none.stdout + none.stderr).toContain('Plan: nothing to change.');
  });
});
