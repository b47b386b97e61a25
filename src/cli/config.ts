/**
 * Defaults for options: hostsmith.config.yml in the working directory, then
 * $XDG_CONFIG_HOME/hostsmith/config.yml; the command line wins over both (SPEC §7).
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { z } from 'zod';
import { parseDuration, DURATION_HINT } from '../duration.js';
import { validYaml } from '../recipe/schema.js';
import { displayPath } from '../yaml.js';
import type { RetrySpec } from '../recipe/types.js';
import { expandHome } from '../transport/targets.js';

/** A path: not empty or blank, no line breaks. */
const pathSchema = z.string().superRefine((v, ctx) => {
  if (!v.trim()) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must not be empty (leave the key out for the default)' });
  else if (/[\u0000-\u001f\u007f]/.test(v)) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must not hold a line break or control character (got ${JSON.stringify(v)})` });
});

const durationSchema = z.union([z.string(), z.number()]).refine((v) => parseDuration(v) !== undefined, `invalid duration (${DURATION_HINT})`);

const configSchema = z
  .object({
    concurrency: z.number().int().min(1).optional(),
    timeout: durationSchema.optional(),
    retry: z
      .object({ attempts: z.number().int().min(1), delay: durationSchema.optional(), backoff: z.number().min(1).optional() })
      .strict()
      .optional(),
    state_dir: pathSchema.optional(),
    known_hosts: pathSchema.optional(),
    accept_new_host_keys: z.boolean().optional(),
    inventory: pathSchema.optional(),
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
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch {
    return undefined;
  }
  const c = validYaml(displayPath(file), bytes, configSchema, 'config');
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
