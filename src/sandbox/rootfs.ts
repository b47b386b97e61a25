/**
 * The Debian root filesystem every sandbox host is an overlay of.
 * Built once with debootstrap, cached, and never modified afterwards.
 */
import { copyFileSync, createWriteStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { log, mountsUnder, removeTree, run, tail, withFileLock } from './util.js';

/**
 * The two kinds of host: `plain` runs sshd under tini (no init system, sysvinit scripts for
 * services), `systemd` boots the rootfs's own systemd with systemd-nspawn. Each has its own rootfs.
 */
export type HostKind = 'plain' | 'systemd';
export const HOST_KINDS: readonly HostKind[] = ['plain', 'systemd'];

/** Bump when a package list or the post-install steps change: a new dir is built. */
export const ROOTFS_VERSION = 2;
export const SUITE = 'bookworm';
// nftables: the firewall step is tested on hosts with a network namespace of their own.
const COMMON_PACKAGES = ['openssh-server', 'sudo', 'cron', 'procps', 'ca-certificates', 'curl', 'less', 'iproute2', 'nftables'];
export const ROOTFS_PACKAGES: Record<HostKind, string[]> = {
  plain: [...COMMON_PACKAGES, 'tini'],
  systemd: [...COMMON_PACKAGES, 'systemd-sysv', 'dbus'],
};
const MARKER = '.hostsmith-rootfs.json';

export function cacheDir(): string {
  return process.env.HOSTSMITH_SANDBOX_CACHE ?? '/var/cache/hostsmith-sandbox';
}

export function rootfsPath(kind: HostKind = 'plain'): string {
  return join(cacheDir(), `rootfs-${SUITE}${kind === 'plain' ? '' : `-${kind}`}-v${ROOTFS_VERSION}`);
}

export function mirror(): string {
  return process.env.HOSTSMITH_SANDBOX_MIRROR ?? 'http://deb.debian.org/debian';
}

/** A rootfs is usable only once its marker (written last, before the rename) exists. */
export function isRootfsReady(dir: string = rootfsPath()): boolean {
  return existsSync(join(dir, MARKER));
}

/** Returns the cached rootfs path of a kind, building it first if needed (~40-90 s). */
export async function ensureRootfs(kind: HostKind = 'plain'): Promise<string> {
  const dir = rootfsPath(kind);
  if (isRootfsReady(dir)) return dir;
  mkdirSync(cacheDir(), { recursive: true });
  return withFileLock(
    // one lock per rootfs: the two kinds build side by side
    `${dir}.lock`,
    async () => {
      if (isRootfsReady(dir)) return dir; // another process built it while we waited
      await buildRootfs(dir, kind);
      return dir;
    },
    () => log(`another process is building ${dir}; waiting for it`),
  );
}

async function buildRootfs(dir: string, kind: HostKind): Promise<void> {
  const started = Date.now();
  await removeLeftovers(dir);
  const tmp = `${dir}.tmp-${process.pid}`;
  const logPath = join(cacheDir(), `build-${dir.split('/').pop()}.log`);
  log(`building Debian ${SUITE} rootfs in ${dir} (first time only, ~1 min; log: ${logPath})`);
  const logStream = createWriteStream(logPath, { flags: 'w' });
  try {
    await debootstrap(tmp, kind, logStream);
    await postInstall(tmp, kind, logStream);
    writeFileSync(join(tmp, MARKER), JSON.stringify({ version: ROOTFS_VERSION, kind, suite: SUITE, mirror: mirror(), packages: ROOTFS_PACKAGES[kind], builtAt: new Date().toISOString() }, null, 2));
    renameSync(tmp, dir);
  } catch (e) {
    await removeTree(tmp).catch(() => undefined);
    throw e;
  } finally {
    logStream.end();
  }
  log(`rootfs ready in ${((Date.now() - started) / 1000).toFixed(0)} s: ${dir}`);
}

/** Half-built dirs from builders that died (we hold the lock, so none is in progress). */
async function removeLeftovers(dir: string): Promise<void> {
  const base = `${dir.split('/').pop()}.tmp-`;
  for (const name of readdirSync(cacheDir())) {
    if (!name.startsWith(base)) continue;
    const path = join(cacheDir(), name);
    log(`removing half-built rootfs ${path}`);
    await removeTree(path);
  }
  if (existsSync(dir) && !isRootfsReady(dir)) {
    if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  }
}

type LogSink = NodeJS.WritableStream;

/**
 * Runs `cmd` in private mount + pid namespaces: mounts debootstrap makes die
 * with it, and if this process dies, the kernel kills the whole build.
 */
async function step(what: string, cmd: string[], sink: LogSink, onLine?: (l: string) => void): Promise<void> {
  sink.write(`\n### ${what}: ${cmd.join(' ')}\n`);
  const ns = ['--mount', '--pid', '--fork', '--kill-child', '--propagation', 'private'];
  const r = await run('setpriv', ['--pdeathsig', 'KILL', '--', 'unshare', ...ns, '--', ...cmd], {
    env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive' },
    onLine: (l) => {
      sink.write(`${l}\n`);
      onLine?.(l);
    },
  });
  if (r.code !== 0) {
    throw new Error(
      `rootfs build step "${what}" failed (exit ${r.code}).\n${tail(r.stdout + r.stderr, 25)}\n` + `Check that ${mirror()} is reachable (or set HOSTSMITH_SANDBOX_MIRROR), then run the tests again.`,
    );
  }
}

/** debootstrap's "I: Retrieving …" lines, folded into a few coarse phases. */
function coarsePhase(line: string): string | undefined {
  const word = /^I: (\w+)/.exec(line)?.[1];
  if (!word) return undefined;
  if (['Retrieving', 'Validating', 'Checking', 'Resolving', 'Valid', 'Chosen'].includes(word)) return 'downloading packages';
  if (word === 'Extracting') return 'extracting';
  if (['Installing', 'Unpacking', 'Configuring'].includes(word)) return 'installing packages';
  return undefined;
}

async function debootstrap(tmp: string, kind: HostKind, sink: LogSink): Promise<void> {
  const args = ['debootstrap', '--variant=minbase', `--include=${ROOTFS_PACKAGES[kind].join(',')}`, SUITE, tmp, mirror()];
  let phase = '';
  let lastPrint = 0;
  await step('debootstrap', args, sink, (line) => {
    const p = coarsePhase(line);
    if (!p) return;
    if (p !== phase || Date.now() - lastPrint > 10_000) {
      log(`  debootstrap: ${p}${p === phase ? ' …' : ''} (${line.slice(3, 60)})`);
      phase = p;
      lastPrint = Date.now();
    }
  });
  log('  debootstrap: done');
}

/** A tiny script run inside the new rootfs (chrooted, with /proc mounted). */
const POST_INSTALL = `
set -eu
mount -t proc proc "$ROOT/proc"
chroot "$ROOT" apt-get update -q
chroot "$ROOT" apt-get clean
rm -f "$ROOT"/etc/ssh/ssh_host_*
umount "$ROOT/proc"
`;

/**
 * Make package installs behave like on a booted sysvinit Debian server, where
 * installing nginx starts it. invoke-rc.d (called by postinst scripts) blocks
 * every start when there is no /sbin/init and no policy-rc.d, and without
 * /sbin/runlevel it cannot tell that the rc2.d start link applies.
 */
const RUNLEVEL_STUB = '#!/bin/sh\n# hostsmith sandbox: no real init; report multi-user runlevel 2\necho "N 2"\n';
const POLICY_RC_D = '#!/bin/sh\n# hostsmith sandbox: no init system; let invoke-rc.d start/stop services as a booted host would\nexit 0\n';

/**
 * A booted systemd in a container: units that need hardware or a kernel of their own would only
 * fail (and make `systemctl is-system-running` say "degraded"); the console getty would compete
 * with nothing for a terminal nobody reads.
 */
const SYSTEMD_MASKED = [
  'systemd-timesyncd.service',
  'console-getty.service',
  'getty@tty1.service',
  'systemd-resolved.service',
  'apt-daily.timer',
  'apt-daily-upgrade.timer',
  'e2scrub_all.timer',
  'fstrim.timer',
];

const JOURNALD_VOLATILE = '# hostsmith sandbox: keep the journal in /run, off the overlay\n[Journal]\nStorage=volatile\n';

async function postInstall(tmp: string, kind: HostKind, sink: LogSink): Promise<void> {
  rmSync(join(tmp, 'etc/resolv.conf'), { force: true }); // may be a symlink: never write through it
  copyFileSync('/etc/resolv.conf', join(tmp, 'etc/resolv.conf'));
  log('  apt-get update inside the rootfs');
  await step('post-install', ['env', `ROOT=${tmp}`, 'sh', '-c', POST_INSTALL], sink);
  if (kind === 'systemd') {
    for (const unit of SYSTEMD_MASKED) {
      rmSync(join(tmp, 'etc/systemd/system', unit), { force: true });
      symlinkSync('/dev/null', join(tmp, 'etc/systemd/system', unit));
    }
    // the machine-id is made at first boot of each host, so two hosts never share one
    writeFileSync(join(tmp, 'etc/machine-id'), '');
    // the journal in memory: a journal on disk changes by itself, and the residue checks compare the disk
    mkdirSync(join(tmp, 'etc/systemd/journald.conf.d'), { recursive: true });
    writeFileSync(join(tmp, 'etc/systemd/journald.conf.d/hostsmith-sandbox.conf'), JOURNALD_VOLATILE);
    return;
  }
  writeFileSync(join(tmp, 'usr/sbin/runlevel'), RUNLEVEL_STUB, { mode: 0o755 });
  writeFileSync(join(tmp, 'usr/sbin/policy-rc.d'), POLICY_RC_D, { mode: 0o755 });
}
