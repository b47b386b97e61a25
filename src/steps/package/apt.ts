/**
 * apt/dpkg plumbing for the `package` step: the scripts it runs and the parsing of what they
 * print. Everything here is either a pure function or a string builder, so it is unit-tested.
 */
import { quote } from '../../shell/script.js';

/** Environment for every apt/dpkg call: never prompt, stable English output for the parsers. */
export const APT_ENV: Record<string, string> = {
  DEBIAN_FRONTEND: 'noninteractive',
  APT_LISTCHANGES_FRONTEND: 'none',
  NEEDRESTART_MODE: 'a',
  LC_ALL: 'C',
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
};

/** How long apt waits for another apt/dpkg to release its lock before giving up. */
export const LOCK_TIMEOUT_S = 300;

/** Options for apt-get runs that change the host: no questions, keep local config files, wait for the lock. */
export const APT_WRITE_OPTS = ['-y', '-q', `-o DPkg::Lock::Timeout=${LOCK_TIMEOUT_S}`, '-o Dpkg::Options::=--force-confdef', '-o Dpkg::Options::=--force-confold'].join(' ');

/**
 * For apt runs that must only read (check, plan, dry runs): no binary caches in /var/cache/apt,
 * no planner log in /var/log/apt — which apt writes even for `-s` when run as root.
 */
export const APT_READ_OPTS = '-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Dir::Log::Planner=/dev/null';

/**
 * For the dry run of an apply (which goes on to change the host): apt keeps its binary cache in
 * /var/cache/apt as any `apt-get -s` run as root does, so the install after it does not build
 * that cache again from the lists (about a second of CPU on Debian's full lists). No planner log.
 */
export const APT_APPLY_READ_OPTS = '-o Dir::Log::Planner=/dev/null';

/** Where a successful refresh is stamped (the path Ubuntu's update-notifier uses too). */
export const UPDATE_STAMP = '/var/lib/apt/periodic/update-success-stamp';

/** Debian package name (policy §5.6.1), optionally pinned to a version: `name=version`. */
export const PKG_NAME_RE = /^[a-z0-9][a-z0-9+.-]+$/;
export const PKG_VERSION_RE = /^(?:\d+:)?\d[A-Za-z0-9.+~-]*$/;

export interface PkgSpec {
  name: string;
  version?: string;
}

export function parseSpec(s: string): PkgSpec {
  const i = s.indexOf('=');
  return i < 0 ? { name: s } : { name: s.slice(0, i), version: s.slice(i + 1) };
}

export function formatSpec(s: PkgSpec): string {
  return s.version ? `${s.name}=${s.version}` : s.name;
}

export interface DpkgEntry {
  version: string;
  /** dpkg's Status field, e.g. "install ok installed", "deinstall ok config-files". */
  status: string;
}

export const isInstalled = (e: DpkgEntry | undefined): boolean => e?.status === 'install ok installed';
/**
 * Installed and sound, and dpkg is to keep it: selected for install, or held there (apt-mark hold).
 * An install asked for is then already done, at dpkg's version, and there is nothing to ask apt:
 * a held package is what apt would leave as it is anyway, so asking (a dry run, or apt-cache
 * policy and an install of nothing on a plain apply) cost every rerun over a second of the host's CPU. A package
 * selected for removal or purge, or broken, is left to apt; so is every removal.
 */
export const isKept = (e: DpkgEntry | undefined): boolean => e?.status === 'install ok installed' || e?.status === 'hold ok installed';
/** Its files are on disk: installed, or unpacked, half-configured, or waiting for triggers. */
const onDisk = (e: DpkgEntry | undefined): boolean => !!e && !/ (?:not-installed|config-files)$/.test(e.status);
/** Removed, but its configuration files are still there. */
export const hasConfigOnly = (e: DpkgEntry | undefined): boolean => !!e && / config-files$/.test(e.status);

/**
 * `dpkg-query -W -f='${Package}\t${Architecture}\t${Version}\t${Status}\n'` → entries under
 * `name:arch` and, for the native architecture and `all`, under the bare name — the two ways
 * apt names packages in its output.
 */
export function parseDpkg(out: string, nativeArch: string): Record<string, DpkgEntry> {
  const map: Record<string, DpkgEntry> = {};
  for (const line of out.split('\n')) {
    const [name, arch, version, status] = line.split('\t');
    if (!name || !arch || version === undefined || status === undefined) continue;
    const e = { version, status: status.trim() };
    // Only named by another package's relations: dpkg has no state for it.
    if (e.status === 'unknown ok not-installed') continue;
    map[`${name}:${arch}`] = e;
    if (arch === nativeArch || arch === 'all' || !(name in map)) map[name] = e;
  }
  return map;
}

export interface SimInst {
  name: string;
  version: string;
  /** Version installed now, when this is an upgrade or downgrade. */
  from?: string;
}

export interface SimResult {
  inst: SimInst[];
  /** Packages apt would remove (Remv) or purge (Purg), with the version installed now. */
  remv: Array<{ name: string; version: string }>;
}

/** The `Inst`/`Remv`/`Purg` lines of `apt-get -s` output. `Conf` lines repeat `Inst` and are ignored. */
export function parseSim(out: string): SimResult {
  const res: SimResult = { inst: [], remv: [] };
  for (const line of out.split('\n')) {
    let m = /^Inst (\S+) (?:\[([^\]]*)\] )?\((\S+)/.exec(line);
    if (m) {
      res.inst.push({ name: m[1]!, version: m[3]!, ...(m[2] ? { from: m[2] } : {}) });
      continue;
    }
    m = /^(?:Remv|Purg) (\S+)(?: \[([^\]]*)\])?/.exec(line);
    if (m) res.remv.push({ name: m[1]!, version: m[2] ?? '' });
  }
  return res;
}

/** apt's `E:` lines, for error messages. */
export function aptErrors(stderr: string): string[] {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('E:'));
}

/** dpkg's own complaints (e.g. a file conflict), which apt passes through on stdout: each `dpkg: error` line and its indented details. */
export function dpkgErrors(out: string): string[] {
  const res: string[] = [];
  let inError = false;
  for (const line of out.split('\n')) {
    if (/^dpkg: error/.test(line)) inError = true;
    else if (!/^\s/.test(line)) inError = false;
    if (inError && line.trim()) res.push(line.trim());
  }
  return res;
}

/** Names apt says it does not know, or cannot install at the asked version. */
export function unknownPackages(stderr: string): string[] {
  const out: string[] = [];
  for (const l of aptErrors(stderr)) {
    const m = /Unable to locate package (\S+)/.exec(l) ?? /Package '([^']+)' has no installation candidate/.exec(l) ?? /Version '[^']*' for '([^']+)' was not found/.exec(l);
    if (m && !out.includes(m[1]!)) out.push(m[1]!);
  }
  return out;
}

/** Names whose pinned version apt cannot find (`E: Version 'v' for 'name' was not found`). */
export function missingVersions(stderr: string): string[] {
  return [...stderr.matchAll(/Version '[^']*' for '([^']+)' was not found/g)].map((m) => m[1]!);
}

const DPKG_FORMAT = quote('${Package}\t${Architecture}\t${Version}\t${Status}\n');

/** What apt's answer to a dry run depends on (INPUTS_STAMP); shell words, globs expanded on the host. */
const INPUT_PATHS = '/var/lib/dpkg/status /var/lib/dpkg/arch /var/lib/apt/extended_states /var/lib/apt/lists/* /etc/apt /etc/apt/* /etc/apt/*/*';

/**
 * One round trip: every package dpkg knows (dpkg's own entry names the native architecture), the
 * host's clock, then one `stat` of the refresh stamp and of apt's inputs. splitState works out
 * from it the lists' age (the stamp and the Release files) and the stamp of apt's inputs, as
 * INPUTS_STAMP's `cksum` prints it. This read is all a no-op rerun of the step costs the host:
 * a `dpkg --print-architecture`, a second `stat` and a `cksum` were three processes more.
 */
export function stateScript(): string {
  return [`dpkg-query -W -f=${DPKG_FORMAT} || exit $?`, 'echo "--- clock"', 'date +%s', 'echo "--- stat"', `stat -c '%n %i %s %Y' ${UPDATE_STAMP} ${INPUT_PATHS} 2>/dev/null || true`].join('\n');
}

/**
 * A stamp of everything apt's answer to a dry run depends on: dpkg's status and the auto marks
 * (both rewritten by every package change, so the inode moves), the apt lists, and apt's
 * configuration (sources, pins, options, keys). Two dry runs of one transaction under one stamp
 * give the same answer, so the run does not simulate again until the stamp moves (MEMO_MARK).
 */
export const INPUTS_STAMP = `stat -c '%n %i %s %Y' ${INPUT_PATHS} 2>/dev/null | cksum`;

/**
 * First line of a read whose output is fixed by a stamp it names (engine/probe.ts): its result
 * stays good for the run however many batched reads a change drops, until the stamp moves.
 */
export const MEMO_MARK = '# hostsmith-memo:';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 24;
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** What POSIX `cksum` prints for `data`, without its newline: the CRC (length folded in) and the length. */
export function cksum(data: Buffer): string {
  let crc = 0;
  const step = (b: number) => {
    crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ b) & 0xff]!) >>> 0;
  };
  for (const b of data) step(b);
  for (let n = data.length; n > 0; n = Math.floor(n / 256)) step(n & 0xff);
  return `${~crc >>> 0} ${data.length}`;
}

/** Lists' Release files and the refresh stamp: what the lists' age is taken from. */
const LISTS_TIME = new RegExp(`^(?:${UPDATE_STAMP.replace(/[.]/g, '\\.')}|/var/lib/apt/lists/[^/]*Release)$`);

/** stateScript's answer (bytes as the host printed them, or that text) → the packages, the lists' age, the inputs' stamp. */
export function splitState(answer: string | Buffer): { dpkg: Record<string, DpkgEntry>; listsAgeS: number | null; inputs?: string } {
  const raw = Buffer.isBuffer(answer) ? answer : Buffer.from(answer, 'utf8');
  // Where a marker line starts, at or after `from`; -1: absent.
  const at = (mark: string, from: number): number => {
    const line = Buffer.from(`${mark}\n`);
    if (from === 0 && raw.subarray(0, line.length).equals(line)) return 0;
    const i = raw.indexOf(Buffer.concat([Buffer.from('\n'), line]), Math.max(0, from - 1));
    return i < 0 ? -1 : i + 1;
  };
  const clock = at('--- clock', 0);
  const statAt = clock < 0 ? -1 : at('--- stat', clock);
  const head = raw.subarray(0, clock < 0 ? raw.length : clock).toString('utf8');
  if (statAt < 0) return { dpkg: parseDpkgQuery(head), listsAgeS: null };
  const now = Number(
    raw
      .subarray(clock + '--- clock\n'.length, statAt)
      .toString('latin1')
      .trim(),
  );
  let stats = raw.subarray(statAt + '--- stat\n'.length);
  const mtimes: number[] = [];
  for (const line of stats.toString('utf8').split('\n')) {
    const m = /^(.*) \d+ \d+ (\d+)$/.exec(line);
    if (m && LISTS_TIME.test(m[1]!)) mtimes.push(Number(m[2]));
  }
  // The stamp's line (first, when it exists) is not one of apt's inputs.
  if (stats.subarray(0, UPDATE_STAMP.length + 1).toString('latin1') === `${UPDATE_STAMP} `) {
    const nl = stats.indexOf(0x0a);
    stats = nl < 0 ? stats.subarray(stats.length) : stats.subarray(nl + 1);
  }
  const age = !Number.isFinite(now) || !mtimes.length ? null : now - Math.max(...mtimes);
  return { dpkg: parseDpkgQuery(head), listsAgeS: age !== null && age >= 0 ? age : null, inputs: cksum(stats) };
}

/**
 * `dpkg-query -W` (DPKG_FORMAT) → the entries (parseDpkg), keyed with the native architecture:
 * the one dpkg itself is built for, which is its own package's.
 */
export function parseDpkgQuery(out: string): Record<string, DpkgEntry> {
  const own = /^dpkg\t([^\t\n]+)\t/m.exec(out);
  return parseDpkg(out, own?.[1] ?? '');
}

/** Shell: the native architecture, then every package dpkg lists (parseDpkgList). */
export const DPKG_LIST = `dpkg --print-architecture && dpkg-query -W -f=${DPKG_FORMAT}`;

/**
 * DPKG_LIST with the entries a plain listing leaves out: a package selected but never unpacked
 * ("install ok not-installed", what a failed transaction leaves of its own). Also lists every name
 * dpkg merely heard of ("unknown ok not-installed"), which parseDpkg drops.
 */
export const DPKG_LIST_ALL = `dpkg --print-architecture && dpkg-query -W -f=${DPKG_FORMAT} '*'`;

/** DPKG_LIST's output → the native architecture and the entries (parseDpkg). */
export function parseDpkgList(out: string): { arch: string; dpkg: Record<string, DpkgEntry> } {
  const nl = out.indexOf('\n');
  const arch = (nl < 0 ? out : out.slice(0, nl)).trim();
  return { arch, dpkg: nl < 0 ? {} : parseDpkg(out.slice(nl + 1), arch) };
}

/** The name apt gives a package: bare for the native architecture and `all`, else `name:arch`. */
const aptName = (name: string, arch: string, native: string) => (arch === native || arch === 'all' ? name : `${name}:${arch}`);

/** Entries by apt's name for them (parseDpkg keeps each under `name:arch` as well). */
function byAptName(dpkg: Record<string, DpkgEntry>, native: string): Map<string, DpkgEntry> {
  const out = new Map<string, DpkgEntry>();
  for (const [key, e] of Object.entries(dpkg)) {
    const at = key.indexOf(':');
    if (at < 0) continue;
    const name = aptName(key.slice(0, at), key.slice(at + 1), native);
    // A package that moved between its native architecture and all keeps its one name: the installed entry wins.
    if (!out.has(name) || isInstalled(e)) out.set(name, e);
  }
  return out;
}

/**
 * What a transaction did, from dpkg's entries before and after it, in the form of apt's dry run:
 * installed (with the version replaced, if any) and removed packages. What undo data is made of
 * when no dry run was made before the change.
 */
export function dpkgChanges(before: Record<string, DpkgEntry>, after: Record<string, DpkgEntry>, native: string): SimResult {
  const b = byAptName(before, native);
  const a = byAptName(after, native);
  const res: SimResult = { inst: [], remv: [] };
  for (const name of [...new Set([...b.keys(), ...a.keys()])].sort()) {
    const was = b.get(name);
    const now = a.get(name);
    // A transaction stopped part-way leaves packages unpacked or half-configured, and entries
    // for packages it never unpacked ("install ok not-installed"): all of them are its own.
    if ((onDisk(now) && !onDisk(was)) || (was === undefined && now !== undefined)) res.inst.push({ name, version: now!.version });
    else if (onDisk(now) && now!.version !== was!.version) res.inst.push({ name, version: now!.version, from: was!.version });
    else if (!onDisk(now) && onDisk(was)) res.remv.push({ name, version: was!.version });
  }
  return res;
}

/** The packages /var/lib/apt/extended_states marks as automatically installed, by apt's name. */
export function parseExtendedStates(text: string, native: string): string[] {
  const out: string[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const field = (k: string) => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(stanza)?.[1];
    const name = field('Package');
    if (name && field('Auto-Installed') === '1') out.push(aptName(name, field('Architecture') ?? native, native));
  }
  return out;
}

/** Shell: apt's candidate and known versions of `names` (parsePolicy); no dry run. */
export function policyScript(names: string[], inputs?: string): string {
  return [...(inputs ? [`${MEMO_MARK} ${inputs}`] : []), `apt-cache -q policy ${names.map(quote).join(' ')}`].join('\n');
}

/** `apt-cache policy` → per package its candidate version (null: none) and the versions apt knows. */
export function parsePolicy(out: string): Record<string, { candidate: string | null; versions: string[] }> {
  const res: Record<string, { candidate: string | null; versions: string[] }> = {};
  let cur: { candidate: string | null; versions: string[] } | undefined;
  for (const line of out.split('\n')) {
    let m = /^(\S+):$/.exec(line);
    if (m) {
      cur = { candidate: null, versions: [] };
      res[m[1]!] = cur;
      continue;
    }
    if (!cur) continue;
    m = /^\s+Candidate: (\S+)$/.exec(line);
    if (m) {
      cur.candidate = m[1] === '(none)' ? null : m[1]!;
      continue;
    }
    m = /^ (?:\*\*\*| {3}) (\S+) -?\d+$/.exec(line);
    if (m) cur.versions.push(m[1]!);
  }
  return res;
}

/** `apt-get install` arguments: `name[=version]` installs, `name-` removes, in one transaction. */
export function transactionArgs(install: PkgSpec[], remove: string[]): string {
  return [...install.map((s) => quote(formatSpec(s))), ...remove.map((n) => quote(`${n}-`))].join(' ');
}

/**
 * The dry run of a transaction, then (only when it would remove or change installed packages)
 * the packages apt marked as automatically installed, so rollback can mark them again.
 * With `privateLists` the simulation uses freshly downloaded lists in a temporary folder,
 * leaving the host's own lists and caches untouched. `planOnly` (a plan, a dry run): apt's binary
 * cache is built in memory and never written; otherwise apt keeps it (APT_APPLY_READ_OPTS).
 */
export function simulateScript(args: string, privateLists = false, inputs?: string, planOnly = true): string {
  // Fresh lists are downloaded anew each time: nothing to memoize.
  const lines: string[] = inputs && !privateLists ? [`${MEMO_MARK} ${inputs}`] : [];
  // Private lists have a cache of their own, never the host's.
  const readOpts = planOnly || privateLists ? APT_READ_OPTS : APT_APPLY_READ_OPTS;
  let opts = ` ${readOpts}`;
  if (privateLists) {
    lines.push('d=$(mktemp -d /tmp/hostsmith-apt.XXXXXXXX) || exit 1', `trap 'rm -rf "$d"' EXIT`, 'mkdir -p "$d/lists/partial"');
    opts += ' -o Dir::State::Lists="$d/lists" -o APT::Sandbox::User=root -o Acquire::Languages=none -o Acquire::GzipIndexes=true';
    lines.push(`apt-get -q${opts} update >"$d/out" 2>&1 || { cat "$d/out" >&2; exit 100; }`);
  }
  lines.push(
    `out=$(apt-get -s -q${opts} install ${args}) || exit $?`,
    'printf "%s\\n" "$out"',
    `if printf "%s\\n" "$out" | grep -q -e '^Remv ' -e '^Inst [^ ]* \\['; then echo "--- auto"; apt-mark ${readOpts} showauto; fi`,
  );
  return lines.join('\n');
}

export function splitSim(out: string): { sim: SimResult; auto: string[] } {
  const [sim = '', auto = ''] = out.split('--- auto\n');
  return {
    sim: parseSim(sim),
    auto: auto
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean),
  };
}

/**
 * Refreshes the apt lists, waiting for another refresh to finish (apt-get update does not honour
 * DPkg::Lock::Timeout for the lists lock), then stamps the time of the refresh.
 */
export function updateScript(): string {
  return [
    'i=0',
    `while :; do`,
    `  if out=$(apt-get -q update 2>&1); then break; fi`,
    `  if printf "%s" "$out" | grep -q "Could not get lock" && [ $i -lt ${LOCK_TIMEOUT_S} ]; then i=$((i+2)); sleep 2; continue; fi`,
    `  printf "%s\\n" "$out" >&2; exit 100`,
    'done',
    `printf "%s\\n" "$out" | grep -q '^[WE]: ' && printf "%s\\n" "$out" | grep '^[WE]: ' >&2`,
    `mkdir -p ${quote(UPDATE_STAMP.replace(/\/[^/]+$/, ''))} && touch ${UPDATE_STAMP}`,
  ].join('\n');
}

/** Runs a plain dpkg command, waiting (like apt's DPkg::Lock::Timeout) while another run holds the lock. */
export function dpkgWaitScript(cmd: string): string {
  return [
    'i=0',
    `while ! out=$(${cmd} 2>&1); do`,
    `  if printf "%s" "$out" | grep -q "lock" && [ $i -lt ${LOCK_TIMEOUT_S} ]; then i=$((i+2)); sleep 2; continue; fi`,
    '  printf "%s\\n" "$out" >&2; exit 1',
    'done',
  ].join('\n');
}

/** Where ucf keeps its state: the hashes of the config files it manages, its registry, their rotated copies, its cache. */
export const UCF_DIR = '/var/lib/ucf';

/**
 * Names every file under `dir` with its sha256 and mode, and every folder and link with its mode
 * or target, one line each, sorted; prints `absent` when `dir` does not exist. Two listings are
 * equal when the contents are byte for byte.
 */
export function treeManifestScript(dir: string): string {
  const d = quote(dir);
  return [
    `if [ ! -e ${d} ] && [ ! -L ${d} ]; then echo absent; exit 0; fi`,
    `cd ${d} || exit 1`,
    `find . \\( -type f -printf 'f %m %U:%G %p\\t' -exec sha256sum {} \\; \\) -o \\( -type l -printf 'l %p -> %l\\n' \\) -o \\( -type d -printf 'd %m %U:%G %p\\n' \\) -o -printf '? %p\\n' | LC_ALL=C sort`,
  ].join('\n');
}

/** File systems whose files have owners that count (local disks, the container's root, tmpfs). */
const OWNED_FS = 'ext[234]|xfs|btrfs|zfs|f2fs|jfs|reiserfs|overlay|tmpfs';

/**
 * What still belongs to the given uids or gids: processes running as them, then files on the local
 * file systems (each searched once, -xdev; `skip`, e.g. the backup folders, left out). Prints
 * `<uid> <gid> proc <pid> <command>` or `<uid> <gid> file <path>` — only the first line for each
 * uid and each gid, so a user owning millions of files costs one line.
 */
export function ownersScript(uids: number[], gids: number[], skip: string): string {
  const tests = [...uids.map((u) => `-uid ${u}`), ...gids.map((g) => `-gid ${g}`)].join(' -o ');
  if (!tests) return 'exit 0';
  return [
    '{',
    `find /proc -mindepth 1 -maxdepth 1 -name '[0-9]*' \\( ${tests} \\) -printf '%U %G proc %f\\n' 2>/dev/null`,
    `awk '$3 ~ /^(${OWNED_FS})$/ { print $2 }' /proc/mounts | while IFS= read -r m; do`,
    `  m=$(printf '%b' "$m")`,
    `  find "$m" -xdev -path ${quote(skip)} -prune -o \\( ${tests} \\) -printf '%U %G file %p\\n' 2>/dev/null`,
    'done',
    `} | awk '{ a = "u" $1; b = "g" $2; if ((a in seen) && (b in seen)) next; seen[a]; seen[b]`,
    `  if ($3 == "proc") { c = ""; f = "/proc/" $4 "/comm"; getline c < f; close(f); print $0 " " c } else print }'`,
    'exit 0',
  ].join('\n');
}

export interface Owned {
  uid: number;
  gid: number;
  /** `/srv/keep`, or `process 772 (dbus-daemon)`. */
  what: string;
}

export function parseOwners(out: string): Owned[] {
  const res: Owned[] = [];
  for (const line of out.split('\n')) {
    const m = /^(\d+) (\d+) (proc|file) (.*)$/.exec(line);
    if (!m) continue;
    const [, uid, gid, kind, rest] = m;
    let what = rest!;
    if (kind === 'proc') {
      const [pid, ...comm] = rest!.split(' ');
      what = `process ${pid}${comm.join(' ').trim() ? ` (${comm.join(' ').trim()})` : ''}`;
    }
    res.push({ uid: Number(uid), gid: Number(gid), what });
  }
  return res;
}
