/**
 * The journal as a format: what Journal.write puts on disk reads back as the same entries, with
 * their format version; every line that is not a valid entry is named by file and line; a last
 * line cut short by a crash is skipped with a note.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { JOURNAL_VERSION, Journal, formatProblem, listRunIds, parseJournal, reachOf, readJournal, runsAs, type JournalEntry } from '../../src/engine/journal.js';
import { Masker } from '../../src/engine/mask.js';
import { RUN, hostFinished, hostStarted, rollbackFinished, rollbackStarted, runFinished, runStarted, stepFinished, stepStarted } from './journal-entries.js';

const F = '/state/runs/x.ndjson';
const line = (o: unknown) => JSON.stringify(o);
const v1 = (e: JournalEntry) => ({ v: 1, ...e });

/** A run touching every kind of entry. */
const everyKind = (): JournalEntry[] => [
  runStarted(['h1']),
  hostStarted('h1'),
  stepStarted('h1', 'a'),
  stepFinished('h1', 'a'),
  stepStarted('h1', 'b', { type: 'command', undo: null, user: 'app', sudo: true }),
  stepFinished('h1', 'b', 'failed', 'command'),
  rollbackStarted('h1', 'a'),
  rollbackFinished('h1', 'a'),
  hostFinished('h1', 'rolled-back', 1, 1),
  runFinished('rolled-back', 1),
];

describe('Journal.write → readJournal', () => {
  let state: string;
  beforeEach(() => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-journal-'));
  });
  afterEach(() => rmSync(state, { recursive: true, force: true }));

  it('every entry goes out with the format version first, masked, and reads back as written', async () => {
    const j = await Journal.create(state, RUN, new Masker(['hunter2-secret']));
    const entries = everyKind();
    (entries[0] as Extract<JournalEntry, { kind: 'run-started' }>).vars = { password: 'hunter2-secret' };
    for (const e of entries) await j.write(e);
    await j.close();
    const text = readFileSync(j.file, 'utf8');
    expect(
      text
        .split('\n')
        .filter(Boolean)
        .every((l) => l.startsWith(`{"v":${JOURNAL_VERSION},"kind":`)),
    ).toBe(true);
    expect(text).not.toContain('hunter2-secret');
    const back = await readJournal(state, RUN);
    expect(back.problems).toEqual([]);
    expect(back.file).toBe(j.file);
    const expected = entries.map(v1);
    (expected[0] as { vars: unknown }).vars = { password: '***' };
    expect(back.entries).toEqual(expected);
    expect(await listRunIds(state)).toEqual([RUN]);
  });

  it('entries written at once (many hosts) share syncs, keep their order, and each resolves only once it is in the file', async () => {
    const j = await Journal.create(state, RUN, new Masker([]));
    const entries = Array.from({ length: 200 }, (_, i) => stepStarted('web1', `step ${i}`));
    const seen: number[] = [];
    await Promise.all(
      entries.map((e, i) =>
        j.write(e).then(() => {
          // Resolved: the entry, and every one written before it, is in the file.
          const lines = readFileSync(j.file, 'utf8').split('\n').filter(Boolean);
          expect(lines.length).toBeGreaterThan(i);
          seen.push(i);
        }),
      ),
    );
    await j.close();
    expect(seen).toEqual(entries.map((_, i) => i));
    const back = await readJournal(state, RUN);
    expect(back.problems).toEqual([]);
    expect(back.entries.map((e) => (e as { step?: string }).step)).toEqual(entries.map((_, i) => `step ${i}`));
  });

  it('a run id that is not one, or names no journal, is invalid input (exit 2)', async () => {
    await expect(readJournal(state, '../etc/passwd')).rejects.toThrow(InputError);
    await expect(readJournal(state, 'no-such-run')).rejects.toThrow(/no run "no-such-run" in .*runs \(see hostsmith history\)/);
  });
});

describe('parseJournal: validation, with file and line', () => {
  const good = everyKind().map((e) => line(v1(e)));

  it('a whole journal reads without problems; blank lines are skipped', () => {
    const r = parseJournal([good[0], '', ...good.slice(1), ''].join('\n'), F);
    expect(r.problems).toEqual([]);
    expect(r.entries).toHaveLength(good.length);
  });

  it.each([1, 7, 30, -2])('a last line cut short after %i characters is skipped with a torn note naming the line', (cut) => {
    const torn = good[4]!.slice(0, cut < 0 ? good[4]!.length + cut : cut);
    const r = parseJournal([...good.slice(0, 4), torn].join('\n'), F);
    expect(r.entries).toHaveLength(4);
    expect(r.problems).toEqual([{ file: F, line: 5, kind: 'torn', message: expect.stringContaining('cut short') }]);
    expect(formatProblem(r.problems[0]!)).toMatch(/^\/state\/runs\/x\.ndjson:5: the last entry was cut short/);
  });

  it('a last line that is whole but lost only its newline is a valid entry', () => {
    const r = parseJournal(good.slice(0, 5).join('\n'), F);
    expect(r.problems).toEqual([]);
    expect(r.entries).toHaveLength(5);
  });

  it('a cut-short line inside the file (a failed write, then a fresh line) is invalid, and the entries after it still count', () => {
    const r = parseJournal([good[0], good[1], good[2]!.slice(0, 20), good[3], ''].join('\n'), F);
    expect(r.entries.map((e) => e.kind)).toEqual(['run-started', 'host-started', 'step-finished']);
    expect(r.problems).toEqual([{ file: F, line: 3, kind: 'invalid', message: expect.stringMatching(/^not a journal entry \(not JSON/) }]);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['an unknown kind', { v: 1, kind: 'step-exploded', time: 't' }, /invalid journal entry \(a step-exploded entry\): kind: Invalid discriminator value/],
    ['a status no run writes', { ...v1(stepFinished('h1', 'a')), status: 'sort-of' }, /\(a step-finished entry\): status: Invalid enum value/],
    ['a missing field', (({ pre: _p, ...rest }) => rest)(v1(stepStarted('h1', 'a')) as Record<string, unknown>), /\(a step-started entry\): pre: Required/],
    ['a field of the wrong type', { ...v1(runStarted(['h1'])), pid: 'twelve' }, /pid: Expected number, received string/],
    ['a newer format', { ...v1(hostFinished('h1', 'ok')), v: 2 }, /v: written in a newer journal format than this hostsmith reads \(1\)/],
    [
      'a format-1 step that does not say whether it used sudo',
      (({ sudo: _s, ...rest }) => rest)(v1(stepStarted('h1', 'a')) as Record<string, unknown>),
      /sudo: a step-started entry of format 1 must say/,
    ],
    ['an array', [1, 2], /invalid journal entry \(an entry\)/],
    ['a rollback with a made-up status', { ...v1(rollbackFinished('h1', 'a')), status: 'mostly' }, /status: Invalid enum value/],
  ];
  it.each(bad)('%s is reported as invalid with its line; the rest is read', (_what, entry, message) => {
    const r = parseJournal([good[0], good[1], line(entry), good[2], ''].join('\n'), F);
    expect(r.entries).toHaveLength(3);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatchObject({ file: F, line: 3, kind: 'invalid' });
    expect(r.problems[0]!.message).toMatch(message);
  });

  it('entries from before format versions read as version 0 (sudo was not recorded then)', () => {
    const old = everyKind().map((e) => {
      const { sudo: _s, user: _u, ...rest } = e as Record<string, unknown>;
      return line(rest);
    });
    const r = parseJournal(old.join('\n') + '\n', F);
    expect(r.problems).toEqual([]);
    expect(r.entries.every((e) => e.v === 0)).toBe(true);
  });

  it('fields a format does not know are dropped, not kept', () => {
    const r = parseJournal(line({ ...v1(hostFinished('h1', 'ok')), surprise: 'x' }) + '\n', F);
    expect(r.entries[0]).not.toHaveProperty('surprise');
  });
});

describe('what a step-started and a host-started entry keep for later', () => {
  it('reach: address, port, user, key paths and known_hosts; never vars or anything else', () => {
    const describe = {
      name: 'web1',
      kind: 'ssh',
      host: '203.0.113.10',
      port: 2222,
      user: 'deploy',
      identities: ['/home/me/.ssh/id_ed25519'],
      sudo: true,
      vars: { db_password: 'hunter2' },
      knownHostsFile: '/home/me/.ssh/known_hosts',
      password: 'not-ever',
      jump: { name: 'bastion', kind: 'ssh', host: 'bastion.example', port: 22, user: 'j', identities: [], sudo: false, vars: { x: 1 } },
    };
    const r = reachOf(describe);
    expect(r).toEqual({
      name: 'web1',
      kind: 'ssh',
      host: '203.0.113.10',
      port: 2222,
      user: 'deploy',
      identities: ['/home/me/.ssh/id_ed25519'],
      sudo: true,
      knownHostsFile: '/home/me/.ssh/known_hosts',
      jump: { name: 'bastion', kind: 'ssh', host: 'bastion.example', port: 22, user: 'j', identities: [], sudo: false },
    });
    expect(JSON.stringify(r)).not.toMatch(/hunter2|not-ever|vars/);
    expect(reachOf(undefined)).toBeUndefined();
    expect(reachOf({ name: 'x' })).toBeUndefined();
  });

  it.each([
    ['command', { run: 'x', user: 'app' }, 'app'],
    ['command', { run: 'x' }, undefined],
    ['command', { run: 'x', user: '' }, undefined],
    ['cron', { name: 'c', user: 'app' }, undefined], // whose crontab, not who runs the step
    ['file', null, undefined],
  ])('runsAs(%s, %j) = %s', (type, params, user) => {
    expect(runsAs(type, params)).toBe(user);
  });
});
