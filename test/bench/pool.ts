/**
 * The bench's hosts: sandboxes of at most 50 hosts each (startSandbox's limit), seen as one pool
 * with unique names, one known_hosts file and an inventory per subset. Stops only what it started.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSandbox, type Sandbox, type SandboxHost } from '../hosts/hosts.js';
import type { SshTarget } from '../hosts/ssh.js';

export interface BenchHost {
  /** Unique across the pool: b1, b2, … (the host's own hostname is its sandbox name, h1…). */
  name: string;
  sandbox: Sandbox;
  host: SandboxHost;
}

export interface Pool {
  hosts: BenchHost[];
  knownHostsPath: string;
  /** Writes an inventory of these hosts (user root, each with its sandbox's key). */
  inventory(hosts: BenchHost[], path: string): void;
  target(h: BenchHost): SshTarget;
  /** Fresh hosts: each is restarted with its changes thrown away (same address, port, host key). */
  wipe(hosts: BenchHost[]): Promise<void>;
  stop(): Promise<void>;
}

const PER_SANDBOX = 50;

/** Limits how many restarts run at once (each boots a namespace and waits for sshd). */
async function limited<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/**
 * Starts `count` hosts. `started` receives each sandbox as soon as it runs, so a caller's signal
 * handler can stop what exists even while later sandboxes are still starting.
 */
export async function startPool(count: number, workDir: string, started: (sb: Sandbox) => void): Promise<Pool> {
  const sandboxes: Sandbox[] = [];
  const stop = async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const sb of sandboxes.splice(0)) await sb.stop().catch((e) => errors.push(e));
    if (errors.length) throw errors[0];
  };
  try {
    for (let left = count; left > 0; left -= PER_SANDBOX) {
      const sb = await startSandbox({ count: Math.min(left, PER_SANDBOX) });
      sandboxes.push(sb);
      started(sb);
    }
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  }
  const hosts = sandboxes.flatMap((sandbox) => sandbox.hosts.map((host) => ({ sandbox, host, name: '' })));
  hosts.forEach((h, i) => (h.name = `b${i + 1}`));
  const knownHostsPath = join(workDir, 'known_hosts');
  writeFileSync(knownHostsPath, sandboxes.map((sb) => readFileSync(sb.knownHostsPath, 'utf8')).join(''));
  return {
    hosts,
    knownHostsPath,
    inventory(subset, path) {
      const lines = subset.map((h) => `  ${h.name}: { address: ${h.host.address}, port: ${h.host.port}, identity: ${h.sandbox.keyPath} }`);
      writeFileSync(path, `# hostsmith bench inventory (generated)\ndefaults: { user: root }\nhosts:\n${lines.join('\n')}\n`);
    },
    target: (h) => ({ address: h.host.address, port: h.host.port, keyPath: h.sandbox.keyPath, knownHostsPath }),
    wipe: (subset) => limited(subset, 8, (h) => h.sandbox.restart(h.host, { wipe: true })),
    stop,
  };
}
