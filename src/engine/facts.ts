import { isDeepStrictEqual } from 'node:util';
import type { Transport } from '../transport/transport.js';
import { ConnectError } from '../errors.js';
import { LAST_FILE } from './lock.js';

// What a host is, as steps see it: the type lives with the steps, the gathering here.
export type { Facts } from '../steps/facts.js';
import type { Facts } from '../steps/facts.js';

export { FACTS_SCRIPT } from './host-scripts.js';
import { FACTS_SCRIPT } from './host-scripts.js';

export function parseFacts(out: string): Facts {
  const kv: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  const pkg = kv.pkg === 'apt-get' ? 'apt' : (kv.pkg ?? 'unknown');
  return {
    os: { id: kv.os_id ?? 'unknown', version_id: kv.os_version_id ?? '', name: kv.os_name ?? '' },
    arch: kv.arch ?? 'unknown',
    hostname: kv.hostname ?? '',
    user: kv.user ?? '',
    home: kv.home ?? '',
    pkg,
    init: kv.init ?? 'sysvinit',
  };
}

/** What the facts round trip found: the facts, whether a run lock is held, who locked last beside each lock path. */
export interface FactsAnswer {
  facts: Facts;
  locked: boolean;
  lasts: string[];
}

/**
 * The facts script, and with `lockPaths` (shell words) whether any of them exists (a run lock
 * held there): an apply that finds none takes its own lock only before its first change. `lasts`:
 * who took a lock beside each last (lock.ts LAST_FILE), to tell then whether another run locked
 * the host in between. No `lockPaths`: the facts alone (a plan).
 */
export function factsScript(lockPaths: string[] = []): string {
  // The lock's folder cut off by the shell (a lock path always ends in /lock), not by dirname.
  // The last owner line is read by the shell itself (its first line): a `head` and a `tr` here
  // were four processes on every run of every host.
  const check = lockPaths.map(
    (p, i) => `if [ -e ${p} ] || [ -L ${p} ]; then echo lock_held=1; fi; hs_l=${p}; hs_x=; IFS= read -r hs_x 2>/dev/null <"\${hs_l%/*}/${LAST_FILE}"; printf 'lock_last_${i}=%s\\n' "$hs_x"`,
  );
  return [FACTS_SCRIPT, ...check].join('\n');
}

/** factsScript's answer, for `lockPaths` lock paths. */
export function readFactsAnswer(out: string, lockPaths: number): FactsAnswer {
  const lasts = Array.from({ length: lockPaths }, (_, i) => new RegExp(`^lock_last_${i}=(.*)$`, 'm').exec(out)?.[1] ?? '');
  return { facts: parseFacts(out), locked: /^lock_held=1$/m.test(out), lasts };
}

/** Runs a facts script in an exec of its own: its stdout. A host that prints nothing to it cannot be worked on. */
export async function factsExec(t: Transport, script: string): Promise<string> {
  const r = await t.exec(script);
  if (r.code !== 0 && !r.stdout) {
    throw new ConnectError(t.name, `could not gather facts (exit ${r.code}): ${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** Facts and locks in one round trip (factsScript). */
export async function factsAndLocks(t: Transport, lockPaths: string[]): Promise<FactsAnswer> {
  return readFactsAnswer(await factsExec(t, factsScript(lockPaths)), lockPaths.length);
}

/**
 * Facts still to read, in the run's first exec on the host (run.ts firstContact): the script, and
 * what to do with its answer — true when the facts are those the host was planned from and no
 * lock is held there; false when the host must be planned again from its real facts
 * (FleetHosts.refresh).
 */
export interface FirstContact {
  script: string;
  settle(out: string): boolean;
}

/** Do two readings of a host's facts say the same? */
export function sameFacts(a: Facts, b: Facts): boolean {
  return isDeepStrictEqual(a, b);
}

export async function gatherFacts(t: Transport): Promise<Facts> {
  return parseFacts(await factsExec(t, FACTS_SCRIPT));
}

/**
 * Thrown by runHost before it plans anything: the facts kept from the last run, which the host was
 * about to be planned from, are not the host's now (or a run lock is held there). The fleet reads
 * them afresh (FleetHosts.refresh) and runs the host again.
 */
export class FactsMoved extends Error {
  constructor(host: string) {
    super(`${host}: its facts are not those the last run kept; planning it again from what it says now`);
  }
}
