import { describe, expect, it } from 'vitest';
import { worstStatus } from '../../src/engine/events.js';
import { Masker } from '../../src/engine/mask.js';
import { schedule } from '../../src/engine/run.js';
import type { StepSpec } from '../../src/recipe/types.js';

describe('worstStatus: 3, 4, 1, 0; 130 when interrupted', () => {
  it.each([
    [['ok', 'ok'], false, 0],
    [['ok', 'rolled-back'], false, 1],
    [['failed', 'unreachable'], false, 4],
    [['unreachable', 'rollback-incomplete', 'ok'], false, 3],
    [['interrupted', 'ok'], true, 130],
    [['interrupted', 'rollback-incomplete'], true, 3],
  ] as const)('%j → %i', (statuses, interrupted, code) => {
    expect(worstStatus([...statuses], interrupted).exitCode).toBe(code);
  });
});

describe('Masker', () => {
  it('masks secrets in nested values, including JSON-escaped forms', () => {
    const m = new Masker(['s3cr"et', 'hunter2']);
    expect(m.value({ a: ['x hunter2 y'], b: { c: 'p=s3cr"et' } })).toEqual({ a: ['x *** y'], b: { c: 'p=***' } });
    expect(m.text(JSON.stringify({ d: 's3cr"et' }))).toBe('{"d":"***"}');
  });
});

const step = (name: string, needs: string[] = []): StepSpec => ({
  name,
  type: 'command',
  params: {},
  fatal: true,
  retry: { attempts: 1, delayMs: 0, backoff: 1 },
  needs,
  notify: [],
  loc: { file: 'r.yml', line: 1, col: 1 },
  dir: '/',
});

describe('schedule', () => {
  it('runs in declaration order with limit 1', async () => {
    const order: string[] = [];
    await schedule(
      [step('a'), step('b', ['a']), step('c', ['b'])],
      1,
      async (s) => void order.push(s.name),
      () => false,
    );
    expect(order).toEqual(['a', 'b', 'c']);
  });
  it('runs independent steps side by side up to the limit', async () => {
    let inFlight = 0;
    let peak = 0;
    const run = async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, 20));
      inFlight--;
    };
    await schedule([step('a'), step('b'), step('c'), step('d', ['a', 'b', 'c'])], 2, run, () => false);
    expect(peak).toBe(2);
  });
  it('waits for needs before starting a step', async () => {
    const order: string[] = [];
    await schedule(
      [step('late', ['first']), step('first')],
      2,
      async (s) => void order.push(s.name),
      () => false,
    );
    expect(order).toEqual(['first', 'late']);
  });
  it('stops launching when told to', async () => {
    const order: string[] = [];
    await schedule(
      [step('a'), step('b', ['a'])],
      1,
      async (s) => void order.push(s.name),
      () => order.length > 0,
    );
    expect(order).toEqual(['a']);
  });
});
