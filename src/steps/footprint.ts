/**
 * What a step touches, in a small vocabulary the engine can intersect without knowing any step
 * type: every question of overlap (which later steps a change makes known-after-apply, which
 * batched reads it drops, which older steps of a run a newer one moved) is answered here.
 *
 * An item is `kind:name`:
 * - `path:/etc/nginx` — a path and everything below it (writing a folder can change what is in
 *   it; a file read also depends on the folders above it existing);
 * - `user:alice`, `group:web` — one account entry (the account files hold many);
 * - `cron:alice` — alice's crontab;
 * - `service:nginx` — a service's running and enabled state;
 * - `pkg:nginx` — one package in dpkg's database; `apt:lists` — apt's package lists;
 * - a name of `*` is every name of that kind, and `*` alone is anything at all.
 */

export interface Footprint {
  /** What the step's check reads: a change to any of it can change what the step would do. */
  reads: string[];
  /** What its apply may write. Wide rather than short: a package's maintainer scripts write anywhere. */
  writes: string[];
}

/** Anything at all: a command's writes, a package's. */
export const ANYTHING = '*';

/** The account files useradd, usermod, groupadd and friends rewrite. */
export const ACCOUNT_FILES = ['passwd', 'shadow', 'group', 'gshadow', 'subuid', 'subgid'].map((f) => `path:/etc/${f}`);

function split(item: string): [string, string] {
  const i = item.indexOf(':');
  return i < 0 ? [item, '*'] : [item.slice(0, i), item.slice(i + 1)];
}

/** A path and anything below it are the same resource: writing /etc/nginx changes /etc/nginx/x. */
function pathsMeet(a: string, b: string): boolean {
  const under = (x: string, y: string) => x === y || x.startsWith(y.endsWith('/') ? y : `${y}/`);
  return under(a, b) || under(b, a);
}

/** Do two footprint items name a common thing? */
export function overlaps(a: string, b: string): boolean {
  if (a === ANYTHING || b === ANYTHING) return true;
  const [ka, na] = split(a);
  const [kb, nb] = split(b);
  if (ka !== kb) return false;
  if (na === '*' || nb === '*') return true;
  return ka === 'path' ? pathsMeet(na, nb) : na === nb;
}

/** Does anything in `writes` meet anything in `reads`? */
export function meets(writes: readonly string[], reads: readonly string[]): boolean {
  return writes.some((w) => reads.some((r) => overlaps(w, r)));
}

/**
 * An item whose name is not known yet (rendered from what an earlier step will print) stands for
 * every name of its kind.
 */
export function widen(items: readonly string[], unknownMark: string): string[] {
  return items.map((x) => (x.includes(unknownMark) ? `${split(x)[0]}:*` : x));
}
