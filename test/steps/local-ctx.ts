/** A step context on the local transport in a scratch folder (removed after each test), counting its execs. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import type { StepContext } from '../../src/steps/step.js';
import { LocalTransport } from '../../src/transport/local.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

export function localCtx(prefix: string, o: { backupDir?: string; timeoutMs?: number } = {}): { dir: string; ctx: StepContext; execs: string[] } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  const t = new LocalTransport();
  const execs: string[] = [];
  const ctx = {
    host: 'local',
    transport: t,
    step: 'S',
    runId: 'R1',
    backupDir: join(dir, o.backupDir ?? 'backups'),
    sudo: false,
    ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
    exec: (cmd: string, eo?: Parameters<LocalTransport['exec']>[1]) => {
      execs.push(cmd);
      return t.exec(cmd, { ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}), ...eo });
    },
  } as unknown as StepContext;
  return { dir, ctx, execs };
}
