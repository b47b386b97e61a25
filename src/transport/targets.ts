/**
 * From `--hosts`, the inventory and ~/.ssh/config to concrete targets. Nothing is contacted here.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir, userInfo } from 'node:os';
import { dirname, resolve } from 'node:path';
import SSHConfig from 'ssh-config';
import { z } from 'zod';
import { InputError } from '../errors.js';
import { validYaml } from '../recipe/schema.js';

export interface TargetSpec {
  name: string;
  kind: 'local' | 'ssh';
  host: string;
  port: number;
  user: string;
  identities: string[];
  sudo: boolean;
  /** Inventory vars for this host: group vars, then host vars on top. */
  vars: Record<string, unknown>;
  /** ProxyJump from ~/.ssh/config, resolved the same way (user, port, key). */
  jump?: TargetSpec;
}

const hostSchema = z
  .object({
    address: z.string().optional(),
    port: z.number().int().min(1).max(65535).optional(),
    user: z.string().optional(),
    identity: z.string().optional(),
    sudo: z.boolean().optional(),
    groups: z.array(z.string()).optional(),
    vars: z.record(z.unknown()).optional(),
  })
  .strict();

const inventorySchema = z
  .object({
    defaults: z
      .object({ user: z.string().optional(), port: z.number().int().optional(), identity: z.string().optional(), sudo: z.boolean().optional(), vars: z.record(z.unknown()).optional() })
      .strict()
      .optional(),
    hosts: z.record(hostSchema.nullable()).optional(),
    groups: z.record(z.object({ vars: z.record(z.unknown()).optional(), hosts: z.array(z.string()).optional() }).strict().nullable()).optional(),
  })
  .strict();

export type Inventory = z.infer<typeof inventorySchema> & { file: string };

/** `~/x` from the home folder; a relative path from `base` when given. */
export function expandHome(p: string, base?: string): string {
  if (p === '~' || p.startsWith('~/')) return homedir() + p.slice(1);
  return base ? resolve(base, p) : p;
}

export async function loadInventory(file: string): Promise<Inventory> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new InputError([{ file, message: `cannot read inventory: ${(e as Error).message}` }]);
  }
  return { ...validYaml(file, text, inventorySchema), file };
}


/** `[user@]host[:port]`, with `[v6addr]:port` for IPv6. */
export function parseAddress(s: string): { user?: string; host: string; port?: number } {
  let rest = s;
  let user: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at > 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
  }
  let port: number | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest);
  if (v6) {
    rest = v6[1]!;
    if (v6[2]) port = Number(v6[2]);
  } else {
    const m = /^([^:]+):(\d+)$/.exec(rest);
    if (m) {
      rest = m[1]!;
      port = Number(m[2]);
    }
  }
  if (!rest || (port !== undefined && (port < 1 || port > 65535))) throw new InputError(`--hosts: "${s}" is not [user@]host[:port]`);
  return { user, host: rest, port };
}

function sshConfigFor(host: string, file: string): Record<string, string | string[]> | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const c = SSHConfig.parse(text).compute(host);
  return Object.keys(c).length ? c : undefined;
}

export interface TargetOptions {
  hosts?: string;
  inventory?: Inventory;
  identity?: string;
  sudo?: boolean;
  sshConfigFile?: string;
}

export function resolveTargets(o: TargetOptions): TargetSpec[] {
  const inv = o.inventory;
  const invDir = inv ? dirname(inv.file) : undefined;
  const d = inv?.defaults ?? {};
  const defaultUser = userInfo().username;
  const sshConfigFile = o.sshConfigFile ?? `${homedir()}/.ssh/config`;
  const names = o.hosts
    ? o.hosts.split(',').map((s) => s.trim()).filter(Boolean)
    : Object.keys(inv?.hosts ?? {});
  if (!names.length) throw new InputError('no hosts to run on: pass --hosts (e.g. --hosts local or --hosts root@203.0.113.10) or an inventory with hosts (-i)');

  const groupMembers = (g: string): string[] => {
    const fromHosts = Object.entries(inv?.hosts ?? {}).filter(([, h]) => h?.groups?.includes(g)).map(([n]) => n);
    return [...new Set([...fromHosts, ...(inv?.groups?.[g]?.hosts ?? [])])];
  };

  const fromInventory = (name: string): TargetSpec => {
    const h = inv!.hosts![name] ?? {};
    const groups = [...(h.groups ?? []), ...Object.entries(inv?.groups ?? {}).filter(([, g]) => g?.hosts?.includes(name)).map(([n]) => n)];
    const vars: Record<string, unknown> = { ...(d.vars ?? {}) };
    for (const g of groups) Object.assign(vars, inv?.groups?.[g]?.vars ?? {});
    Object.assign(vars, h.vars ?? {});
    const address = h.address ?? name;
    if (address === 'local') return { name, kind: 'local', host: 'localhost', port: 0, user: defaultUser, identities: [], sudo: h.sudo ?? d.sudo ?? false, vars };
    const identity = o.identity ?? h.identity ?? d.identity;
    return {
      name,
      kind: 'ssh',
      host: address,
      port: h.port ?? d.port ?? 22,
      user: h.user ?? d.user ?? defaultUser,
      identities: identity ? [expandHome(identity, invDir)] : [],
      sudo: o.sudo || (h.sudo ?? d.sudo ?? false),
      vars,
    };
  };

  const out: TargetSpec[] = [];
  const seen = new Set<string>();
  const add = (t: TargetSpec) => {
    if (seen.has(t.name)) return;
    seen.add(t.name);
    out.push(t);
  };
  for (const n of names) {
    if (n === 'local') {
      add({ name: 'local', kind: 'local', host: 'localhost', port: 0, user: defaultUser, identities: [], sudo: o.sudo ?? false, vars: {} });
    } else if (inv?.hosts && Object.prototype.hasOwnProperty.call(inv.hosts, n)) {
      add(fromInventory(n));
    } else if (inv && groupMembers(n).length) {
      groupMembers(n).forEach((m) => add(fromInventory(m)));
    } else {
      const a = parseAddress(n);
      const c = sshConfigFor(a.host, sshConfigFile);
      const idf = c?.IdentityFile;
      const identities = o.identity ? [o.identity] : (Array.isArray(idf) ? idf : idf ? [idf] : []).map((p) => expandHome(p));
      add({
        name: n,
        kind: 'ssh',
        host: (c?.HostName as string | undefined) ?? a.host,
        port: a.port ?? (c?.Port ? Number(c.Port) : 22),
        user: a.user ?? (c?.User as string | undefined) ?? defaultUser,
        identities: identities.map((p) => expandHome(p)),
        sudo: o.sudo ?? false,
        vars: {},
        jump: jumpOf(c?.ProxyJump, sshConfigFile, o.identity, defaultUser),
      });
    }
  }
  return out;
}

/** The first hop of a ProxyJump value (`[user@]host[:port]`, itself looked up in ssh config). */
function jumpOf(value: unknown, sshConfigFile: string, identity: string | undefined, defaultUser: string, depth = 0): TargetSpec | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (typeof raw !== 'string' || !raw || raw === 'none') return undefined;
  if (depth > 4) throw new InputError(`ProxyJump chain in ${sshConfigFile} is too long or loops`);
  const hops = raw.split(',').map((h) => h.trim());
  // A chain a,b: connect to b through a.
  const last = parseAddress(hops[hops.length - 1]!);
  const c = sshConfigFor(last.host, sshConfigFile);
  const idf = c?.IdentityFile;
  const earlier = hops.length > 1 ? hops.slice(0, -1).join(',') : c?.ProxyJump;
  return {
    name: hops[hops.length - 1]!,
    kind: 'ssh',
    host: (c?.HostName as string | undefined) ?? last.host,
    port: last.port ?? (c?.Port ? Number(c.Port) : 22),
    user: last.user ?? (c?.User as string | undefined) ?? defaultUser,
    identities: (idf ? (Array.isArray(idf) ? idf : [idf]) : identity ? [identity] : []).map((p) => expandHome(p)),
    sudo: false,
    vars: {},
    jump: jumpOf(earlier, sshConfigFile, identity, defaultUser, depth + 1),
  };
}
