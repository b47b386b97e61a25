import { describe, expect, it } from 'vitest';
import { HostBoard } from '../../src/cli/progress.js';
import { colorWanted } from '../../src/cli/shared.js';

/** A log-update stand-in that keeps the last frame drawn. */
function fakeLog() {
  const frames: string[] = [];
  const log = Object.assign((...t: string[]) => void frames.push(t.join(' ')), { clear: () => {}, done: () => {}, persist: () => {} });
  return { log, frames };
}

describe('the live host board', () => {
  it('says per host: connecting, step k/n with its name and time, rolling back, the outcome', () => {
    let now = 1000;
    const { log, frames } = fakeLog();
    const b = new HostBoard(['web1', 'db1', 'w3'], log, { color: false, columns: 80, now: () => now });
    expect(b.lineOf('web1')).toMatch(/^web1 {2}. connecting {2}0\.0s$/);
    b.stepStarted('web1', 'Install nginx', 3, 12);
    now += 4200;
    expect(b.lineOf('web1')).toMatch(/^web1 {2}. step 3\/12 {2}Install nginx {2}4\.2s$/);
    b.stepStarted('db1', 'Reload', undefined, undefined);
    expect(b.lineOf('db1')).toMatch(/^db1 {3}. handler {2}Reload {2}0\.0s$/);
    b.rollingBack('db1');
    b.rollingBack('db1', 'Write config');
    expect(b.lineOf('db1')).toMatch(/rolling back {2}\(Write config done\)/);
    b.finished('web1', 'ok', { changed: 2, unchanged: 10, skipped: 0, failed: 0, rolledBack: 0 }, 12_100);
    expect(b.lineOf('web1')).toBe('web1  ✔ ok  2 changed, 10 unchanged  12.1s');
    // A finished host stays finished whatever comes after.
    b.stepStarted('web1', 'late', 1, 1);
    expect(b.lineOf('web1')).toContain('✔ ok');
    b.batch(['db1']);
    expect(b.lineOf('w3')).toMatch(/waiting$/);
    expect(frames.at(-1)!.split('\n')).toHaveLength(3);
    b.close();
  });

  it('never wraps: long names and steps are cut to the width; control characters are shown escaped', () => {
    const { log } = fakeLog();
    const b = new HostBoard(['h\x1b[2Jx'], log, { color: false, columns: 40 });
    b.stepStarted('h\x1b[2Jx', 'a'.repeat(200), 1, 2);
    const line = b.lineOf('h\x1b[2Jx');
    expect(line.length).toBeLessThanOrEqual(40);
    expect(line).not.toContain('\x1b');
    b.close();
  });
});

describe('colour', () => {
  it.each([
    [true, {}, true, true],
    [true, {}, false, false],
    [true, { NO_COLOR: '1' }, true, false],
    [true, { FORCE_COLOR: '1' }, false, true],
    [true, { FORCE_COLOR: '' }, false, true],
    [true, { FORCE_COLOR: '0' }, true, false],
    [true, { FORCE_COLOR: '1', NO_COLOR: '1' }, false, true],
    [false, { FORCE_COLOR: '1' }, true, false],
  ])('flag %s, env %j, tty %s → %s', (flag, env, tty, want) => {
    expect(colorWanted(flag, env, tty)).toBe(want);
  });
});
