/**
 * "Zero residue": did a host end up exactly as it was? Read from this machine (the controller),
 * never through hostsmith nor even through the host: a sandbox host is an overlay whose upper dir
 * (`host.dir/upper`) holds everything the host changed since boot — new and modified entries,
 * deletions as whiteouts (character devices 0/0), a directory removed and made again as an opaque
 * directory (xattr trusted.overlay.opaque=y) — over the read-only rootfs (the `lowerdir=` of the
 * mount in `host.dir/boot.sh`, i.e. the `rootfs` of the sandbox's sandbox.json, normally
 * `rootfsPath()`).
 *
 *   const before = await snapshotHost(sb, host);
 *   … apply, then undo …
 *   expect(await residue(sb, host, before)).toEqual([]);
 *
 * `snapshotHost` records every entry of the upper dir: type, mode, uid, gid, size, sha256 of
 * regular files, symlink target, whiteout, opaque. `residue` compares, for every path in the
 * upper dir then or now (and the lower entries under a directory whose opaqueness or whiteout
 * changed), the merged view then (the upper entry of the snapshot, else the lower rootfs entry,
 * else absent) with the merged view now: type, permission bits, owner, content, link target — not
 * times; directories by type, mode and owner only. Anything new or gone under a directory that is
 * itself new or gone is folded into that directory's line. The overlay xattrs are read with
 * python3 (Node has no xattr API; /usr/bin/python3 is preferred over a slow version-manager shim).
 * Files under DEFAULT_IGNORE are recorded without a hash (never compared, and apt's caches are big).
 *
 * Two files are compared by meaning, not bytes, because dpkg and apt rewrite them as a side effect
 * of any package operation:
 * - /var/lib/dpkg/status: package by package, every field except Priority and Section (dpkg
 *   refreshes those of packages it never touched from the archive's metadata the first time it
 *   runs on a debootstrapped rootfs). A package left behind, or one whose Status, Version or
 *   Conffiles changed, is reported.
 * - /var/lib/apt/extended_states: its records (which packages are marked auto-installed); absent
 *   and empty are the same.
 *
 * DEFAULT CHURN — always left out, because it changes with no lasting meaning. Found by experiment:
 * installing and purging hello, jq and nginx-light by plain ssh, adding and deleting a user, a
 * group and a crontab, and hostsmith applies, rollbacks and undos of such steps:
 * - /tmp, /var/tmp, /run                 scratch space (/run is a tmpfs on these hosts anyway)
 * - /var/log                             dpkg.log, apt/history.log, term.log, eipp.log.xz, …
 * - /var/cache/apt                       pkgcache.bin, srcpkgcache.bin, downloaded .debs
 * - /var/cache/ldconfig                  ldconfig's aux-cache (rewritten by every ldconfig run)
 * - /var/cache/debconf/*-old             debconf's backup copies of config.dat and templates.dat
 * - /var/lib/apt/lists                   apt's package lists (refreshed by update_cache)
 * - /var/lib/apt/periodic                apt's own stamps: every `apt-get update` touches update-success-stamp
 * - /var/lib/dpkg/*-old                  dpkg's backup copies (status-old, …)
 * - /var/lib/hostsmith                   hostsmith's own backups and state (kept by design)
 * - /var/lib/systemd/timers              systemd's record of when each persistent timer last ran:
 *                                        it changes whenever one elapses, and a package's timer
 *                                        (logrotate's) leaves its stamp when the package is purged
 * - /etc/passwd- /etc/group- /etc/shadow- /etc/gshadow- /etc/subuid- /etc/subgid-, /etc/.pwd.lock
 *                                        the shadow tools' backup copies and lock, rewritten by every
 *                                        useradd/groupadd/userdel (the real files are compared)
 * Not churn, so compared (each came back byte for byte in those experiments): /etc/ld.so.cache,
 * /var/lib/systemd (deb-systemd-helper's state), dpkg's triggers and lock files, debconf's
 * config.dat and templates.dat, ucf's files, crontabs, the account files. A leftover file under
 * /etc, /srv, /usr or /var/www, an account, a crontab, a dpkg status record is always reported.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Sandbox, SandboxHost } from './hosts.js';
import { rootfsPath } from './rootfs.js';
import { run } from './util.js';

export const DEFAULT_IGNORE: ReadonlyArray<string | RegExp> = [
  '/tmp',
  '/var/tmp',
  '/run',
  '/var/log',
  '/var/cache/apt',
  '/var/cache/ldconfig',
  /^\/var\/cache\/debconf\/[^/]+-old$/,
  '/var/lib/apt/lists',
  '/var/lib/apt/periodic',
  /^\/var\/lib\/dpkg\/[^/]+-old$/,
  '/var/lib/hostsmith',
  '/var/lib/systemd/timers',
  /^\/etc\/(passwd|group|shadow|gshadow|subuid|subgid)-$/,
  '/etc/.pwd.lock',
];

/** Files whose bytes change with no meaning: compared as their normal form. */
const BY_MEANING: Record<string, (text: string) => string> = {
  '/var/lib/dpkg/status': (t) => stanzas(t, new Set(['priority', 'section'])),
  '/var/lib/apt/extended_states': (t) => stanzas(t, new Set()),
};

/** Debian control-file stanzas without the `drop` fields, sorted, one block per stanza. */
function stanzas(text: string, drop: Set<string>): string {
  if (!text.trim()) return '';
  return text
    .split(/\n\s*\n/)
    .map((block) => {
      const fields: string[] = [];
      for (const line of block.split('\n')) {
        if (!line.trim()) continue;
        if (/^\s/.test(line) && fields.length) fields[fields.length - 1] += `\n${line}`;
        else fields.push(line);
      }
      return fields.filter((f) => !drop.has(f.slice(0, f.indexOf(':')).toLowerCase())).join('\n');
    })
    .filter((b) => b !== '')
    .sort()
    .join('\n\n');
}

type Kind = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';

/** One filesystem entry as this module compares it. `absent` = not in the merged view. */
type State = { kind: 'absent' } | { kind: Kind; mode: number; uid: number; gid: number; size: number; sha256?: string; target?: string; rdev?: number };

/** An entry of the upper dir: a state, or a whiteout (the path deleted); dirs may be opaque. */
type UpperEntry = { whiteout: true } | { whiteout: false; state: State & { kind: Kind }; opaque: boolean; text?: string };

export interface HostSnapshot {
  readonly host: string;
  readonly upperDir: string;
  readonly lowerDir: string;
  /** path in the host ("/etc/hosts") → its upper entry. */
  readonly upper: ReadonlyMap<string, UpperEntry>;
}

// ---------------------------------------------------------------- where the layers are

const unquote = (s: string): string => (s.startsWith("'") ? s.slice(1, -1).replace(/'\\''/g, "'") : s);

/** The lower dir the host's overlay really uses: the lowerdir= of the mount line of its boot script. */
function lowerDirOf(sb: Sandbox, host: SandboxHost): string {
  const boot = join(host.dir, 'boot.sh');
  let lower: string | undefined;
  if (existsSync(boot)) {
    const m = /mount -t overlay overlay -o lowerdir=('(?:[^']|'\\'')*'|[^,\s]+),/.exec(readFileSync(boot, 'utf8'));
    if (m) lower = unquote(m[1]!);
  }
  if (!lower) {
    try {
      lower = (JSON.parse(readFileSync(join(sb.dir, 'sandbox.json'), 'utf8')) as { rootfs?: string }).rootfs;
    } catch {
      /* fall through */
    }
  }
  lower ??= rootfsPath();
  if (lower.includes(':')) throw new Error(`residue: ${host.name} has several lower layers (${lower}); only one is supported`);
  if (!existsSync(lower)) throw new Error(`residue: the lower dir of ${host.name}, ${lower}, does not exist`);
  return lower;
}

// ---------------------------------------------------------------- reading entries

function kindOf(st: import('node:fs').Stats): Kind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

function sha256(file: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('end', () => res(h.digest('hex')))
      .on('error', rej);
  });
}

/** The state of a real file at `abs` (lstat: never follows a symlink); content hashed unless `hash` is false. */
async function readState(abs: string, hash: boolean): Promise<State & { kind: Kind }> {
  const st = await lstat(abs);
  const kind = kindOf(st);
  const s: State & { kind: Kind } = { kind, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: kind === 'dir' ? 0 : st.size };
  if (kind === 'file' && hash) s.sha256 = await sha256(abs);
  if (kind === 'symlink') s.target = await readlink(abs);
  if (kind === 'chardev' || kind === 'blockdev') s.rdev = st.rdev;
  return s;
}

function ignored(path: string, rules: ReadonlyArray<string | RegExp>): boolean {
  return rules.some((r) => (typeof r === 'string' ? path === r || path.startsWith(r.endsWith('/') ? r : `${r}/`) : r.test(path)));
}

/**
 * The overlay xattrs (trusted.overlay.*) of the given files, read by python3 (Node has no xattr
 * API): path → { name: value }; only paths that have any are returned.
 */
async function overlayXattrs(paths: string[]): Promise<Map<string, Record<string, string>>> {
  const script = [
    'import os, sys, json',
    'out = {}',
    "for p in sys.stdin.buffer.read().split(b'\\0'):",
    '    if not p: continue',
    '    try: names = [n for n in os.listxattr(p, follow_symlinks=False) if n.startswith("trusted.overlay.")]',
    '    except OSError: continue',
    '    if names: out[os.fsdecode(p)] = {n: os.getxattr(p, n, follow_symlinks=False).decode("latin-1") for n in names}',
    'json.dump(out, sys.stdout)',
  ].join('\n');
  // The system's python3 when there is one: a version manager's shim on the PATH costs ~1 s a call.
  const python = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => existsSync(p)) ?? 'python3';
  const r = await run(python, ['-I', '-S', '-c', script], { input: paths.join('\0') });
  if (r.code !== 0) throw new Error(`residue: reading overlay xattrs with python3 failed (exit ${r.code}): ${r.stderr}`);
  return new Map(Object.entries(JSON.parse(r.stdout) as Record<string, Record<string, string>>));
}

/** Every entry under `upperDir`, keyed by its path in the host. */
async function readUpper(upperDir: string): Promise<Map<string, UpperEntry>> {
  const found: Array<{ path: string; state: State & { kind: Kind } }> = [];
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(upperDir, rel))).sort();
    for (const name of names) {
      const path = `${rel}/${name}`;
      const state = await readState(join(upperDir, path), !ignored(path, DEFAULT_IGNORE));
      found.push({ path, state });
      if (state.kind === 'dir') await walk(path);
    }
  };
  await walk('');
  const xattrs = await overlayXattrs(found.filter((f) => f.state.kind === 'dir' || f.state.kind === 'file').map((f) => join(upperDir, f.path)));
  const out = new Map<string, UpperEntry>();
  for (const { path, state } of found) {
    const x = xattrs.get(join(upperDir, path)) ?? {};
    for (const unsupported of ['trusted.overlay.redirect', 'trusted.overlay.metacopy']) {
      if (unsupported in x) throw new Error(`residue: ${join(upperDir, path)} has ${unsupported}: redirect_dir/metacopy overlays are not supported`);
    }
    if (state.kind === 'chardev' && state.rdev === 0) out.set(path, { whiteout: true });
    else {
      const text = BY_MEANING[path] && state.kind === 'file' ? BY_MEANING[path](await readFile(join(upperDir, path), 'utf8')) : undefined;
      out.set(path, { whiteout: false, state, opaque: state.kind === 'dir' && x['trusted.overlay.opaque'] === 'y', ...(text !== undefined ? { text } : {}) });
    }
  }
  return out;
}

/** Snapshot of everything the host changed since boot (its overlay upper dir). */
export async function snapshotHost(sb: Sandbox, host: SandboxHost): Promise<HostSnapshot> {
  const upperDir = join(host.dir, 'upper');
  return { host: host.name, upperDir, lowerDir: lowerDirOf(sb, host), upper: await readUpper(upperDir) };
}

// ---------------------------------------------------------------- the merged view

const ABSENT: State = { kind: 'absent' };

function parentOf(path: string): string | undefined {
  const i = path.lastIndexOf('/');
  return i <= 0 ? (path === '/' ? undefined : '') : path.slice(0, i);
}

/** The lower rootfs (immutable): lstat results and hashes, cached per lower dir. */
class Lower {
  private static cache = new Map<string, Map<string, Promise<State>>>();
  private readonly states: Map<string, Promise<State>>;
  constructor(readonly dir: string) {
    let m = Lower.cache.get(dir);
    if (!m) Lower.cache.set(dir, (m = new Map()));
    this.states = m;
  }

  /** The lower entry at `path`, absent when it or a parent is missing or a parent is not a real dir. */
  state(path: string): Promise<State> {
    let p = this.states.get(path);
    if (!p) {
      p = (async () => {
        const parent = parentOf(path);
        if (parent) {
          const ps = await this.state(parent);
          if (ps.kind !== 'dir') return ABSENT;
        }
        try {
          return await readState(join(this.dir, path), true);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return ABSENT;
          throw e;
        }
      })();
      this.states.set(path, p);
    }
    return p;
  }

  /** Every lower path under `path` (not itself). */
  async descendants(path: string): Promise<string[]> {
    if ((await this.state(path)).kind !== 'dir') return [];
    const out: string[] = [];
    for (const name of (await readdir(join(this.dir, path))).sort()) {
      const child = `${path}/${name}`;
      out.push(child);
      out.push(...(await this.descendants(child)));
    }
    return out;
  }
}

/** Does this upper entry hide the lower entries under its path? */
function hidesLower(e: UpperEntry | undefined): boolean {
  return !!e && (e.whiteout || e.state.kind !== 'dir' || e.opaque);
}

/** The merged view of `path` given the upper entries `upper` over `lower`. */
async function mergedState(path: string, upper: ReadonlyMap<string, UpperEntry>, lower: Lower): Promise<State> {
  const own = upper.get(path);
  if (own) return own.whiteout ? ABSENT : own.state;
  for (let a = parentOf(path); a; a = parentOf(a)) if (hidesLower(upper.get(a))) return ABSENT;
  return lower.state(path);
}

// ---------------------------------------------------------------- comparing

const kindName = (s: State): string => (s.kind === 'absent' ? 'absent' : s.kind === 'dir' ? 'directory' : s.kind);
const oct = (m: number): string => m.toString(8).padStart(4, '0');

function describe(s: State): string {
  if (s.kind === 'absent') return 'absent';
  const base = `${kindName(s)} ${oct(s.mode)} ${s.uid}:${s.gid}`;
  if (s.kind === 'symlink') return `${base} -> ${s.target}`;
  if (s.kind === 'file') return `${base}, ${s.size} bytes`;
  return base;
}

/** What differs between two states of one path, or undefined when they are the same. */
function difference(b: State, a: State): string | undefined {
  if (b.kind === 'absent' && a.kind === 'absent') return undefined;
  if (b.kind === 'absent') return `added (${describe(a)})`;
  if (a.kind === 'absent') return `removed (was ${describe(b)})`;
  if (b.kind !== a.kind) return `${kindName(b)} → ${kindName(a)} (was ${describe(b)}, now ${describe(a)})`;
  const parts: string[] = [];
  if (b.mode !== a.mode && a.kind !== 'symlink') parts.push(`mode ${oct(b.mode)} → ${oct(a.mode)}`);
  if (b.uid !== a.uid || b.gid !== a.gid) parts.push(`owner ${b.uid}:${b.gid} → ${a.uid}:${a.gid}`);
  if (a.kind === 'symlink' && b.target !== a.target) parts.push(`target ${b.target} → ${a.target}`);
  if ((a.kind === 'chardev' || a.kind === 'blockdev') && b.rdev !== a.rdev) parts.push(`device ${b.rdev} → ${a.rdev}`);
  if (a.kind === 'file' && b.sha256 !== a.sha256) parts.push(`content changed (${b.size} → ${a.size} bytes)`);
  return parts.length ? parts.join(', ') : undefined;
}

/** Two states of a BY_MEANING file, with their normal forms: what differs in meaning, metadata included. */
function meaningDifference(b: State, a: State, bText: string | undefined, aText: string | undefined): string | undefined {
  if (bText === undefined || aText === undefined) return difference(b, a);
  const meta = b.kind === 'file' && a.kind === 'file' ? difference({ ...b, sha256: '' }, { ...a, sha256: '' }) : undefined;
  if (bText === aText) return meta;
  const records = (t: string) => new Set(t ? t.split('\n\n') : []);
  const bs = records(bText);
  const as = records(aText);
  const name = (block: string) => /^Package: (.*)$/m.exec(block)?.[1] ?? block.split('\n')[0]!;
  const gone = [...bs].filter((x) => !as.has(x)).map(name);
  const added = [...as].filter((x) => !bs.has(x)).map(name);
  const changed = gone.filter((n) => added.includes(n));
  const only = (list: string[]) => list.filter((n) => !changed.includes(n));
  return [
    changed.length ? `records changed: ${changed.join(', ')}` : '',
    only(added).length ? `records added: ${only(added).join(', ')}` : '',
    only(gone).length ? `records removed: ${only(gone).join(', ')}` : '',
    meta ?? '',
  ]
    .filter(Boolean)
    .join('; ');
}

/**
 * Paths whose merged-view state differs from the snapshot, each as "path: what changed";
 * [] = zero residue. DEFAULT_IGNORE and `o.ignore` (a string: that path and everything under
 * it; a RegExp: tested against the path) are left out.
 */
export async function residue(sb: Sandbox, host: SandboxHost, before: HostSnapshot, o: { ignore?: (string | RegExp)[] } = {}): Promise<string[]> {
  const now = await snapshotHost(sb, host);
  if (now.upperDir !== before.upperDir) throw new Error(`residue: the snapshot is of ${before.upperDir}, not of ${now.upperDir}`);
  const lower = new Lower(now.lowerDir);
  const rules = [...DEFAULT_IGNORE, ...(o.ignore ?? [])];

  const paths = new Set<string>([...before.upper.keys(), ...now.upper.keys()]);
  // A directory removed (whiteout), replaced, or removed and made again (opaque) on one side only:
  // the lower entries under it are in the merged view on the other side.
  for (const p of [...paths]) {
    if (hidesLower(before.upper.get(p)) !== hidesLower(now.upper.get(p))) for (const d of await lower.descendants(p)) paths.add(d);
  }

  /** The normal form of a BY_MEANING file in the merged view of `snap` (kept in the snapshot for upper files). */
  const normal = async (snap: HostSnapshot, path: string, state: State): Promise<string | undefined> => {
    if (state.kind === 'absent') return BY_MEANING[path]!('');
    if (state.kind !== 'file') return undefined;
    const e = snap.upper.get(path);
    if (e && !e.whiteout) return e.text;
    return BY_MEANING[path]!(await readFile(join(lower.dir, path), 'utf8'));
  };

  const diffs = new Map<string, { change: string; side?: 'added' | 'removed' }>();
  for (const path of [...paths].sort()) {
    if (ignored(path, rules)) continue;
    const b = await mergedState(path, before.upper, lower);
    const a = await mergedState(path, now.upper, lower);
    const change = BY_MEANING[path] ? await meaningDifference(b, a, await normal(before, path, b), await normal(now, path, a)) : difference(b, a);
    if (change) diffs.set(path, { change, side: b.kind === 'absent' ? 'added' : a.kind === 'absent' ? 'removed' : undefined });
  }

  // Fold what was added (removed) under a directory that was itself added (removed) into its line.
  const out: string[] = [];
  const folded = new Map<string, number>();
  for (const [path, d] of diffs) {
    let top: string | undefined;
    for (let p = parentOf(path); p; p = parentOf(p)) if (d.side && diffs.get(p)?.side === d.side) top = p;
    if (top) folded.set(top, (folded.get(top) ?? 0) + 1);
  }
  for (const [path, d] of diffs) {
    let inside = false;
    for (let p = parentOf(path); p; p = parentOf(p)) if (d.side && diffs.get(p)?.side === d.side) inside = true;
    if (inside) continue;
    const n = folded.get(path);
    out.push(`${path}: ${d.change}${n ? ` (and ${n} entr${n === 1 ? 'y' : 'ies'} ${d.side} under it)` : ''}`);
  }
  return out;
}
