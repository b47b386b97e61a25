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
import { parseYamlFile } from '../zod-issues.js';
import { suggestion } from '../render/template.js';
import { displayPath, formatPath, notePlaces, type PathSeg, type YamlSource } from '../yaml.js';

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

/**
 * A name, address, user or key path: never empty, never blank, no line breaks or control
 * characters, no spaces around it (an empty address would mean localhost to the SSH library).
 * `word` also refuses inner spaces and a leading `-`, which no host or user name has.
 */
function field(what: string, word: boolean) {
  return z.string().superRefine((v, ctx) => {
    const fail = (message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, message });
    if (!v.trim()) fail(`${what} must not be empty${v ? ' or blank' : ''}`);
    else if (/[\u0000-\u001f\u007f]/.test(v)) fail(`${what} must not hold a line break or control character (got ${JSON.stringify(v)})`);
    else if (v.trim() !== v) fail(`${what} has spaces around it (got ${JSON.stringify(v)})`);
    else if (word && v.startsWith('-')) fail(`${what} must not start with "-" (got ${JSON.stringify(v)})`);
    else if (word && /\s/.test(v)) fail(`${what} must not hold spaces (got ${JSON.stringify(v)})`);
  });
}

const portSchema = z.number().int().min(1).max(65535);
const varsSchema = z.record(z.unknown());

const hostSchema = z
  .object({
    address: field('an address', true).optional(),
    port: portSchema.optional(),
    user: field('a user', true).optional(),
    identity: field('an identity file', false).optional(),
    sudo: z.boolean().optional(),
    groups: z.array(field('a group name', false)).optional(),
    vars: varsSchema.optional(),
  })
  .strict();

export const inventorySchema = z
  .object({
    defaults: z
      .object({ user: field('a user', true).optional(), port: portSchema.optional(), identity: field('an identity file', false).optional(), sudo: z.boolean().optional(), vars: varsSchema.optional() })
      .strict()
      .optional(),
    hosts: z.record(field('a host name', false), hostSchema.nullable()).optional(),
    groups: z
      .record(
        field('a group name', false),
        z
          .object({ vars: varsSchema.optional(), hosts: z.array(field('a host name', false)).optional() })
          .strict()
          .nullable(),
      )
      .optional(),
  })
  .strict()
  .superRefine((inv, ctx) => {
    // A host without an address is reached by its name.
    for (const [name, h] of Object.entries(inv.hosts ?? {})) {
      if (h?.address !== undefined || name === 'local' || !name.trim()) continue;
      if (/\s/.test(name) || name.startsWith('-')) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['hosts', name], message: `host "${name}" has no address, and its name cannot be one (spaces or a leading "-"); give it an address` });
      }
    }
  });

export type Inventory = z.infer<typeof inventorySchema> & { file: string };

/** Each inventory's source, so host vars can be traced back to their line. */
const sources = new WeakMap<Inventory, YamlSource>();

/** `~/x` from the home folder; a relative path from `base` when given. */
export function expandHome(p: string, base?: string): string {
  if (p === '~' || p.startsWith('~/')) return homedir() + p.slice(1);
  return base ? resolve(base, p) : p;
}

export async function loadInventory(file: string): Promise<Inventory> {
  const shown = displayPath(file);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new InputError([{ file: shown, message: `cannot read inventory: ${(e as Error).message}` }]);
  }
  const { data, src } = parseYamlFile(shown, bytes, inventorySchema, 'inventory');
  const inv: Inventory = { ...data, file };
  sources.set(inv, src);
  return inv;
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

const GLOB = /[*?]/;

/** An inventory host or group pattern as a test on names: `web*`, `db?`. */
function globTest(pattern: string): (name: string) => boolean {
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  );
  return (name) => re.test(name);
}

/** The inventory hosts a pattern names (`all`, a host, a group, a glob over both), or undefined: it names none of them. */
function inventoryMatch(pattern: string, inv: Inventory | undefined): string[] | undefined {
  const hosts = Object.keys(inv?.hosts ?? {});
  const membersOf = (g: string) => [...new Set([...hosts.filter((n) => inv?.hosts?.[n]?.groups?.includes(g)), ...(inv?.groups?.[g]?.hosts ?? [])])];
  if (pattern === 'all' || pattern === '*') return inv ? hosts : undefined;
  if (inv?.hosts && Object.prototype.hasOwnProperty.call(inv.hosts, pattern)) return [pattern];
  const group = membersOf(pattern);
  if (group.length) return group;
  if (GLOB.test(pattern) && inv) {
    const test = globTest(pattern);
    const groups = [...new Set([...hosts.flatMap((n) => inv.hosts?.[n]?.groups ?? []), ...Object.keys(inv.groups ?? {})])];
    return [...new Set([...hosts.filter(test), ...groups.filter(test).flatMap(membersOf)])];
  }
  return undefined;
}

/**
 * The names a comma list selects, as Ansible reads one: the union of its plain patterns (all when
 * there are none), narrowed by each `&pattern`, less each `!pattern`. A plain item that names no
 * inventory host stays as it is (an address, `local`, an ssh config name: checked later).
 */
function select(list: string, inv: Inventory | undefined, option: string): string[] {
  const items = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const hosts = Object.keys(inv?.hosts ?? {});
  const must = (p: string): string[] => {
    const m = inventoryMatch(p, inv);
    if (m?.length) return m;
    const hint = suggestion(p, [...hosts, ...Object.keys(inv?.groups ?? {}), 'all']);
    throw new InputError(`${option}: "${p}" matches no host or group of the inventory${inv ? '' : ' (no inventory given: -i)'}${hint}; nothing was contacted`);
  };
  const plain = items.filter((p) => !p.startsWith('!') && !p.startsWith('&'));
  let out: string[] = plain.length ? [] : [...hosts];
  for (const p of plain) {
    if (GLOB.test(p) || p === 'all') out.push(...must(p));
    else out.push(...(inventoryMatch(p, inv) ?? [p]));
  }
  for (const p of items.filter((x) => x.startsWith('&'))) {
    const keep = new Set(must(p.slice(1)));
    out = out.filter((n) => keep.has(n));
  }
  for (const p of items.filter((x) => x.startsWith('!'))) {
    const drop = new Set(inventoryMatch(p.slice(1), inv) ?? [p.slice(1)]);
    out = out.filter((n) => !drop.has(n));
  }
  return [...new Set(out)];
}

/** The Host patterns ~/.ssh/config names (the catch-all `*` left out). */
function sshConfigNames(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of SSHConfig.parse(text)) {
    const l = line as { param?: string; value?: unknown };
    if (l.param?.toLowerCase() !== 'host') continue;
    const values = Array.isArray(l.value) ? l.value : [l.value];
    for (const v of values) {
      const pat = typeof v === 'string' ? v : (v as { val?: string })?.val;
      if (pat && pat !== '*') out.push(pat);
    }
  }
  return out;
}

/** Does an ssh config Host pattern (globs * and ?, ! negation left out) name `host`? */
function patternNames(pattern: string, host: string): boolean {
  if (pattern.startsWith('!')) return false;
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    'i',
  );
  return re.test(host);
}

const HOST_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;
const USER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/**
 * Why `name` (not local, not in the inventory) is no target, or undefined when it is one: a
 * host name or address (with a dot, a colon, `@`, an IP, `localhost`) or a name ~/.ssh/config
 * gives. Anything else — an option-looking `-oProxyCommand=…`, spaces, a bare word that is in
 * no inventory — is refused before any lookup.
 */
function targetProblem(name: string, a: { user?: string; host: string }, sshNames: string[]): string | undefined {
  const v6 = a.host.includes(':');
  if (a.user !== undefined && !USER_NAME.test(a.user)) return `"${name}": "${a.user}" is not a user name`;
  if (!v6 && !HOST_NAME.test(a.host)) return `"${name}" is not a host name, an address or a name in the inventory`;
  if (v6 && !/^[0-9A-Fa-f:.]+$/.test(a.host)) return `"${name}" is not an IPv6 address`;
  const addressLike = a.user !== undefined || v6 || a.host.includes('.') || name.includes(':') || a.host === 'localhost';
  if (addressLike || sshNames.some((p) => patternNames(p, a.host))) return undefined;
  return `"${name}" is neither in the inventory${sshNames.length ? ' nor in ~/.ssh/config' : ''} nor an address (an address has a dot, a colon or user@)`;
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
  /** Comma list of hosts, addresses, groups and patterns (`all`, `web*`, `!db1`, `&prod`). */
  hosts?: string;
  /** The same kind of list, narrowing what `hosts` selects (`-l/--limit`). */
  limit?: string;
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
  // An empty --hosts (an unset $HOSTS in a script) selects nothing: never the whole inventory.
  if (o.hosts !== undefined && !o.hosts.split(',').some((x) => x.trim()))
    throw new InputError('--hosts is empty: name the hosts to run on (e.g. --hosts web1,web2, or --hosts all for every host of the inventory)');
  if (o.limit !== undefined && !o.limit.split(',').some((x) => x.trim())) throw new InputError('--limit is empty: name the hosts or groups to narrow --hosts to');
  const allNames = Object.keys(inv?.hosts ?? {});
  const names = select(o.hosts !== undefined ? o.hosts : allNames.join(','), inv, '--hosts');
  const limited = o.limit !== undefined ? new Set(select(o.limit, inv, '--limit')) : undefined;
  if (limited) {
    const kept = names.filter((n) => limited.has(n));
    if (!kept.length) throw new InputError(`--limit ${o.limit} leaves none of the hosts --hosts selects (${names.join(', ')}); nothing was contacted`);
    names.splice(0, names.length, ...kept);
  }
  if (!names.length) throw new InputError('no hosts to run on: pass --hosts (e.g. --hosts local or --hosts root@203.0.113.10) or an inventory with hosts (-i)');

  const groupMembers = (g: string): string[] => {
    const fromHosts = Object.entries(inv?.hosts ?? {})
      .filter(([, h]) => h?.groups?.includes(g))
      .map(([n]) => n);
    return [...new Set([...fromHosts, ...(inv?.groups?.[g]?.hosts ?? [])])];
  };

  const fromInventory = (name: string): TargetSpec => {
    const h = inv!.hosts![name] ?? {};
    const groups = [
      ...(h.groups ?? []),
      ...Object.entries(inv?.groups ?? {})
        .filter(([, g]) => g?.hosts?.includes(name))
        .map(([n]) => n),
    ];
    const vars: Record<string, unknown> = {};
    const from = new Map<string, PathSeg[]>();
    const take = (v: Record<string, unknown> | undefined, path: PathSeg[]) => {
      for (const [k, x] of Object.entries(v ?? {})) {
        vars[k] = x;
        from.set(k, [...path, k]);
      }
    };
    take(d.vars, ['defaults', 'vars']);
    for (const g of groups) take(inv?.groups?.[g]?.vars, ['groups', g, 'vars']);
    take(h.vars, ['hosts', name, 'vars']);
    const src = sources.get(inv!);
    if (src)
      notePlaces(
        vars,
        [...from].map(([k, path]) => [k, { file: src.file, ...src.pos(path), path: formatPath(path) }]),
      );
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
      const named = sshConfigNames(sshConfigFile);
      const problem = targetProblem(n, a, named);
      if (problem) {
        const hint = suggestion(n, [...Object.keys(inv?.hosts ?? {}), ...Object.keys(inv?.groups ?? {}), ...named.filter((x) => !/[*?!]/.test(x))]);
        throw new InputError(`--hosts: ${problem}${hint}; nothing was contacted`);
      }
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
