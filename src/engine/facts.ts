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

/**
 * Facts, and in the same round trip whether any of `lockPaths` (shell words) exists (a run lock
 * held there): an apply that finds none takes its own lock only before its first change. `lasts`:
 * who took a lock beside each last (lock.ts LAST_FILE), to tell then whether another run locked
 * the host in between.
 */
export async function factsAndLocks(t: Transport, lockPaths: string[]): Promise<{ facts: Facts; locked: boolean; lasts: string[] }> {
  // The lock's folder cut off by the shell (a lock path always ends in /lock), not by dirname.
  // The last owner line is read by the shell itself (its first line): a `head` and a `tr` here
  // were four processes on every run of every host.
  const check = lockPaths.map(
    (p, i) => `if [ -e ${p} ] || [ -L ${p} ]; then echo lock_held=1; fi; hs_l=${p}; hs_x=; IFS= read -r hs_x 2>/dev/null <"\${hs_l%/*}/${LAST_FILE}"; printf 'lock_last_${i}=%s\\n' "$hs_x"`,
  );
  const r = await t.exec([FACTS_SCRIPT, ...check].join('\n'));
  if (r.code !== 0 && !r.stdout) {
    throw new ConnectError(t.name, `could not gather facts (exit ${r.code}): ${r.stderr.trim()}`);
  }
  const lasts = lockPaths.map((_, i) => new RegExp(`^lock_last_${i}=(.*)$`, 'm').exec(r.stdout)?.[1] ?? '');
  return { facts: parseFacts(r.stdout), locked: /^lock_held=1$/m.test(r.stdout), lasts };
}

export async function gatherFacts(t: Transport): Promise<Facts> {
  const r = await t.exec(FACTS_SCRIPT);
  if (r.code !== 0 && !r.stdout) {
    throw new ConnectError(t.name, `could not gather facts (exit ${r.code}): ${r.stderr.trim()}`);
  }
  return parseFacts(r.stdout);
}
