/**
 * replay(entries) → a run's state, as tables: a whole run cut short after every entry (what a
 * crash at that point leaves), and the shapes that make matching hard (steps run twice, steps
 * in parallel, a step whose end could not be journaled, rollbacks that fail or stop part-way).
 */
import { describe, expect, it } from 'vitest';
import type { JournalEntry } from '../../src/engine/journal.js';
import { replay, runPhase, undoSummary, type ControllerState, type RunState } from '../../src/engine/replay.js';
import { RUN, hostFinished, hostStarted, rollbackFinished, rollbackStarted, runFinished, runStarted, stepFinished, stepStarted } from './journal-entries.js';

const gone: ControllerState = { kind: 'gone', why: 'pid 4242 is not running' };

/** h1 fails at its second step and rolls back its first; h2 finishes ok; the run ends rolled-back. */
function fullRun(): JournalEntry[] {
  return [
    runStarted(['h1', 'h2']), // 1
    hostStarted('h1'), // 2
    stepStarted('h1', 'a'), // 3
    stepFinished('h1', 'a'), // 4
    stepStarted('h1', 'b', { type: 'command', undo: { run: 'undo-b' }, sudo: true, user: 'app' }), // 5
    stepFinished('h1', 'b', 'failed', 'command'), // 6
    rollbackStarted('h1', 'a'), // 7
    rollbackFinished('h1', 'a'), // 8
    hostFinished('h1', 'rolled-back', 1, 1), // 9
    hostStarted('h2'), // 10
    stepStarted('h2', 'a'), // 11
    stepFinished('h2', 'a'), // 12
    hostFinished('h2', 'ok', 1), // 13
    runFinished('rolled-back', 1), // 14
  ];
}

/** host → [status, left, in flight, rolling back] */
type HostView = [string, string[], string[], string[]];
const view = (r: RunState): Record<string, HostView> =>
  Object.fromEntries(r.hosts.map((h) => [h.name, [h.status, h.left.map((s) => s.name), h.inFlight.map((s) => s.name), h.rollingBack.map((s) => s.name)]]));

const P: HostView = ['pending', [], [], []];
// After how many entries the run is cut short → run phase (controller gone), hosts.
const cuts: Array<[number, string, Record<string, HostView>]> = [
  [1, 'crashed', { h1: P, h2: P }],
  [2, 'crashed', { h1: ['open', [], [], []], h2: P }],
  [3, 'crashed', { h1: ['open', [], ['a'], []], h2: P }],
  [4, 'crashed', { h1: ['open', ['a'], [], []], h2: P }],
  [5, 'crashed', { h1: ['open', ['a'], ['b'], []], h2: P }],
  [6, 'crashed', { h1: ['open', ['a'], [], []], h2: P }],
  [7, 'crashed', { h1: ['open', ['a'], [], ['a']], h2: P }],
  [8, 'crashed', { h1: ['open', [], [], []], h2: P }],
  [9, 'crashed', { h1: ['rolled-back', [], [], []], h2: P }],
  [10, 'crashed', { h1: ['rolled-back', [], [], []], h2: ['open', [], [], []] }],
  [11, 'crashed', { h1: ['rolled-back', [], [], []], h2: ['open', [], ['a'], []] }],
  [12, 'crashed', { h1: ['rolled-back', [], [], []], h2: ['open', ['a'], [], []] }],
  [13, 'abandoned', { h1: ['rolled-back', [], [], []], h2: ['ok', ['a'], [], []] }],
  [14, 'rolled-back', { h1: ['rolled-back', [], [], []], h2: ['ok', ['a'], [], []] }],
];

describe('replay: a run cut short after each entry', () => {
  it('nothing recorded (not even run-started): no run', () => {
    expect(replay([])).toBeUndefined();
    expect(replay(fullRun().slice(1))).toBeUndefined();
  });

  it.each(cuts)('cut after entry %i → %s', (n, phase, hosts) => {
    const entries = Object.freeze(
      fullRun()
        .slice(0, n)
        .map((e) => Object.freeze(e)),
    );
    const r = replay(entries)!;
    expect(r.runId).toBe(RUN);
    expect(runPhase(r, gone)).toBe(phase);
    expect(view(r)).toEqual(hosts);
    expect(r.status).toBe(n === 14 ? 'rolled-back' : 'open');
    expect(r.exitCode).toBe(n === 14 ? 1 : null);
    expect(r.left.map((s) => `${s.host}:${s.name}`)).toEqual(Object.entries(hosts).flatMap(([h, v]) => v[1].map((s) => `${h}:${s}`)));
    expect(r.anomalies).toEqual([]);
  });

  it('the whole run: header, reach, backups, lock, steps with their sudo, user, undo data and fingerprints', () => {
    const r = replay(fullRun())!;
    expect(r).toMatchObject({ recipe: 'web', recipeFile: '/srv/recipes/web.yml', mode: 'apply', pid: 4242, controller: 'ctl', hostNames: ['h1', 'h2'], vars: { port: 8080 } });
    expect(r.finishedAt).toBeDefined();
    const h1 = r.hosts[0]!;
    expect(h1).toMatchObject({
      backupDir: `/var/lib/hostsmith/backups/${RUN}`,
      lock: '/run/hostsmith/lock',
      target: { host: '127.0.0.9', user: 'root', port: 22 },
      counts: { changed: 1, rolledBack: 1 },
    });
    expect(h1.steps.map((s) => [s.name, s.status, s.completed, s.left, s.rollback?.status])).toEqual([
      ['a', 'changed', true, false, 'rolled-back'],
      ['b', 'failed', false, false, undefined],
    ]);
    expect(h1.steps[0]).toMatchObject({ pre: 'sha256:pre-a', post: 'sha256:post-a', sudo: false, irreversible: false, undo: { kind: 'absent', path: '/etc/a' } });
    expect(h1.steps[1]).toMatchObject({ sudo: true, user: 'app', type: 'command', undo: { run: 'undo-b' }, error: 'exit 1' });
    expect(runPhase(r, { kind: 'running' })).toBe('rolled-back'); // a finished run is what it ended as
  });
});

describe('replay: matching starts, ends and rollbacks', () => {
  it('a step that runs twice (a handler) pairs each end with its own start; rollback takes the newest', () => {
    const r = replay([
      runStarted(['h1']),
      hostStarted('h1'),
      stepStarted('h1', 'reload', { handler: true, type: 'service', undo: { name: 'nginx', init: 'systemd', running: true } }),
      stepFinished('h1', 'reload', 'changed', 'service'),
      stepStarted('h1', 'reload', { handler: true, type: 'service', undo: { name: 'nginx', init: 'systemd', running: false } }),
      stepFinished('h1', 'reload', 'changed', 'service'),
      rollbackStarted('h1', 'reload', 'service'),
      rollbackFinished('h1', 'reload', true, 'service'),
    ])!;
    const [first, second] = r.hosts[0]!.steps;
    expect(first).toMatchObject({ handler: true, completed: true, left: true, completedOrder: 0 });
    expect(first!.rollback).toBeUndefined();
    expect(second).toMatchObject({ completed: true, left: false, completedOrder: 1, rollback: { status: 'rolled-back' } });
    expect(r.hosts[0]!.left).toEqual([first]);
  });

  it('steps in parallel: several in flight at once; left is in the order they completed, not started', () => {
    const r = replay([runStarted(['h1']), hostStarted('h1'), stepStarted('h1', 'x'), stepStarted('h1', 'y'), stepStarted('h1', 'z'), stepFinished('h1', 'y'), stepFinished('h1', 'x')])!;
    expect(view(r)).toEqual({ h1: ['open', ['y', 'x'], ['z'], []] });
  });

  it('a rollback that fails leaves its step on the host, with the error', () => {
    const r = replay([
      runStarted(['h1']),
      hostStarted('h1'),
      stepStarted('h1', 'a'),
      stepFinished('h1', 'a'),
      stepStarted('h1', 'b'),
      stepFinished('h1', 'b'),
      stepStarted('h1', 'c'),
      stepFinished('h1', 'c', 'failed'),
      rollbackStarted('h1', 'b'),
      rollbackFinished('h1', 'b', false),
      rollbackStarted('h1', 'a'),
      rollbackFinished('h1', 'a'),
      hostFinished('h1', 'rollback-incomplete', 2, 1),
      runFinished('rollback-incomplete', 3),
    ])!;
    expect(view(r)).toEqual({ h1: ['rollback-incomplete', ['b'], [], []] });
    expect(r.hosts[0]!.left[0]!.rollback).toMatchObject({ status: 'rollback-failed', error: 'cannot undo' });
    expect(runPhase(r, gone)).toBe('rollback-incomplete');
  });

  it('a step whose end could not be journaled but that the run rolled back counts as completed, not in flight', () => {
    const r = replay([runStarted(['h1']), hostStarted('h1'), stepStarted('h1', 'a'), rollbackStarted('h1', 'a'), rollbackFinished('h1', 'a')])!;
    expect(view(r)).toEqual({ h1: ['open', [], [], []] });
    expect(r.hosts[0]!.steps[0]).toMatchObject({ status: 'in-flight', completed: true, rollback: { status: 'rolled-back' } });
  });

  it('an irreversible step left on the host keeps undo null', () => {
    const r = replay([runStarted(['h1']), hostStarted('h1'), stepStarted('h1', 'seed', { type: 'command', undo: null }), stepFinished('h1', 'seed', 'changed', 'command')])!;
    expect(r.left[0]).toMatchObject({ name: 'seed', irreversible: true, undo: null });
  });

  it('a host the run could not reach: finished without starting, nothing left', () => {
    const r = replay([runStarted(['h1']), hostFinished('h1', 'unreachable'), runFinished('unreachable', 4)])!;
    expect(view(r)).toEqual({ h1: ['unreachable', [], [], []] });
  });

  it.each<[string, JournalEntry[], RegExp]>([
    ['an end without a start', [stepFinished('h1', 'ghost')], /step "ghost" on h1 finished without a step-started/],
    ['a rollback of a step that never completed', [stepStarted('h1', 'a'), stepFinished('h1', 'a', 'failed'), rollbackStarted('h1', 'a')], /rollback of step "a" on h1, which did not complete/],
    ['a rollback end without its start', [rollbackFinished('h1', 'a')], /finished without a rollback-started/],
    ['a host the run did not name', [hostStarted('h9')], /host h9 is not among the hosts the run named/],
    ['an entry after run-finished', [runFinished('ok', 0), hostFinished('h1', 'ok')], /entry 4 \(host-finished\) comes after run-finished/],
    ['a second run-started', [runStarted(['h1'])], /a second run-started/],
  ])('%s is noted as an anomaly, and the rest still replays', (_what, extra, message) => {
    const r = replay([runStarted(['h1']), hostStarted('h1'), ...extra])!;
    expect(r.anomalies.join('\n')).toMatch(message);
  });

  it('entries before run-started are noted', () => {
    const r = replay([hostStarted('h1'), runStarted(['h1'])])!;
    expect(r.anomalies).toEqual(['entry 1 (host-started) comes before run-started']);
  });
});

describe('runPhase: an open run is running, crashed, abandoned or unknown (another controller)', () => {
  const open = replay(fullRun().slice(0, 5))!;
  const allHostsDone = replay(fullRun().slice(0, 13))!;
  it.each<[string, RunState, ControllerState, string]>([
    ['controller alive', open, { kind: 'running' }, 'running'],
    ['controller gone mid-run', open, gone, 'crashed'],
    ['controller on another machine', open, { kind: 'elsewhere' }, 'open'],
    ['controller gone after every host finished', allHostsDone, gone, 'abandoned'],
    ['controller alive after every host finished (closing the run)', allHostsDone, { kind: 'running' }, 'running'],
  ])('%s → %s', (_what, run, c, phase) => {
    expect(runPhase(run, c)).toBe(phase);
  });
});

describe('undoSummary: what taking a step back does, from its undo data', () => {
  it.each<[string, unknown, string]>([
    ['file', { kind: 'absent', path: '/etc/x', created: ['/etc/app'] }, 'remove /etc/x and the folders the step created (/etc/app)'],
    [
      'template',
      { kind: 'file', path: '/etc/x.conf', backup: '/var/lib/hostsmith/backups/r/etc/x.conf', mode: 0o644, owner: 'root', group: 'root' },
      'put back file /etc/x.conf from the backup /var/lib/hostsmith/backups/r/etc/x.conf; mode 0644, owner root:root',
    ],
    ['file', { kind: 'file', path: '/etc/x', mode: 0o600 }, 'put back file /etc/x; mode 0600'],
    ['file', { kind: 'link', path: '/etc/l', target: '/etc/old' }, 'put back link /etc/l; link target /etc/old'],
    ['command', { run: 'rm -f /srv/seeded', user: 'app', cwd: '/srv' }, 'run "rm -f /srv/seeded" as app in /srv'],
    ['command', null, 'none: the step cannot be taken back (no rollback)'],
    ['cron', { user: 'root', previous: null }, "remove root's crontab (there was none)"],
    ['cron', { user: 'app', previous: { backup: '/b/crontabs/app', sha256: 'x' } }, "put back app's crontab from the backup /b/crontabs/app"],
    ['package', { purge: ['nginx', 'nginx-common'], remove: [], reinstall: [{ name: 'curl', version: '7.88', auto: false }] }, 'purge nginx nginx-common; reinstall curl=7.88'],
    ['package', { purge: [], remove: [], reinstall: [] }, 'nothing to put back (apt lists refreshed only)'],
    ['service', { name: 'nginx', init: 'systemd', running: false, enabled: 'disabled' }, 'put nginx back to stopped, enabled: disabled'],
    ['group', { backup: '/b/accounts', touched: { group: ['web'], gshadow: ['web'] } }, 'put back the entries of /etc/group, /etc/gshadow from the backup /b/accounts'],
    ['user', { name: 'app', accounts: { backup: '/b/acc', touched: { passwd: ['app'] } }, remove: ['/home/app'] }, 'put back the entries of /etc/passwd from the backup /b/acc; remove /home/app'],
    ['mystery', { a: 1 }, 'undo data {"a":1}'],
  ])('%s %j', (type, undo, text) => {
    expect(undoSummary(type, undo)).toBe(text);
  });
});
