/** Fleet options (SPEC §12): batch sizes, the failure budget per batch, and what is refused. */
import { describe, expect, it } from 'vitest';
import { batchSize, failBudget, fleetOptions, parseAmount, parseScope, splitBatches } from '../../src/engine/batches.js';
import { InputError } from '../../src/errors.js';

const names = (n: number) => Array.from({ length: n }, (_, i) => `h${i + 1}`);

describe('batch size: n, or ceil(n% of the hosts), at least 1', () => {
  it.each([
    ['2', 6, 2],
    ['1', 6, 1],
    ['10', 6, 10], // more than there are hosts: one batch (splitBatches below)
    ['50%', 6, 3],
    ['30%', 4, 2], // 1.2 → 2
    ['34%', 6, 3], // 2.04 → 3
    ['33%', 6, 2], // 1.98 → 2
    ['10%', 30, 3], // exactly 3: no floating-point 3.0000000000000004 → 4
    ['1%', 6, 1], // 0.06 → at least 1
    ['100%', 6, 6],
    ['25%', 1, 1],
  ] as const)('--batch %s of %i hosts → %i per batch', (raw, hosts, size) => {
    expect(batchSize(parseAmount('--batch', raw), hosts)).toBe(size);
  });
});

describe('splitBatches keeps the order; the last batch may be smaller', () => {
  it.each([
    [
      6,
      2,
      [
        ['h1', 'h2'],
        ['h3', 'h4'],
        ['h5', 'h6'],
      ],
    ],
    [5, 2, [['h1', 'h2'], ['h3', 'h4'], ['h5']]],
    [3, 10, [['h1', 'h2', 'h3']]],
    [1, 1, [['h1']]],
    [0, 2, []],
  ] as const)('%i hosts in batches of %i', (n, size, want) => {
    expect(splitBatches(names(n), size)).toEqual(want);
  });

  it('refuses a size below 1', () => {
    expect(() => splitBatches(names(2), 0)).toThrow(RangeError);
  });
});

describe('failure budget per batch: n, or floor(n% of that batch), unlimited without --max-fail', () => {
  it.each([
    ['0', 2, 0],
    ['1', 2, 1],
    ['5', 2, 5],
    ['0%', 4, 0],
    ['50%', 2, 1],
    ['50%', 3, 1], // 1.5 → 1: a second failure is more than half of 3
    ['49%', 2, 0], // 0.98 → 0
    ['34%', 3, 1], // 1.02 → 1
    ['100%', 3, 3],
    ['10%', 30, 3],
  ] as const)('--max-fail %s in a batch of %i → %i failed hosts allowed', (raw, size, budget) => {
    expect(failBudget(parseAmount('--max-fail', raw), size)).toBe(budget);
  });

  it('is unlimited without --max-fail', () => {
    expect(failBudget(undefined, 4)).toBe(Infinity);
  });

  // failed > floor(p% × size) is the same as failed > p% × size for a whole number of failed hosts (Ansible's rule).
  it.each([
    ['50%', 3, 1, false],
    ['50%', 3, 2, true],
    ['25%', 4, 1, false],
    ['25%', 4, 2, true],
    ['0', 2, 1, true],
    ['0', 2, 0, false],
  ] as const)('--max-fail %s, batch of %i, %i failed → stops: %s', (raw, size, failed, stops) => {
    expect(failed > failBudget(parseAmount('--max-fail', raw), size)).toBe(stops);
  });
});

describe('invalid values are refused (exit 2) with what would be accepted', () => {
  it.each(['0', '-1', '0%', '101%', 'abc', '', '2.5', '1e3', '%', '5 hosts', '50%%'])('--batch %j', (raw) => {
    const e = (() => {
      try {
        parseAmount('--batch', raw);
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(InputError);
    expect((e as InputError).exitCode).toBe(2);
    expect((e as Error).message).toContain(`--batch: "${raw}"`);
    expect((e as Error).message).toContain('1 or more');
  });

  it.each(['-1', '101%', 'x', '1.5', '-0%'])('--max-fail %j', (raw) => {
    expect(() => parseAmount('--max-fail', raw)).toThrow(/--max-fail: .* is not a number of failed hosts/);
  });

  it('--max-fail takes 0 and 0%', () => {
    expect(parseAmount('--max-fail', '0')).toEqual({ n: 0, percent: false, given: '0' });
    expect(parseAmount('--max-fail', '0%')).toEqual({ n: 0, percent: true, given: '0%' });
  });

  it.each(['', 'all', 'Fleet', 'hosts'])('--rollback-scope %j', (raw) => {
    expect(() => parseScope(raw)).toThrow(/--rollback-scope: .* is not one of host, batch, fleet/);
  });
});

describe('fleetOptions: the three together', () => {
  it('no option: one batch, unlimited failures, host scope', () => {
    expect(fleetOptions({}, 6)).toEqual({ rollbackScope: 'host', given: { rollbackScope: 'host' } });
  });

  it('--batch alone: max-fail defaults to 0', () => {
    const f = fleetOptions({ batch: '50%' }, 6);
    expect(f.batchSize).toBe(3);
    expect(failBudget(f.maxFail, 3)).toBe(0);
    expect(f.given).toEqual({ batch: '50%', maxFail: '0', rollbackScope: 'host' });
  });

  it('--batch with --max-fail and a scope', () => {
    const f = fleetOptions({ batch: '2', maxFail: '1', rollbackScope: 'fleet' }, 6);
    expect([f.batchSize, failBudget(f.maxFail, 2), f.rollbackScope]).toEqual([2, 1, 'fleet']);
  });

  it('--max-fail without --batch is refused: it would never stop anything', () => {
    expect(() => fleetOptions({ maxFail: '1' }, 6)).toThrow(/--max-fail needs --batch/);
  });

  it('--rollback-scope without --batch: the whole run is the one batch', () => {
    const f = fleetOptions({ rollbackScope: 'batch' }, 6);
    expect(f.batchSize).toBeUndefined();
    expect(f.rollbackScope).toBe('batch');
  });
});
