/**
 * Which earlier steps a step's check depends on: one that reads what an earlier changing step
 * writes (a line in a file a package installs, a cron job for a user a user step creates) cannot
 * be known before that step has run, so a plan marks it dynamic instead of guessing.
 *
 * Resources are `kind:name` strings: `path:/etc/motd`, `user:alice`, `group:web`, `cron:alice`,
 * `service:nginx`, `pkg:nginx`; a name of `*` is every name of that kind, and `*` alone is anything.
 */
import type { HostRun } from './host-run.js';

function split(r: string): [string, string] {
  const i = r.indexOf(':');
  return i < 0 ? [r, '*'] : [r.slice(0, i), r.slice(i + 1)];
}

/** A path and anything below it are the same resource: writing /etc/nginx changes /etc/nginx/x. */
function pathsMeet(a: string, b: string): boolean {
  const under = (x: string, y: string) => x === y || x.startsWith(y.endsWith('/') ? y : `${y}/`);
  return under(a, b) || under(b, a);
}

export function overlaps(a: string, b: string): boolean {
  if (a === '*' || b === '*') return true;
  const [ka, na] = split(a);
  const [kb, nb] = split(b);
  if (ka !== kb) return false;
  if (na === '*' || nb === '*') return true;
  return ka === 'path' ? pathsMeet(na, nb) : na === nb;
}

/** Names of the earlier changing steps whose writes meet any of `reads`, in order. */
export function dependsOn(h: Pick<HostRun, 'changing'>, reads: string[]): string[] {
  return h.changing.filter((c) => c.writes.some((w) => reads.some((r) => overlaps(w, r)))).map((c) => c.name);
}
