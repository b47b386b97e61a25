/**
 * Throwaway real Debian hosts on this machine.
 *
 * Each host = an overlay of the cached rootfs (test/hosts/rootfs.ts), booted
 * by `unshare --mount --uts --pid --fork --kill-child` so its mounts, hostname
 * and processes live in their own namespaces; tini is PID 1 there, sshd runs
 * under it on a loopback address 127.0.0.x claimed for this host alone.
 * Killing the unshare process (or the namespace's PID 1) ends everything.
 */
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, renameSync, rmdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import {
  bootScript,
  cgroupRoots,
  shadowableSysctls,
  shadowSysctls,
  hostCgroup,
  inventory,
  knownHosts,
  provisionScript,
  sshConfig,
  sshdConfig,
  systemdBootScript,
  type HostSpec,
} from './host-files.js';
import { startProxy } from './egress.js';
import { ensureRootfs, type HostKind } from './rootfs.js';
import { claimSlots, pickPort, privateAddresses, releaseSlot, setSlotOwner, slotAddress } from './slots.js';
import { sshExec } from './ssh.js';
import { childPids, isAlive, killQuietly, mustRun, pidNamespace, procId, readJson, removeTree, SANDBOX_ROOT, sleep, tailFile, waitGone, type ProcId } from './util.js';

/**
 * `shared`: the host uses this machine's network (sshd on 127.0.0.x). `private`: the host has a
 * network namespace of its own, joined to this machine by a veth pair (sshd on 10.231.x.2), so
 * what it does to its firewall or interfaces never touches this machine; it has no route out, and
 * apt reaches the package mirror through a proxy on this machine's end of the pair (egress.ts).
 */
export type HostNet = 'shared' | 'private';

export interface SandboxOptions {
  /** `plain` (default): sshd under tini, no init system. `systemd`: a booted systemd (systemd-nspawn). */
  kind?: HostKind;
  net?: HostNet;
  /**
   * Kernel settings (outside net.*) each host may change as if they were its own: a file per key,
   * bound over its /proc/sys entry (host-files.ts shadowSysctls). The machine's kernel is untouched.
   */
  sysctls?: string[];
}

export interface SandboxHost {
  name: string; // h1, h2, …
  address: string; // 127.0.0.x, or 10.231.x.2 on a private network
  port: number;
  pid: number; // the host's unshare process (killing it ends the host)
  dir: string; // host dir: upper/ work/ merged/ keys/ sshd.log …
}

export interface Sandbox {
  dir: string;
  kind: HostKind;
  net: HostNet;
  /** The kernel settings each host has a copy of: SandboxOptions.sysctls, less those it cannot have. */
  sysctls: string[];
  hosts: SandboxHost[];
  keyPath: string; // client private key (ed25519, no passphrase), authorized for root, deploy, nosudo
  knownHostsPath: string;
  sshConfigPath: string;
  inventoryPath: string;
  stop(): Promise<void>;
  restart(host: SandboxHost, o?: { wipe?: boolean }): Promise<void>;
}

/** What sandbox.json records per host, so another process can tear it down. */
interface HostState extends HostSpec {
  slot: number;
  unshare?: ProcId; // pid = SandboxHost.pid
  init?: ProcId; // PID 1 of the host's pid namespace (tini), as seen from here
  pidns?: string;
  proxy?: ProcId; // on a private network: the web proxy on this machine's end of its pair (egress.ts)
}

interface SandboxState {
  version: 1;
  dir: string;
  rootfs: string;
  kind?: HostKind; // absent: plain (state files written before kinds existed)
  net?: HostNet;
  sysctls?: string[];
  detached: boolean;
  creator: ProcId;
  createdAt: string;
  hosts: HostState[];
}

export const BOOT_TIMEOUT_MS = Number(process.env.HOSTSMITH_SANDBOX_BOOT_TIMEOUT_MS ?? 15_000);
const STATE_FILE = 'sandbox.json';
/** Set by the vitest global setup: sandboxes started by this test run are registered there. */
export const RUN_DIR_ENV = 'HOSTSMITH_SANDBOX_RUN_DIR';
const HOST_KEY_TYPES = ['ed25519', 'ecdsa'];
const HOST_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: '/root' };

// ---------------------------------------------------------------- prerequisites

const COMMANDS: Record<string, string> = {
  ip: 'iproute2',
  debootstrap: 'debootstrap',
  unshare: 'util-linux',
  setpriv: 'util-linux',
  flock: 'util-linux',
  chroot: 'coreutils',
  ssh: 'openssh-client',
  'ssh-keygen': 'openssh-client',
};

function hasCommand(cmd: string): boolean {
  const env = { ...process.env, PATH: `${process.env.PATH ?? ''}:${HOST_ENV.PATH}` }; // sbin dirs may be off a user's PATH
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', env }).status === 0;
}

function hasOverlayfs(): boolean {
  if (readFileSync('/proc/filesystems', 'utf8').includes('\toverlay\n')) return true;
  return spawnSync('modprobe', ['-n', 'overlay'], { stdio: 'ignore' }).status === 0;
}

function canUnshare(): boolean {
  const r = spawnSync('unshare', ['--mount', '--uts', '--pid', '--fork', '--kill-child', '--propagation', 'private', 'true'], {
    stdio: 'ignore',
  });
  return r.status === 0;
}

/** What the systemd kind needs beyond the plain one. */
const SYSTEMD_COMMANDS: Record<string, string> = { 'systemd-nspawn': 'systemd-container', nsenter: 'util-linux' };
const PRIVATE_NET_COMMANDS: Record<string, string> = { nsenter: 'util-linux' };

/** Is this machine able to run sandbox hosts (of a kind)? `missing` names what is not there. */
export function prerequisites(o: SandboxOptions = {}): { ok: boolean; missing: string[] } {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root (run as uid 0: namespaces, mounts and chroot need it)');
  const needed = { ...COMMANDS, ...(o.kind === 'systemd' ? SYSTEMD_COMMANDS : {}), ...(o.net === 'private' ? PRIVATE_NET_COMMANDS : {}) };
  for (const cmd of Object.keys(needed)) if (!hasCommand(cmd)) missing.push(cmd);
  if (!hasOverlayfs()) missing.push('overlayfs (kernel module "overlay")');
  if (missing.length === 0 && !canUnshare()) {
    missing.push('namespaces (unshare --mount --uts --pid failed: a container without CAP_SYS_ADMIN?)');
  }
  return { ok: missing.length === 0, missing };
}

/** "apt-get install …" for the missing commands, or '' if none is a package. */
export function fixHint(missing: string[]): string {
  const all: Record<string, string> = { ...COMMANDS, ...SYSTEMD_COMMANDS };
  const pkgs = [...new Set(missing.map((m) => all[m]).filter((p): p is string => !!p))];
  return pkgs.length ? `apt-get install -y ${pkgs.join(' ')}` : '';
}

export function describeMissing(missing: string[]): string {
  const fix = fixHint(missing);
  return `missing: ${missing.join(', ')}${fix ? `\n  fix: ${fix}` : ''}`;
}

// ---------------------------------------------------------------- state file

function statePath(dir: string): string {
  return join(dir, STATE_FILE);
}

function readState(dir: string): SandboxState | undefined {
  return readJson<SandboxState>(statePath(dir));
}

function writeState(st: SandboxState): void {
  const tmp = `${statePath(st.dir)}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(st, null, 2)}\n`);
  renameSync(tmp, statePath(st.dir));
}

function hostAlive(h: HostState): boolean {
  return (!!h.unshare && isAlive(h.unshare)) || (!!h.init && isAlive(h.init));
}

/** Sandboxes whose state file is in `root`'s direct subdirectories. */
export function listSandboxes(root = SANDBOX_ROOT): Array<{ dir: string; running: boolean; hosts: HostSpec[]; detached: boolean }> {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => readState(join(root, name)))
    .filter((st): st is SandboxState => !!st)
    .map((st) => ({ dir: st.dir, running: st.hosts.some(hostAlive), hosts: st.hosts, detached: st.detached }));
}

// ---------------------------------------------------------------- start

export async function startSandbox(o: { count: number; detached?: boolean; dir?: string } & SandboxOptions): Promise<Sandbox> {
  if (!Number.isInteger(o.count) || o.count < 1 || o.count > 50) {
    throw new Error(`startSandbox: count must be an integer 1..50, got ${o.count}`);
  }
  const kind = o.kind ?? 'plain';
  const net = o.net ?? 'shared';
  const pre = prerequisites({ kind, net });
  if (!pre.ok) throw new Error(`cannot start ${kind} sandbox hosts: ${describeMissing(pre.missing)}`);
  const rootfs = await ensureRootfs(kind);
  const detached = o.detached ?? false;
  const dir = await prepareDir(o.dir, detached);
  const st: SandboxState = {
    version: 1,
    dir,
    rootfs,
    kind,
    net,
    ...(o.sysctls?.length ? { sysctls: shadowableSysctls(o.sysctls) } : {}),
    detached,
    creator: procId(process.pid),
    createdAt: new Date().toISOString(),
    hosts: [],
  };
  writeState(st); // marks the dir as ours before anything else goes in
  try {
    await populate(st, o.count);
    await Promise.all(st.hosts.map((h) => bootHost(st, h)));
  } catch (e) {
    await killHosts(st).catch(() => undefined);
    releaseSlots(st);
    throw new Error(`${(e as Error).message}\n(sandbox files kept for inspection in ${dir}; remove with: npm run sandbox -- down --dir ${dir})`);
  }
  return sandboxHandle(st);
}

async function prepareDir(requested: string | undefined, detached: boolean): Promise<string> {
  const runDir = process.env[RUN_DIR_ENV];
  if (!requested) {
    const parent = runDir && !detached ? runDir : SANDBOX_ROOT;
    mkdirSync(parent, { recursive: true });
    return mkdtempSync(join(parent, 'sb-'));
  }
  const dir = resolve(requested);
  const st = readState(dir);
  if (st?.hosts.some(hostAlive)) {
    throw new Error(`a sandbox is already running in ${dir}; stop it first: npm run sandbox -- down --dir ${dir}`);
  }
  if (!st && existsSync(dir) && readdirSync(dir).length > 0) {
    throw new Error(`${dir} exists, is not empty and is not a sandbox dir; choose another --dir`);
  }
  if (st) await stopSandbox(dir); // a dead one (e.g. the machine rebooted): clear it
  mkdirSync(dir, { recursive: true });
  if (runDir && !detached) appendFileSync(join(runDir, 'sandboxes.list'), `${dir}\n`);
  return dir;
}

/** Keys, slots, ports and every file the hosts and clients need. */
async function populate(st: SandboxState, count: number): Promise<void> {
  const keyPath = join(st.dir, 'id_ed25519');
  await keygen(['-t', 'ed25519', '-N', '', '-C', 'hostsmith-sandbox', '-f', keyPath]);
  const slots = await claimSlots(count, procId(process.pid), st.dir);
  const address = (slot: number) => (st.net === 'private' ? privateAddresses(slot).host : slotAddress(slot));
  st.hosts = slots.map((slot, i) => ({ name: `h${i + 1}`, address: address(slot), port: 0, dir: join(st.dir, `h${i + 1}`), slot }));
  writeState(st);
  const hostKeys = new Map<string, string[]>();
  const authorized = readFileSync(`${keyPath}.pub`, 'utf8');
  await Promise.all(
    st.hosts.map(async (h) => {
      // A private network is the host's alone: the usual port is free there.
      h.port = st.net === 'private' ? 22 : await pickPort(h.address, h.slot);
      hostKeys.set(h.name, await makeHostDir(h, st, authorized));
    }),
  );
  writeState(st);
  writeFileSync(join(st.dir, 'known_hosts'), knownHosts(st.hosts, hostKeys));
  writeFileSync(join(st.dir, 'ssh_config'), sshConfig(st.hosts, keyPath, join(st.dir, 'known_hosts')));
  writeFileSync(join(st.dir, 'inventory.yml'), inventory(st.hosts, keyPath));
}

function keygen(args: string[]): Promise<unknown> {
  return mustRun('ssh-keygen', ['-q', ...args], 'ssh-keygen');
}

/** Creates the host dir; returns its public host keys ("type base64"). */
async function makeHostDir(h: HostState, st: SandboxState, authorizedKey: string): Promise<string[]> {
  for (const sub of ['upper', 'work', 'merged', 'keys']) mkdirSync(join(h.dir, sub), { recursive: true });
  // ed25519 + ecdsa: what OpenSSH and ssh2 negotiate first; RSA would cost ~0.5 s of CPU per host
  await Promise.all(HOST_KEY_TYPES.map((t) => keygen(['-t', t, '-N', '', '-C', `root@${h.name}`, '-f', join(h.dir, 'keys', `ssh_host_${t}_key`)])));
  writeFileSync(join(h.dir, 'sshd_config'), sshdConfig(h));
  const net = st.net === 'private' ? privateAddresses(h.slot) : undefined;
  writeFileSync(join(h.dir, 'provision.sh'), provisionScript(h, net));
  writeFileSync(join(h.dir, 'boot.sh'), st.kind === 'systemd' ? systemdBootScript(h, st.rootfs, net) : bootScript(h, st.rootfs, net, st.sysctls));
  writeFileSync(join(h.dir, 'authorized_keys'), authorizedKey);
  return readdirSync(join(h.dir, 'keys'))
    .filter((f) => f.endsWith('.pub'))
    .map((f) =>
      readFileSync(join(h.dir, 'keys', f), 'utf8')
        .trim()
        .split(/\s+/)
        .slice(0, 2)
        .join(' '),
    );
}

// ---------------------------------------------------------------- boot / stop one host

/** Starts the host's namespaces + sshd and waits until ssh works there. */
async function bootHost(st: SandboxState, h: HostState): Promise<void> {
  await removeCgroups(h); // a host on this slot before us that was never stopped (the machine's process died)
  const ns = ['--mount', '--uts', '--pid', ...(st.net === 'private' ? ['--net'] : [])];
  const unshareArgs = ['unshare', ...ns, '--fork', '--kill-child', '--propagation', 'private', '--', '/bin/sh', join(h.dir, 'boot.sh')];
  // Tests: setpriv makes the kernel SIGKILL the host if this process dies. CLI: hosts outlive it.
  const [cmd, ...args] = st.detached ? unshareArgs : ['setpriv', '--pdeathsig', 'KILL', '--', ...unshareArgs];
  const logFd = openSync(join(h.dir, 'sshd.log'), 'a');
  try {
    const child = spawn(cmd!, args, { detached: st.detached, stdio: ['ignore', logFd, logFd], env: HOST_ENV });
    child.on('error', () => undefined);
    child.unref();
    if (!child.pid) throw new Error(`${h.name}: could not spawn ${cmd}`);
    h.unshare = procId(child.pid);
  } finally {
    closeSync(logFd);
  }
  setSlotOwner(h.slot, h.unshare, st.dir);
  h.init = await findInit(h);
  h.pidns = h.init ? pidNamespace(h.init.pid) : undefined;
  writeState(st);
  if (st.net === 'private') {
    await wireNetwork(h);
    h.proxy = procId(await startProxy(privateAddresses(h.slot).machine, !st.detached));
    writeState(st);
  }
  await waitReady(st, h);
  const inside = st.kind === 'systemd' ? shadowSysctls(st.sysctls ?? []).inside : '';
  if (inside) {
    const r = await sshExec({ address: h.address, port: h.port, keyPath: join(st.dir, 'id_ed25519'), knownHostsPath: join(st.dir, 'known_hosts') }, 'sh -s', { input: inside });
    if (r.code !== 0) return bootFailure(h, `could not give it its own copies of ${st.sysctls!.join(', ')}: ${r.stderr.trim()}`);
  }
}

/**
 * Joins a private-network host to this machine: a veth pair, one end here (hsv<slot>, .1) and
 * the other moved into the host's namespace as eth0 (.2). Its boot script waits for that address
 * before it starts sshd. The pair goes away with the host's namespace.
 */
async function wireNetwork(h: HostState): Promise<void> {
  if (!h.init) return bootFailure(h, 'no PID 1 in its namespaces to give a network to');
  const a = privateAddresses(h.slot);
  const pid = String(h.init.pid);
  await mustRun('ip', ['link', 'add', a.link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pid], `${h.name}: ip link add`);
  await mustRun('ip', ['addr', 'add', `${a.machine}/30`, 'dev', a.link], `${h.name}: ip addr add`);
  await mustRun('ip', ['link', 'set', a.link, 'up'], `${h.name}: ip link set up`);
  const inside = `ip link set lo up && ip addr add ${a.host}/30 dev eth0 && ip link set eth0 up`;
  await mustRun('nsenter', ['-t', pid, '-n', 'sh', '-c', inside], `${h.name}: network inside`);
}

/** The namespace's PID 1 as seen from here: unshare's only child. */
async function findInit(h: HostState): Promise<ProcId | undefined> {
  for (let i = 0; i < 200 && h.unshare && isAlive(h.unshare); i++) {
    const [pid] = childPids(h.unshare.pid);
    if (pid !== undefined) {
      try {
        return procId(pid);
      } catch {
        return undefined;
      }
    }
    await sleep(5);
  }
  return undefined;
}

function sshBanner(address: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const sock = connect({ host: address, port });
    const finish = (ok: boolean): void => {
      sock.destroy();
      done(ok);
    };
    sock.setTimeout(1000, () => finish(false));
    sock.once('data', (d: Buffer) => finish(d.toString().startsWith('SSH-')));
    sock.once('error', () => finish(false));
  });
}

async function waitReady(st: SandboxState, h: HostState): Promise<void> {
  const deadline = Date.now() + BOOT_TIMEOUT_MS;
  const target = { address: h.address, port: h.port, keyPath: join(st.dir, 'id_ed25519'), knownHostsPath: join(st.dir, 'known_hosts') };
  let last = 'sshd never accepted a connection';
  while (Date.now() < deadline) {
    if (!hostAlive(h)) return bootFailure(h, 'its processes exited during boot');
    if (await sshBanner(h.address, h.port)) {
      const r = await sshExec(target, 'true', { connectTimeout: 5 });
      if (r.code === 0) return;
      last = `ssh root@${h.address} -p ${h.port} true → exit ${r.code}: ${r.stderr.trim()}`;
    }
    await sleep(50);
  }
  return bootFailure(h, `not reachable over ssh within ${BOOT_TIMEOUT_MS} ms (${last})`);
}

async function bootFailure(h: HostState, why: string): Promise<never> {
  const logPath = join(h.dir, 'sshd.log');
  throw new Error(`sandbox host ${h.name} (${h.address}:${h.port}) failed to start: ${why}.\n` + `host dir: ${h.dir}\n--- last lines of ${logPath} ---\n${await tailFile(logPath, 25)}\n---`);
}

/**
 * SIGKILLs the namespace's PID 1: the kernel then kills every process in the
 * namespace, and unshare (its parent, waiting for it) reaps it and exits.
 * unshare is killed directly only if it does not exit by itself.
 */
async function stopHost(h: HostState): Promise<void> {
  const procs = [h.init, h.unshare, h.proxy].filter((p): p is ProcId => !!p);
  if (h.init) killQuietly(h.init, 'SIGKILL');
  if (h.proxy) killQuietly(h.proxy, 'SIGKILL');
  if (h.unshare && (await waitGone([h.unshare], 2000)).length > 0) killQuietly(h.unshare, 'SIGKILL');
  const left = await waitGone(procs, 10_000);
  if (left.length > 0) {
    throw new Error(`sandbox host ${h.name}: processes ${left.map((p) => p.pid).join(', ')} survived SIGKILL for 10 s`);
  }
  await removeCgroups(h);
}

/** A systemd host's cgroups (the boot script's), deepest first; a cgroup empties a moment after its last process dies. */
async function removeCgroups(h: HostState): Promise<void> {
  for (const root of cgroupRoots()) {
    const top = join(root, hostCgroup(h));
    if (!existsSync(top)) continue;
    const dirs: string[] = [];
    const walk = (d: string): void => {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
      dirs.push(d);
    };
    walk(top);
    for (const d of dirs) {
      for (let i = 0; ; i++) {
        try {
          rmdirSync(d);
          break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
          if (i >= 100) throw new Error(`sandbox host ${h.name}: cannot remove its cgroup ${d}: ${(e as Error).message}`);
          await sleep(20);
        }
      }
    }
  }
}

async function killHosts(st: SandboxState): Promise<void> {
  await Promise.all(st.hosts.map(stopHost));
}

function releaseSlots(st: SandboxState): void {
  const mine = new Set([process.pid, st.creator.pid, ...st.hosts.map((h) => h.unshare?.pid)]);
  for (const h of st.hosts) releaseSlot(h.slot, (owner) => mine.has(owner.pid));
}

// ---------------------------------------------------------------- stop / restart

/** Tears down the sandbox in `dir` from any process: kills hosts, frees addresses, deletes dir. Idempotent. */
export async function stopSandbox(dir: string): Promise<void> {
  const abs = resolve(dir);
  const st = readState(abs);
  if (!st) {
    if (!existsSync(abs)) return;
    throw new Error(`${abs} is not a sandbox dir (no ${STATE_FILE}); not deleting it`);
  }
  await killHosts(st);
  releaseSlots(st);
  await removeTree(abs);
}

async function restartHost(st: SandboxState, h: HostState, wipe: boolean): Promise<void> {
  setSlotOwner(h.slot, procId(process.pid), st.dir); // keep the address claimed while the host is down
  await stopHost(h);
  if (wipe) {
    await removeTree(join(h.dir, 'upper'));
    await removeTree(join(h.dir, 'work'));
    mkdirSync(join(h.dir, 'upper'));
    mkdirSync(join(h.dir, 'work'));
  }
  appendFileSync(join(h.dir, 'sshd.log'), `[harness] restart${wipe ? ' (wipe)' : ''}\n`);
  await bootHost(st, h);
}

function sandboxHandle(st: SandboxState): Sandbox {
  const publicHost = (h: HostState): SandboxHost => ({ name: h.name, address: h.address, port: h.port, pid: h.unshare?.pid ?? 0, dir: h.dir });
  const hosts = st.hosts.map(publicHost);
  return {
    dir: st.dir,
    kind: st.kind ?? 'plain',
    net: st.net ?? 'shared',
    sysctls: st.sysctls ?? [],
    hosts,
    keyPath: join(st.dir, 'id_ed25519'),
    knownHostsPath: join(st.dir, 'known_hosts'),
    sshConfigPath: join(st.dir, 'ssh_config'),
    inventoryPath: join(st.dir, 'inventory.yml'),
    stop: () => stopSandbox(st.dir),
    async restart(host, o = {}) {
      const h = st.hosts.find((x) => x.name === host.name);
      if (!h) throw new Error(`restart: ${host.name} is not a host of the sandbox in ${st.dir}`);
      await restartHost(st, h, o.wipe ?? false);
      const fresh = publicHost(h);
      Object.assign(host, fresh);
      const mine = hosts.find((x) => x.name === h.name);
      if (mine && mine !== host) Object.assign(mine, fresh);
    },
  };
}

/** For tests of the harness: pid-namespace ids of the sandbox's hosts ("pid:[…]"). */
export function sandboxPidNamespaces(dir: string): string[] {
  return (readState(resolve(dir))?.hosts ?? []).map((h) => h.pidns).filter((n): n is string => !!n);
}

/** For tests of the harness: are any of the sandbox's host processes still alive? */
export function sandboxRunning(dir: string): boolean {
  return (readState(resolve(dir))?.hosts ?? []).some(hostAlive);
}

// ---------------------------------------------------------------- sweeping

function creatorGone(st: SandboxState): boolean {
  return !isAlive(st.creator);
}

/**
 * Cleans up after test runs that died without their teardown: test sandboxes
 * (not detached) whose creating process is gone, and run dirs whose vitest
 * process is gone. Detached (CLI) sandboxes are left alone. Returns what it removed.
 */
export async function sweepStale(root = SANDBOX_ROOT): Promise<string[]> {
  if (!existsSync(root)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(root)) {
    const dir = join(root, name);
    const st = readState(dir);
    if (st && !st.detached && creatorGone(st)) {
      await stopSandbox(dir);
      removed.push(dir);
    } else if (name.startsWith('run-')) {
      const owner = readJson<ProcId>(join(dir, 'owner.json'));
      if (owner && !isAlive(owner)) {
        removed.push(...(await stopRun(dir)));
        await removeTree(dir);
        removed.push(dir);
      }
    }
  }
  return removed;
}

/**
 * Stops every sandbox a test run started: those inside its run dir and those
 * started with an explicit dir (recorded in sandboxes.list). Returns their dirs.
 */
export async function stopRun(runDir: string): Promise<string[]> {
  const inside = readdirSync(runDir)
    .map((n) => join(runDir, n))
    .filter((d) => !!readState(d));
  const list = join(runDir, 'sandboxes.list');
  const listed = existsSync(list)
    ? readFileSync(list, 'utf8')
        .split('\n')
        .filter((d) => !!d && !!readState(d))
    : [];
  const dirs = [...new Set([...inside, ...listed])];
  for (const dir of dirs) await stopSandbox(dir);
  return dirs;
}
