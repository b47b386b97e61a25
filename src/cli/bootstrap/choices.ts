/**
 * What bootstrap offers to pick from: hosts (inventory names, ~/.ssh/config Host names) and
 * recipes (recipes/*.yml in the working directory, each with its description).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import SSHConfig from 'ssh-config';
import { parse as parseYaml } from 'yaml';
import type { Inventory } from '../../transport/targets.js';
import type { Suggestion } from '../prompt.js';

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

type HostValue = string | Array<{ val: string }>;

/** The `Host` names in an ssh config that name one host (no `*`, `?` or `!` patterns). */
export function sshConfigHostNames(text: string): Array<{ name: string; hostName?: string }> {
  const out: Array<{ name: string; hostName?: string }> = [];
  let parsed: ReturnType<typeof SSHConfig.parse>;
  try {
    parsed = SSHConfig.parse(text);
  } catch {
    return out;
  }
  for (const line of parsed as unknown as Array<{ param?: string; value?: HostValue; config?: Array<{ param?: string; value?: unknown }> }>) {
    if (line.param?.toLowerCase() !== 'host' || line.value === undefined) continue;
    const names = typeof line.value === 'string' ? line.value.split(/\s+/) : line.value.map((v) => v.val);
    const hostName = line.config?.find((c) => c.param?.toLowerCase() === 'hostname')?.value;
    for (const n of names) {
      if (!n || /[*?!]/.test(n) || out.some((o) => o.name === n)) continue;
      out.push({ name: n, ...(typeof hostName === 'string' ? { hostName } : {}) });
    }
  }
  return out;
}

/** The User an ssh config sets for a host, if any. */
export function sshConfigUser(sshConfigFile: string, host: string): string | undefined {
  const text = readText(sshConfigFile);
  if (text === undefined) return undefined;
  try {
    const u = SSHConfig.parse(text).compute(host).User;
    return typeof u === 'string' ? u : undefined;
  } catch {
    return undefined;
  }
}

/** Inventory hosts first (as `user@address:port`), then ~/.ssh/config names not already offered. */
export function hostSuggestions(inventory: Inventory | undefined, sshConfigFile: string): Suggestion[] {
  const out: Suggestion[] = [];
  const d = inventory?.defaults ?? {};
  for (const [name, h] of Object.entries(inventory?.hosts ?? {})) {
    const user = h?.user ?? d.user;
    const port = h?.port ?? d.port ?? 22;
    out.push({ value: name, hint: `inventory: ${user ? `${user}@` : ''}${h?.address ?? name}${port !== 22 ? `:${port}` : ''}` });
  }
  const text = readText(sshConfigFile);
  if (text !== undefined) {
    for (const c of sshConfigHostNames(text)) {
      if (out.some((o) => o.value === c.name)) continue;
      out.push({ value: c.name, hint: `~/.ssh/config${c.hostName ? `: ${c.hostName}` : ''}` });
    }
  }
  return out;
}

export interface RecipeChoice {
  /** Path as typed on a command line: relative to the working directory. */
  file: string;
  description?: string;
  /** Set when the file cannot be read as YAML; the recipe is still listed, loading it says more. */
  problem?: string;
}

/** recipes/*.yml and *.yaml in `cwd`, sorted by name, each with its `description`. */
export function recipeChoices(cwd: string): RecipeChoice[] {
  const dir = join(cwd, 'recipes');
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => /\.ya?ml$/.test(n))
      .sort();
  } catch {
    return [];
  }
  return names.map((n) => {
    const file = relative(cwd, join(dir, n));
    try {
      const doc = parseYaml(readFileSync(join(dir, n), 'utf8')) as { description?: unknown } | null;
      const description = doc && typeof doc === 'object' && typeof doc.description === 'string' ? doc.description.trim().split('\n')[0] : undefined;
      return { file, ...(description ? { description } : {}) };
    } catch (e) {
      return { file, problem: `cannot be read: ${(e as Error).message.split('\n')[0]}` };
    }
  });
}
