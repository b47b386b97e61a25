/** Journal entries as the engine writes them, for tables of runs (replay, history, show). */
import type { JournalEntry } from '../../src/engine/journal.js';

export const RUN = '20240501T030000Z-abc123';
const T = (n: number) => `2024-05-01T03:00:${String(n).padStart(2, '0')}.000Z`;

let clock = 0;
const t = () => T(clock++ % 60);

export function runStarted(hosts: string[], o: { pid?: number; controller?: string; runId?: string } = {}): JournalEntry {
  clock = 0;
  return {
    kind: 'run-started',
    runId: o.runId ?? RUN,
    time: t(),
    recipe: 'web',
    recipeFile: '/srv/recipes/web.yml',
    mode: 'apply',
    hosts,
    vars: { port: 8080 },
    pid: o.pid ?? 4242,
    controller: o.controller ?? 'ctl',
  };
}

export function hostStarted(host: string): JournalEntry {
  return {
    kind: 'host-started',
    time: t(),
    host,
    facts: { hostname: host },
    backupDir: `/var/lib/hostsmith/backups/${RUN}`,
    lock: '/run/hostsmith/lock',
    target: { name: host, kind: 'ssh', host: '127.0.0.9', port: 22, user: 'root', identities: ['/home/me/.ssh/id_ed25519'], knownHostsFile: '/home/me/.ssh/known_hosts', sudo: false },
  };
}

export function stepStarted(host: string, step: string, o: { type?: string; undo?: unknown; handler?: boolean; sudo?: boolean; user?: string } = {}): JournalEntry {
  const type = o.type ?? 'file';
  return {
    kind: 'step-started',
    time: t(),
    host,
    step,
    type,
    ...(o.handler ? { handler: true } : {}),
    params: { path: `/etc/${step}` },
    undo: o.undo === undefined ? { kind: 'absent', path: `/etc/${step}`, created: [] } : o.undo,
    irreversible: o.undo === null,
    summary: `create /etc/${step}`,
    pre: `sha256:pre-${step}`,
    sudo: o.sudo ?? false,
    ...(o.user ? { user: o.user } : {}),
  };
}

export function stepFinished(host: string, step: string, status: 'changed' | 'failed' = 'changed', type = 'file'): JournalEntry {
  return {
    kind: 'step-finished',
    time: t(),
    host,
    step,
    type,
    status,
    summary: `create /etc/${step}`,
    changed: status === 'changed',
    durationMs: 5,
    ...(status === 'changed' ? { post: `sha256:post-${step}` } : { error: 'exit 1' }),
  };
}

export function rollbackStarted(host: string, step: string, type = 'file'): JournalEntry {
  return { kind: 'rollback-started', time: t(), host, step, type };
}

export function rollbackFinished(host: string, step: string, ok = true, type = 'file'): JournalEntry {
  return { kind: 'rollback-finished', time: t(), host, step, type, status: ok ? 'rolled-back' : 'rollback-failed', ...(ok ? {} : { error: 'cannot undo' }) };
}

export function hostFinished(host: string, status: Extract<JournalEntry, { kind: 'host-finished' }>['status'], changed = 0, rolledBack = 0): JournalEntry {
  return { kind: 'host-finished', time: t(), host, status, counts: { changed, unchanged: 0, skipped: 0, failed: status === 'ok' ? 0 : 1, rolledBack } };
}

export function runFinished(status: Extract<JournalEntry, { kind: 'run-finished' }>['status'], exitCode: number): JournalEntry {
  return { kind: 'run-finished', time: t(), status, exitCode };
}
