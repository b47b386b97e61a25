/**
 * What a run left running on a host when its controller died or lost the link: found by the
 * HOSTSMITH_RUN=<run-id> every command of the run carries in its environment (sshd does not stop
 * a command when its client goes away). Stopped before anything is decided from the host's state,
 * or one could finish its change after the check — except apt and dpkg: killing them mid-
 * transaction leaves half-installed packages and a dpkg that refuses every later package step. They
 * are waited for (bounded, and said), and a transaction that was interrupted anyway (a host that
 * rebooted, a dpkg killed by someone) is repaired before any rollback touches packages.
 */
export { PACKAGE_WAIT_S, PACKAGES_BUSY, leftoversScript } from './host-scripts.js';

/** What the script printed, as lines for the person reading recover's report. */
export function leftoversReport(stdout: string): string[] {
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => (l.startsWith('stopped ') ? l.slice(8) : l.startsWith('waited ') ? `waited ${l.slice(7).replace(/^(\d+) /, '$1 s for ')}` : l));
}
