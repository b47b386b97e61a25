/**
 * The engine's own host scripts, together: what it runs on a host for itself rather than for a
 * step — the facts, the run lock, what a dead controller left running, and the lockout watchdog.
 * Text only, built from src/shell's quoting; the modules that use them read the answers.
 */
import { quote } from '../shell/script.js';

/** How long a leftover apt or dpkg of the run is waited for, in seconds. */
export const PACKAGE_WAIT_S = 600;

/** Exit status of the leftovers script when apt or dpkg of the run still runs after the wait. */
export const PACKAGES_BUSY = 76;

/**
 * Each run that takes a lock writes its owner line to `last` beside it. A run that read `last`
 * earlier (its facts round trip) and finds the same line there when it takes its lock knows that
 * no other hostsmith run locked the host in between: what it read meanwhile is still good.
 */
export const LAST_FILE = 'last';

/** One round trip: a small script prints key=value lines. */
export const FACTS_SCRIPT = [
  '. /etc/os-release 2>/dev/null',
  'echo "os_id=$ID"',
  'echo "os_version_id=$VERSION_ID"',
  'echo "os_name=$PRETTY_NAME"',
  // Every process the facts start is CPU every run costs each host, so they start none where the
  // kernel says it in a file the shell's own `read` takes: the node name (what `uname -n` prints)
  // and, since Linux 6.1, the machine (`uname -m`). sshd sets LOGNAME to the login's name (and so
  // does the local transport): `id -un` only where it is unset.
  'IFS= read -r hs_n 2>/dev/null </proc/sys/kernel/hostname || hs_n=$(uname -n)',
  'IFS= read -r hs_m 2>/dev/null </proc/sys/kernel/arch || hs_m=$(uname -m)',
  'echo "arch=$hs_m"',
  'echo "hostname=$hs_n"',
  'echo "user=${LOGNAME:-$(id -un)}"',
  'echo "home=$HOME"',
  'for p in apt-get dnf yum apk; do if command -v $p >/dev/null 2>&1; then echo "pkg=$p"; break; fi; done',
  'if [ -d /run/systemd/system ]; then echo init=systemd; else echo init=sysvinit; fi',
].join('\n');

/**
 * The script's answer, fields separated by NUL (paths and owner text cannot hold one):
 * LOCKED path lastBefore | HELD path ownerName ownerText | UNSAFE path ownerName mode why | FOREIGN path ownerName kind.
 */
export function acquireScript(baseDir: string, rootDir: string, owner: string): string {
  return [
    'umask 022',
    'me=$(id -u) || exit 3',
    `RD=${quote(rootDir)}`,
    'out() { printf "%s\\0" "$@"; }',
    // Root: the folder is made 0755 so that runs without root can read who holds it.
    // Two first runs may race to make the folder: the loser's mkdir fails, but the folder is there.
    `if [ "$me" = 0 ]; then D=$RD; [ -d "$D" ] || mkdir -m 0755 -- "$D" || [ -d "$D" ] || exit 3`,
    `else D=${quote(baseDir)}; [ -d "$D" ] || mkdir -p -- "$D" || [ -d "$D" ] || exit 3; chmod 0700 -- "$D" 2>/dev/null; fi`,
    'D=$(readlink -f -- "$D") && [ -n "$D" ] || exit 3',
    // Every folder from the lock's parent up to / : owned by root or by us; writable by others only if sticky.
    'p=$D',
    'while :; do',
    '  s=$(stat -c "%u %a" -- "$p") || exit 3',
    '  u=${s% *}; m=${s#* }',
    '  if [ "$u" != 0 ] && [ "$u" != "$me" ]; then out UNSAFE "$p" "$(stat -c %U -- "$p")" "$m" owner; exit 0; fi',
    '  if [ $((0$m & 022)) -ne 0 ] && [ $((0$m & 01000)) -eq 0 ]; then out UNSAFE "$p" "$(stat -c %U -- "$p")" "$m" mode; exit 0; fi',
    '  [ "$p" = / ] && break',
    '  p=$(dirname -- "$p")',
    'done',
    'L=${D%/}/lock',
    'if err=$(mkdir -- "$L" 2>&1); then',
    `  printf '%s\\n' ${quote(owner)} > "$L/owner" || { rm -f -- "$L/owner"; rmdir -- "$L"; exit 3; }`,
    // Who locked here last before us, then us (see LAST_FILE); not knowing is not an error.
    `  before=$(head -c 2000 -- "\${D%/}/${LAST_FILE}" 2>/dev/null | tr -d "\\000"); printf '%s\\n' ${quote(owner)} > "\${D%/}/${LAST_FILE}" 2>/dev/null || before=unknown`,
    // Without root: a root run's lock holds us off too. Ours was taken first, so that of two runs
    // starting at once at least one sees the other.
    '  if [ "$me" != 0 ] && [ -d "$RD/lock" ] && [ ! -L "$RD/lock" ] && [ "$(stat -c %u -- "$RD")" = 0 ] && [ "$(stat -c %u -- "$RD/lock")" = 0 ]; then',
    '    rm -f -- "$L/owner"; rmdir -- "$L"',
    '    out HELD "$RD/lock" root; head -c 2000 -- "$RD/lock/owner" 2>/dev/null | tr -d "\\000"; exit 0',
    '  fi',
    '  out LOCKED "$L" "$before"; exit 0',
    'fi',
    'if [ ! -e "$L" ] && [ ! -L "$L" ]; then printf "%s\\n" "$err" >&2; exit 3; fi',
    'if [ -L "$L" ] || [ ! -d "$L" ]; then out FOREIGN "$L" "$(stat -c %U -- "$L")" "not a folder"; exit 0; fi',
    'u=$(stat -c %u -- "$L") || exit 3',
    'if [ "$u" != 0 ] && [ "$u" != "$me" ]; then out FOREIGN "$L" "$(stat -c %U -- "$L")" owner; exit 0; fi',
    'out HELD "$L" "$(stat -c %U -- "$L")"; head -c 2000 -- "$L/owner" 2>/dev/null | tr -d "\\000"',
  ].join('\n');
}

export function releaseScript(path: string, runId: string): string {
  return [
    `L=${quote(path)}`,
    `id=${quote(runId)}`,
    'if [ ! -e "$L" ] && [ ! -L "$L" ]; then echo GONE; exit 0; fi',
    'line=',
    '[ -L "$L" ] || [ ! -d "$L" ] || { IFS= read -r line < "$L/owner"; } 2>/dev/null',
    'case "$line" in',
    '  "run=$id "*) rm -f -- "$L/owner" && rmdir -- "$L" && echo RELEASED || exit 3 ;;',
    '  *) echo NOT-OURS; printf "%s" "$line" | head -c 500 ;;',
    'esac',
  ].join('\n');
}

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

/** A step or handler of the watchdog's rollback. */
export interface Part {
  name: string;
  /** null: no host form (irreversible, or no rollback): the watchdog records it as failed. */
  script: string | null;
}

/** The files the watchdog is made of: watchdog.sh (sleep, claim, roll back), rollback.sh, one script per step and handler. */
export function watchdogFiles(dir: string, seconds: number, steps: Part[], handlers: Part[]): Record<string, string> {
  const d = quote(dir);
  const files: Record<string, string> = {};
  const lines = [`d=${d}`, 'bad=0', ': > "$d/steps"'];
  steps.forEach((s, i) => {
    if (s.script === null) {
      lines.push(`printf 'failed %s\\n' ${i} >> "$d/steps"; echo ${quote(`${s.name}: no rollback`)} >> "$d/log"; bad=1`);
      return;
    }
    files[`step-${i}.sh`] = `${s.script}\n`;
    lines.push(`echo ${quote(`rolling back ${s.name}`)} >> "$d/log"`);
    lines.push(`if sh "$d/step-${i}.sh" >> "$d/log" 2>&1 </dev/null; then printf 'ok %s\\n' ${i} >> "$d/steps"; else printf 'failed %s\\n' ${i} >> "$d/steps"; bad=1; fi`);
  });
  handlers.forEach((handler, i) => {
    if (handler.script === null) {
      lines.push(`echo ${quote(`handler ${handler.name}: cannot run without the controller; run it by hand`)} >> "$d/log"; bad=1`);
      return;
    }
    files[`handler-${i}.sh`] = `${handler.script}\n`;
    lines.push(`echo ${quote(`running handler ${handler.name} again`)} >> "$d/log"`);
    lines.push(`sh "$d/handler-${i}.sh" >> "$d/log" 2>&1 </dev/null || { echo ${quote(`handler ${handler.name} failed`)} >> "$d/log"; bad=1; }`);
  });
  lines.push('if [ $bad -eq 0 ]; then echo rolled-back; else echo rollback-incomplete; fi > "$d/result.new" && mv -f "$d/result.new" "$d/result"');
  files['rollback.sh'] = `${lines.join('\n')}\n`;
  files['watchdog.sh'] = [
    `d=${d}`,
    'echo $$ > "$d/pid.new" && mv -f "$d/pid.new" "$d/pid"',
    `sleep ${seconds}`,
    // Confirmed or taken over meanwhile: the claim is someone else's, and so is the outcome.
    'mkdir "$d/claim" 2>/dev/null || exit 0',
    'echo watchdog > "$d/claim/by"',
    'date -u +%FT%TZ > "$d/fired"',
    'exec sh "$d/rollback.sh"',
    '',
  ].join('\n');
  return files;
}
