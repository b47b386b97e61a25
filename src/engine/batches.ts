/**
 * Fleet options (SPEC §12): how hosts are cut into batches, how many may fail in a batch before
 * no later batch starts, and which hosts roll back when one fails. Pure: parsing and arithmetic.
 *
 * The rules, as the README states them:
 * - `--batch n`: n hosts per batch (n ≥ 1; more than there are hosts is one batch).
 *   `--batch n%` (1–100): ceil(n% of the hosts), at least 1 — 30% of 4 hosts is 2 (1.2 rounded up).
 * - `--max-fail n` (n ≥ 0): a batch may have n failed hosts; one more and no later batch starts.
 *   `--max-fail n%` (0–100): floor(n% of that batch's own size) — 50% of a batch of 3 is 1. With a
 *   whole number of failed hosts, "more than floor(n% of size)" is "more than n% of the batch",
 *   as Ansible's max_fail_percentage counts it.
 * - Default: 0 with --batch; --max-fail without --batch is refused (it only ever stops later batches).
 */
import { InputError } from '../errors.js';

/** A number of hosts, or a percentage of them, as given on the command line. */
export interface Amount {
  n: number;
  percent: boolean;
  /** As written, for messages and the journal. */
  given: string;
}

export type RollbackScope = 'host' | 'batch' | 'fleet';
export const ROLLBACK_SCOPES: readonly RollbackScope[] = ['host', 'batch', 'fleet'];

const AMOUNT = /^(\d+)(%?)$/;

/**
 * `--batch` takes 1 or more (or 1%–100%); `--max-fail` takes 0 or more (or 0%–100%).
 * Anything else is an InputError (exit 2) that says what would be accepted.
 */
export function parseAmount(option: '--batch' | '--max-fail', raw: string): Amount {
  const m = AMOUNT.exec(raw.trim());
  const min = option === '--batch' ? 1 : 0;
  const what =
    option === '--batch'
      ? 'a number of hosts per batch (1 or more, e.g. 2) or a percentage of the hosts (1% to 100%, e.g. 25%)'
      : 'a number of failed hosts a batch may have (0 or more, e.g. 1) or a percentage of the batch (0% to 100%, e.g. 20%)';
  const bad = () => new InputError(`${option}: "${raw}" is not ${what}; nothing was contacted or changed`);
  if (!m) throw bad();
  const n = Number(m[1]);
  const percent = m[2] === '%';
  if (!Number.isSafeInteger(n) || n < min || (percent && n > 100)) throw bad();
  return { n, percent, given: `${n}${percent ? '%' : ''}` };
}

export function parseScope(raw: string): RollbackScope {
  const s = raw.trim() as RollbackScope;
  if (!ROLLBACK_SCOPES.includes(s)) {
    throw new InputError(
      `--rollback-scope: "${raw}" is not one of ${ROLLBACK_SCOPES.join(', ')} (host: only the host that failed; batch: every host of its batch; fleet: every host of the run); nothing was contacted or changed`,
    );
  }
  return s;
}

/** Hosts per batch for `hostCount` hosts: n, or ceil(n% of them), never less than 1. */
export function batchSize(a: Amount, hostCount: number): number {
  if (!a.percent) return Math.max(1, a.n);
  // Whole-number arithmetic: 10% of 30 hosts is exactly 3, not 3.0000000000000004 rounded up to 4.
  return Math.max(1, Math.ceil((a.n * hostCount) / 100));
}

/** Cuts `items` into batches of `size`, keeping their order; the last may be smaller. */
export function splitBatches<T>(items: readonly T[], size: number): T[][] {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`batch size must be a whole number ≥ 1, not ${size}`);
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** How many failed hosts a batch of `size` may have before no later batch starts: unlimited without a --max-fail. */
export function failBudget(a: Amount | undefined, size: number): number {
  if (!a) return Infinity;
  return a.percent ? Math.floor((a.n * size) / 100) : a.n;
}

/** The fleet options of a run, checked and worked out for its hosts. */
export interface FleetOptions {
  /** Hosts per batch; undefined: every host in one batch (no --batch). */
  batchSize?: number;
  /** Failed hosts a batch may have (per batch, by failBudget); undefined: unlimited. */
  maxFail?: Amount;
  rollbackScope: RollbackScope;
  /** As given, for the journal and messages. */
  given: { batch?: string; maxFail?: string; rollbackScope: RollbackScope };
}

/** Checks `--batch`, `--max-fail` and `--rollback-scope` together; an InputError names what is wrong. */
export function fleetOptions(o: { batch?: string; maxFail?: string; rollbackScope?: string }, hostCount: number): FleetOptions {
  const batch = o.batch !== undefined ? parseAmount('--batch', String(o.batch)) : undefined;
  let maxFail = o.maxFail !== undefined ? parseAmount('--max-fail', String(o.maxFail)) : undefined;
  const rollbackScope = o.rollbackScope !== undefined ? parseScope(String(o.rollbackScope)) : 'host';
  if (maxFail && !batch) {
    throw new InputError('--max-fail needs --batch: it decides whether the next batch starts, and without --batch every host is in the one batch; nothing was contacted or changed');
  }
  if (batch && !maxFail) maxFail = { n: 0, percent: false, given: '0' };
  return {
    ...(batch ? { batchSize: batchSize(batch, hostCount) } : {}),
    ...(maxFail ? { maxFail } : {}),
    rollbackScope,
    given: { ...(batch ? { batch: batch.given } : {}), ...(maxFail ? { maxFail: maxFail.given } : {}), rollbackScope },
  };
}
