/**
 * What the overlay cannot show: a host's live state, which a run changes as surely as its files.
 * A firewall undone on disk but still loaded, a sysctl whose file is gone but whose value stays, a
 * service left running after its unit file was deleted: each is residue that no byte of the upper
 * dir records. Read over plain ssh (never through hostsmith), as what the host reports:
 *
 * - units (systemd hosts): every unit that is not inactive, with its active and sub state; the
 *   units of ssh logins (session scopes, user@, user slices) come and go with the reading itself,
 *   and systemd notices the harness's own mounts over /proc/sys (proc-sys-*.mount) when it will,
 *   as it does its own credential mounts for services it ran at boot (run-credentials-*.mount).
 *   Targets are left out too: one a package's unit pulled in (network-online.target) stays
 *   active once reached, and holds nothing. So are the services systemd starts on demand and
 *   stops once idle (hostnamed, timedated, localed: hostnamectl and timedatectl wake them).
 * - processes (hosts without systemd): the names of running programs, less the reading's own
 *   (sshd, sh, ps, sort, sed) and `sleep`, which any daemon's loop may be in for a moment.
 * - the running host name (its UTS namespace is its own).
 * - the kernel settings the host was given copies of (sandbox `sysctls`), which it may change.
 * - firewall and net.* sysctls (hosts on a network of their own: on this machine's network they
 *   are this machine's, and the host cannot change them): the nftables ruleset table by table,
 *   and every net.* key but nf_conntrack_count, which counts live connections, this reading's too.
 *
 * On a systemd host the reading first waits for the boot to finish, so that a unit still starting
 * in the snapshot is not taken for one the run left started.
 */
import { sshExec } from './ssh.js';

export type LiveState = Map<string, string>;

interface Reach {
  keyPath: string;
  knownHostsPath: string;
  net: 'shared' | 'private';
  /** Kernel settings the hosts were given copies of (names safe in a shell word): theirs to change, so compared too. */
  sysctls?: readonly string[];
}

const SCRIPT = (net: 'shared' | 'private', sysctls: readonly string[]) => `
printf 'hostname\\t%s\\n' "$(hostname)"
if [ -d /run/systemd/system ]; then
  timeout 60 systemctl is-system-running --wait >/dev/null 2>&1
  systemctl list-units --no-legend --plain --all | awk '$3 != "inactive" { print "unit " $1 "\\t" $3 " " $4 }'
else
  ps -eo comm= | sort -u | sed 's/^/process /; s/$/\\t/'
fi
${
  net === 'private'
    ? `if command -v nft >/dev/null; then nft list ruleset | awk '/^table / { name = $2 " " $3 } { gsub(/\\t/, " "); print "firewall " name "\\t" $0 }'; fi
sysctl -a 2>/dev/null | awk -F ' = ' '/^net\\./ { print "sysctl " $1 "\\t" $2 }'`
    : ''
}
${sysctls.map((k) => `printf 'sysctl %s\\t%s\\n' ${k} "$(sysctl -n ${k} 2>&1)"`).join('\n')}
`;

/** Readings that change by themselves, or with the reading: never residue. */
const CHURN = [
  /^unit (session-[^\t]*\.scope|user@[^\t]*|user-runtime-dir@[^\t]*|user-[0-9]+\.slice|proc-sys-[^\t]*\.mount|run-credentials-[^\t]*\.mount)$/,
  /^unit [^\t]*\.target$/,
  /^unit systemd-(hostnamed|timedated|localed)\.service$/,
  /^process (sshd|sh|ps|sort|sed|sleep)$/,
  /^sysctl net\.netfilter\.nf_conntrack_count$/,
];

export async function liveState(sb: Reach, host: { address: string; port: number; name: string }): Promise<LiveState> {
  const r = await sshExec({ address: host.address, port: host.port, keyPath: sb.keyPath, knownHostsPath: sb.knownHostsPath }, 'sh -s', {
    input: SCRIPT(sb.net, sb.sysctls ?? []),
  });
  if (r.code !== 0) throw new Error(`reading the live state of ${host.name} (${host.address}:${host.port}) failed, exit ${r.code}: ${r.stderr.trim()}`);
  const state: LiveState = new Map();
  for (const line of r.stdout.split('\n')) {
    const tab = line.indexOf('\t');
    if (tab < 0) continue;
    const key = line.slice(0, tab);
    if (CHURN.some((c) => c.test(key))) continue;
    // A firewall table is many lines: it is one reading, compared whole.
    state.set(key, state.has(key) && key.startsWith('firewall ') ? `${state.get(key)}\n${line.slice(tab + 1)}` : line.slice(tab + 1));
  }
  return state;
}

/** What differs, one line each: a reading new since `before`, gone, or changed. */
export function liveResidue(before: LiveState, now: LiveState): string[] {
  const lines: string[] = [];
  const shown = (key: string, v: string) => (key.startsWith('firewall ') || v === '' ? '' : ` (${v})`);
  for (const [key, v] of now) {
    const was = before.get(key);
    if (was === undefined) lines.push(`live: ${key}${shown(key, v)} is new`);
    else if (was !== v) lines.push(key.startsWith('firewall ') ? `live: ${key} changed` : `live: ${key} was ${was}, now ${v}`);
  }
  for (const [key, v] of before) if (!now.has(key)) lines.push(`live: ${key}${shown(key, v)} is gone`);
  return lines.sort();
}
