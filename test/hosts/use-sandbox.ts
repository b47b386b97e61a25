/**
 * Test helpers for real-host tests:
 *
 *   describeHosts('nginx recipe', () => {
 *     const sandbox = useSandbox(2);
 *     it('installs nginx', async () => {
 *       const sb = sandbox();
 *       // … run hostsmith against sb.inventoryPath, check with sshRun(sb, sb.hosts[0]!, '…')
 *     });
 *   });
 */
import { afterAll, beforeAll, describe, inject } from 'vitest';
import { startSandbox, type Sandbox, type SandboxOptions } from './hosts.js';
import './provided-context.js';

/** Whether the global setup found this machine able to run sandbox hosts (of a kind). */
export function hostsAvailable(o: SandboxOptions = {}): { ok: boolean; reason: string } {
  const ok = inject('hostsAvailable');
  if (ok === undefined) return { ok: false, reason: 'the global setup test/hosts/global-setup.ts did not run (not in vitest.config.ts?)' };
  if (ok && o.kind === 'systemd') return { ok: inject('systemdAvailable') === true, reason: inject('systemdReason') ?? '' };
  return { ok, reason: inject('hostsReason') ?? '' };
}

/**
 * Inside a describe: starts `count` fresh hosts before its tests and stops
 * them after. Call the returned getter inside tests/hooks, not at collect time.
 */
export function useSandbox(count: number, o: SandboxOptions = {}): () => Sandbox {
  let sb: Sandbox | undefined;
  beforeAll(async () => {
    sb = await startSandbox({ count, ...o });
  });
  afterAll(async () => {
    const s = sb;
    sb = undefined;
    await s?.stop();
  });
  return () => {
    if (!sb) throw new Error('useSandbox(): no sandbox yet — call the getter inside a test or hook, not in the describe body');
    return sb;
  };
}

/**
 * describe() for tests that need real hosts (of a kind: pass the options given to useSandbox):
 * skipped — loudly — when the machine can't run them.
 */
export function describeHosts(name: string, fn: () => void, o: SandboxOptions = {}): void {
  const { ok, reason } = hostsAvailable(o);
  if (!ok) process.stderr.write(`\n!!! SKIPPED real-host tests "${name}": ${reason}\n`);
  describe.skipIf(!ok)(name, fn);
}
