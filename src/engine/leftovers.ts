/**
 * What a run left running on a host when its controller died or lost the link: found by the
 * HOSTSMITH_RUN=<run-id> every command of the run carries in its environment (sshd does not stop
 * a command when its client goes away). Stopped before anything is decided from the host's state,
 * or one could finish its change after the check — except apt and dpkg: killing them mid-
 * transaction leaves half-installed packages and a dpkg that refuses every later package step. They
 * are waited for (bounded, and said), and a transaction that was interrupted anyway (a host that
 * rebooted, a dpkg killed by someone) is repaired before any rollback touches packages.
 */
import { quote } from '../shell/script.js';

/** How long a leftover apt or dpkg of the run is waited for, in seconds. */
export const PACKAGE_WAIT_S = 600;

/** Exit status of the script when apt or dpkg of the run still runs after the wait. */
export const PACKAGES_BUSY = 76;

/**
 * The host script. Prints a line per thing it did: `stopped <pid> <command>`, `waited <s> <what>`,
 * `repaired <how>`; exits PACKAGES_BUSY when apt or dpkg still runs after the wait.
 */
export function leftoversScript(runId: string, waitS = PACKAGE_WAIT_S): string {
  return [
    `tag=${quote(`HOSTSMITH_RUN=${runId}`)}`,
    'list() { for f in /proc/[0-9]*/environ; do grep -qxzF -- "$tag" "$f" 2>/dev/null && { p=${f#/proc/}; echo "${p%/environ}"; }; done; }',
    // apt and dpkg of the run (their maintainer scripts run while they do): never killed.
    'pkgs() { for p in $(list); do case $(cat /proc/$p/comm 2>/dev/null) in apt|apt-get|aptitude|dpkg|dpkg-deb|dpkg-split|dpkg-trigger) printf "%s " "$p";; esac; done; }',
    'busy=$(pkgs); w=0',
    `if [ -n "$busy" ]; then what=$(for p in $busy; do tr "\\000\\n" "  " < /proc/$p/cmdline 2>/dev/null | head -c 120; echo; done | head -3 | tr "\\n" ";"); while [ -n "$(pkgs)" ] && [ $w -lt ${waitS} ]; do sleep 1; w=$((w+1)); done; fi`,
    `if [ -n "$(pkgs)" ]; then echo "busy $(pkgs)"; exit ${PACKAGES_BUSY}; fi`,
    '[ $w -gt 0 ] && echo "waited $w apt/dpkg of the run to finish its transaction ($what)"',
    'pids=$(list)',
    // Scratch folders of the run's probe batches (probe.ts), once nothing of the run runs any more.
    `scratch() { for d in /tmp/hostsmith-probe.${runId}.* "\${TMPDIR:-/tmp}"/hostsmith-probe.${runId}.*; do [ -d "$d" ] && [ ! -L "$d" ] && rm -rf -- "$d"; done; return 0; }`,
    'stop() {',
    '  [ -n "$pids" ] || return 0',
    '  for p in $pids; do printf "stopped %s %s\\n" "$p" "$(tr "\\000\\n" "  " < /proc/$p/cmdline 2>/dev/null | head -c 200)"; done',
    '  kill -TERM $pids 2>/dev/null',
    '  i=0; while [ $i -lt 50 ]; do [ -z "$(list)" ] && return 0; sleep 0.1; i=$((i+1)); done',
    '  kill -KILL $(list) 2>/dev/null; sleep 0.2',
    '}',
    'stop; scratch',
    // A transaction interrupted anyway: dpkg would refuse every later package step (and the purge a rollback needs).
    'command -v dpkg >/dev/null 2>&1 || exit 0',
    'if [ -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ] || [ -n "$(dpkg --audit 2>/dev/null)" ]; then',
    '  export DEBIAN_FRONTEND=noninteractive',
    '  dpkg --force-confdef --force-confold --configure -a >&2 || { echo "dpkg --configure -a failed" >&2; exit 1; }',
    '  apt-get -q -y -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -f install >&2 || { echo "apt-get -f install failed" >&2; exit 1; }',
    '  echo "repaired an interrupted dpkg transaction (dpkg --configure -a, then apt-get -f install)"',
    'fi',
    'exit 0',
  ].join('\n');
}

/** What the script printed, as lines for the person reading recover's report. */
export function leftoversReport(stdout: string): string[] {
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => (l.startsWith('stopped ') ? l.slice(8) : l.startsWith('waited ') ? `waited ${l.slice(7).replace(/^(\d+) /, '$1 s for ')}` : l));
}
