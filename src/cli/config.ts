/**
 * Defaults for options: hostsmith.config.yml in the working directory, then
 * $XDG_CONFIG_HOME/hostsmith/config.yml; the command line wins over both (SPEC §7).
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { z } from 'zod';
import { parseDuration, DURATION_HINT } from '../recipe/duration.js';
import { validYaml } from '../recipe/schema.js';
import type { RetrySpec } from '../recipe/types.js';
import { expandHome } from '../transport/targets.js';

const durationSchema = z.union([z.string(), z.number()]).refine((v) => parseDuration(v) !== undefined, DURATION_HINT);

const configSchema = z
  .object({
    concurrency: z.number().int().min(1).optional(),
    timeout: durationSchema.optional(),
    retry: z.object({ attempts: z.number().int().min(1), delay: durationSchema.optional(), backoff: z.number().min(1).optional() }).strict().optional(),
    state_dir: z.string().optional(),
    known_hosts: z.string().optional(),
    accept_new_host_keys: z.boolean().optional(),
    inventory: z.string().optional(),
    sudo: z.boolean().optional(),
  })
  .strict();

export interface Config {
  concurrency?: number;
  timeoutMs?: number;
  retry?: RetrySpec;
  stateDir?: string;
  knownHosts?: string;
  acceptNewHostKeys?: boolean;
  inventory?: string;
  sudo?: boolean;
}

function readConfig(file: string): Config | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const c = validYaml(file, text, configSchema);
  const base = dirname(file);
  return {
    concurrency: c.concurrency,
    timeoutMs: c.timeout !== undefined ? parseDuration(c.timeout) : undefined,
    retry: c.retry ? { attempts: c.retry.attempts, delayMs: parseDuration(c.retry.delay ?? 0) ?? 0, backoff: c.retry.backoff ?? 1 } : undefined,
    stateDir: c.state_dir ? expandHome(c.state_dir, base) : undefined,
    knownHosts: c.known_hosts ? expandHome(c.known_hosts, base) : undefined,
    acceptNewHostKeys: c.accept_new_host_keys,
    inventory: c.inventory ? expandHome(c.inventory, base) : undefined,
    sudo: c.sudo,
  };
}

export function loadConfig(cwd = process.cwd(), env = process.env): Config {
  const userDir = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  const user = readConfig(join(userDir, 'hostsmith', 'config.yml')) ?? {};
  const local = readConfig(join(cwd, 'hostsmith.config.yml')) ?? {};
  const merged: Config = { ...user };
  for (const [k, v] of Object.entries(local)) if (v !== undefined) (merged as Record<string, unknown>)[k] = v;
  return merged;
}

export function defaultStateDir(env = process.env): string {
  return env.XDG_STATE_HOME ? join(env.XDG_STATE_HOME, 'hostsmith') : join(homedir(), '.local', 'state', 'hostsmith');
}
