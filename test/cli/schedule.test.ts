/**
 * schedule, without hosts or a cron daemon: the crontab edits (byte for byte), the stored file
 * (0600, never over another), names, log rotation, the per-schedule lock; and the built CLI's
 * `schedule add | run | list | remove` against a stand-in `crontab` command that keeps the
 * crontab in a file (first on PATH, so the machine's own crontab is never read or written).
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { addEntry, hasEntry, jobLine, markedNames, removeEntry, shellQuote } from '../../src/cli/crontab.js';
import { acquireScheduleLock, createSettings, lastRun, lockFile, logsDir, nameProblem, readSettings, rotateLogs, settingsFile, type Settings } from '../../src/cli/schedules.js';
import { hostsmith, ROOT, type CliResult } from '../e2e/cli.js';

const dirs: string[] = [];
const temp = (p = 'hostsmith-sched-') => {
  const d = mkdtempSync(join(tmpdir(), p));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const job = (name: string) => `*/5 * * * * /usr/bin/node /opt/hs/bin/hostsmith.js schedule run ${name} --state-dir /var/hs`;
const JOB = job('nightly');

describe('crontab edits', () => {
  const original = [
    'MAILTO=ops@example.com',
    '# m h dom mon dow command',
    '',
    '0 1 * * * /usr/local/bin/backup   --all',
    '\t# indented comment with trailing spaces   ',
    '',
    '',
    '30 2 * * 0 echo "100\\% sure" > /tmp/x',
    '',
  ].join('\n');

  it('add appends the marker and the job line, and keeps every byte before them', () => {
    const added = addEntry(original, 'nightly', JOB);
    expect(added.startsWith(original)).toBe(true);
    expect(added.slice(original.length)).toBe(`# hostsmith-schedule: nightly\n${JOB}\n`);
    expect(hasEntry(added, 'nightly')).toBe(true);
    expect(hasEntry(added, 'night')).toBe(false);
    expect(markedNames(added)).toEqual(['nightly']);
  });

  it('remove takes out the marker and its job line only: the rest is byte for byte as before', () => {
    const added = addEntry(original, 'nightly', JOB);
    const r = removeEntry(added, 'nightly');
    expect(r).toEqual({ text: original, found: true, job: true });
  });

  it('an entry in the middle (other lines added after it) goes, and what follows stays', () => {
    const withOther = addEntry(addEntry(original, 'a', job('a')), 'b', job('b')) + '# after\n15 * * * * date\n';
    const r = removeEntry(withOther, 'a');
    expect(r.found).toBe(true);
    expect(r.text).toBe(`${original}# hostsmith-schedule: b\n${job('b')}\n# after\n15 * * * * date\n`);
    // and then b: back to the original plus the lines after
    expect(removeEntry(r.text, 'b').text).toBe(`${original}# after\n15 * * * * date\n`);
  });

  it('a crontab without a final newline: add puts one before the marker; remove of a last entry without one keeps the rest as is', () => {
    const noEol = '# top\n0 1 * * * backup';
    const added = addEntry(noEol, 'x', job('x'));
    expect(added).toBe(`# top\n0 1 * * * backup\n# hostsmith-schedule: x\n${job('x')}\n`);
    // a crontab edited by hand so that our job is the last line, without a newline
    const handEdited = `# top\n# hostsmith-schedule: x\n${job('x')}`;
    expect(removeEntry(handEdited, 'x').text).toBe('# top\n');
    // our entry in the middle, the user's last line without a newline: it stays without one
    const middle = `# hostsmith-schedule: x\n${job('x')}\n0 1 * * * backup`;
    expect(removeEntry(middle, 'x').text).toBe('0 1 * * * backup');
  });

  it('CRLF line ends, an empty crontab, and an unknown name are left alone', () => {
    const crlf = '# a\r\n0 1 * * * b\r\n';
    expect(removeEntry(crlf, 'x')).toEqual({ text: crlf, found: false, job: false });
    expect(addEntry('', 'x', job('x'))).toBe(`# hostsmith-schedule: x\n${job('x')}\n`);
    expect(removeEntry(addEntry('', 'x', job('x')), 'x').text).toBe('');
  });

  it('a marker whose job line was moved or commented out: only the marker goes', () => {
    const text = `# hostsmith-schedule: x\n# ${job('x')}\n0 1 * * * other schedule run xy\n`;
    expect(removeEntry(text, 'x')).toEqual({ text: `# ${job('x')}\n0 1 * * * other schedule run xy\n`, found: true, job: false });
  });

  it('a name that is a prefix of another is not confused with it', () => {
    const text = addEntry(addEntry('', 'web', job('web')), 'web-2', job('web-2'));
    const r = removeEntry(text, 'web');
    expect(r.text).toBe(`# hostsmith-schedule: web-2\n${job('web-2')}\n`);
    expect(() => addEntry(text, 'web', JOB)).toThrow(/already has an entry/);
  });

  it('the job line quotes paths for the shell and escapes % for cron', () => {
    const line = jobLine('0 3 * * *', ['/usr/bin/node', "/opt/my tools/it's%here/bin/hostsmith.js", 'schedule', 'run', 'n']);
    expect(line).toBe(`0 3 * * * /usr/bin/node '/opt/my tools/it'\\''s\\%here/bin/hostsmith.js' schedule run n`);
    expect(shellQuote('/plain/path-1.2')).toBe('/plain/path-1.2');
    expect(() => jobLine('* * * * *', ['/a\nb'])).toThrow(/line break/);
  });
});

describe('schedule names', () => {
  it.each(['web-server', 'a', 'nightly_2', '0day'])('%s is allowed', (n) => expect(nameProblem(n)).toBeUndefined());
  it.each(['', 'Web', '-x', '_x', 'a b', 'a/b', '../x', 'a.yml', 'x'.repeat(65), 'ü'])('%j is refused with the rule', (n) => {
    expect(nameProblem(n)).toMatch(/lowercase letters, digits/);
  });
});

function settings(name: string, over: Partial<Settings> = {}): Settings {
  return {
    version: 1,
    name,
    recipe: '/nonexistent/r.yml',
    recipeName: 'r',
    cron: '0 3 * * *',
    created: new Date().toISOString(),
    cwd: '/',
    options: { knownHosts: '/nonexistent/known_hosts', hosts: '127.0.0.1:9' },
    vars: { cli: { token: 'the-secret-value' }, file: { list: [1, 2] } },
    ...over,
  };
}

describe('stored settings', () => {
  it('are written mode 0600 in a 0700 folder, read back as written, and never over an existing schedule', () => {
    const state = temp();
    const file = createSettings(state, settings('nightly'));
    expect(file).toBe(settingsFile(state, 'nightly'));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(state, 'schedules')).mode & 0o777).toBe(0o700);
    expect(readSettings(state, 'nightly')).toEqual(settings('nightly', { created: readSettings(state, 'nightly').created }));
    expect(() => createSettings(state, settings('nightly', { cron: '* * * * *' }))).toThrow(/already exists.*schedule remove nightly/);
    expect(readSettings(state, 'nightly').cron).toBe('0 3 * * *');
    // no temp files left behind
    expect(readdirSync(join(state, 'schedules'))).toEqual(['nightly.yml']);
  });

  it('a file written before plan-only and fleet options existed loads as it is; the new fields read back', () => {
    const state = temp();
    mkdirSync(join(state, 'schedules'), { mode: 0o700 });
    writeFileSync(
      settingsFile(state, 'old'),
      [
        'version: 1',
        'name: old',
        'recipe: /r.yml',
        'recipeName: r',
        'cron: 0 3 * * *',
        'created: 2026-01-01T00:00:00.000Z',
        'cwd: /',
        'options:',
        '  knownHosts: /k',
        '  hosts: web1',
        'vars:',
        '  cli: {}',
        '  file: {}',
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    const old = readSettings(state, 'old');
    expect(old.planOnly).toBeUndefined();
    expect(old.options).toEqual({ knownHosts: '/k', hosts: 'web1' });
    createSettings(state, settings('new', { planOnly: true, options: { knownHosts: '/k', hosts: 'web1', limit: 'web1', batch: '25%', maxFail: '1', rollbackScope: 'batch', confirm: '2m' } }));
    expect(readSettings(state, 'new')).toMatchObject({ planOnly: true, options: { limit: 'web1', batch: '25%', maxFail: '1', rollbackScope: 'batch', confirm: '2m' } });
  });

  it('an unknown or damaged schedule is exit 2 with what to do', () => {
    const state = temp();
    expect(() => readSettings(state, 'nope')).toThrow(/no schedule named nope/);
    mkdirSync(join(state, 'schedules'));
    writeFileSync(settingsFile(state, 'bad'), 'version: 1\nname: bad\n');
    try {
      readSettings(state, 'bad');
      expect.unreachable();
    } catch (e) {
      expect((e as { exitCode: number }).exitCode).toBe(2);
      expect(String(e)).toMatch(/schedule remove bad/);
    }
  });
});

describe('log rotation', () => {
  const ids = Array.from({ length: 35 }, (_, i) => `20260101T0000${String(i).padStart(2, '0')}Z-abcdef`);

  it('keeps the newest 30 runs (run ids sort by start time) and deletes both files of each older run', () => {
    const dir = temp();
    // written in shuffled order, so that file times say nothing
    for (const id of [...ids].reverse()) {
      writeFileSync(join(dir, `${id}.log`), id);
      writeFileSync(join(dir, `${id}.events.ndjson`), '{}\n');
    }
    writeFileSync(join(dir, 'notes.txt'), 'not a log');
    const gone = rotateLogs(dir);
    expect(gone).toEqual(ids.slice(0, 5));
    const kept = ids.slice(5).flatMap((id) => [`${id}.log`, `${id}.events.ndjson`]);
    expect(readdirSync(dir).sort()).toEqual([...kept, 'notes.txt'].sort());
    expect(rotateLogs(dir)).toEqual([]);
  });

  it('counts runs, not files: a run with only one of its files (an older log, or a lost one) is one run', () => {
    const dir = temp();
    // the oldest 10 from before events had a file of their own; the rest with both files
    ids.forEach((id, i) => {
      writeFileSync(join(dir, `${id}.log`), id);
      if (i >= 10) writeFileSync(join(dir, `${id}.events.ndjson`), '{}\n');
    });
    // an events file whose log is gone
    const lone = '20260101T000099Z-abcdef';
    writeFileSync(join(dir, `${lone}.events.ndjson`), '{}\n');
    expect(rotateLogs(dir)).toEqual(ids.slice(0, 6));
    const left = readdirSync(dir);
    expect(new Set(left.map((f) => f.replace(/\.(log|events\.ndjson)$/, ''))).size).toBe(30);
    expect(left).toContain(`${lone}.events.ndjson`);
    expect(left).toContain(`${ids[6]}.log`);
    expect(left).not.toContain(`${ids[5]}.log`);
  });
});

describe('the last run', () => {
  const outcome = (runId: string, status: string, exitCode: number, event = 'schedule-finished') =>
    JSON.stringify({ event, schedule: 's', runId, time: 't', started: runId, status, exitCode, log: `/x/${runId}.log` });

  it('comes from the events file; a skipped run is not a run; a log from before events had their own file still counts', () => {
    const state = temp();
    const dir = logsDir(state, 's');
    mkdirSync(dir, { recursive: true });
    // the oldest: JSON lines inside the .log, as runs were once logged
    writeFileSync(join(dir, '20260101T000001Z-aaaaaa.log'), `some text\n${outcome('20260101T000001Z-aaaaaa', 'rolled-back', 1)}\n`);
    expect(lastRun(state, 's')).toMatchObject({ runId: '20260101T000001Z-aaaaaa', status: 'rolled-back', exitCode: 1 });
    // a newer run, logged in two files: its .log is plain text and decides nothing
    writeFileSync(join(dir, '20260101T000002Z-bbbbbb.log'), 'drift: applying the recipe would change the hosts above\n');
    writeFileSync(join(dir, '20260101T000002Z-bbbbbb.events.ndjson'), `{"event":"run-started"}\n${outcome('20260101T000002Z-bbbbbb', 'drifted', 2)}\n`);
    expect(lastRun(state, 's')).toMatchObject({ runId: '20260101T000002Z-bbbbbb', status: 'drifted', exitCode: 2 });
    // the newest was skipped: the last run is still the one before
    writeFileSync(join(dir, '20260101T000003Z-cccccc.log'), 'skipped: still running\n');
    writeFileSync(join(dir, '20260101T000003Z-cccccc.events.ndjson'), `${outcome('20260101T000003Z-cccccc', 'skipped', 0, 'schedule-skipped')}\n`);
    expect(lastRun(state, 's')?.runId).toBe('20260101T000002Z-bbbbbb');
  });
});

/** A process that stays alive until killed: a stand-in for a run still going. */
function sleeper(): { pid: number; kill(): void } {
  const c = spawn('sleep', ['60'], { stdio: 'ignore' });
  return { pid: c.pid!, kill: () => c.kill('SIGKILL') };
}

function procStart(pid: number): string {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).split(' ')[19]!;
}

describe('the per-schedule lock', () => {
  it('a second taker while the first holds it is refused with the holder; after release it can be taken', () => {
    const state = temp();
    const a = acquireScheduleLock(state, 'n', 'run-a');
    expect(a.ok).toBe(true);
    const b = acquireScheduleLock(state, 'n', 'run-b');
    expect(b.ok).toBe(false);
    if (!b.ok) expect(b.holder).toMatchObject({ pid: process.pid, runId: 'run-a', host: hostname() });
    expect(statSync(lockFile(state, 'n')).mode & 0o777).toBe(0o600);
    if (a.ok) a.release();
    expect(existsSync(lockFile(state, 'n'))).toBe(false);
    const c = acquireScheduleLock(state, 'n', 'run-c');
    expect(c.ok).toBe(true);
    if (c.ok) c.release();
  });

  it('a lock whose holder is gone is cleared and taken; a reused pid (other start time) does not count as the holder', async () => {
    const state = temp();
    mkdirSync(join(state, 'schedules'));
    const s = sleeper();
    const start = procStart(s.pid);
    s.kill();
    await new Promise((r) => setTimeout(r, 200));
    writeFileSync(lockFile(state, 'n'), JSON.stringify({ pid: s.pid, start, host: hostname(), runId: 'dead-run', since: '2026-01-01T00:00:00Z' }));
    const a = acquireScheduleLock(state, 'n', 'run-a');
    expect(a.ok).toBe(true);
    if (a.ok) {
      expect(a.cleared?.runId).toBe('dead-run');
      a.release();
    }
    // our own pid, but a start time that is not ours: a pid reused by another process
    writeFileSync(lockFile(state, 'n'), JSON.stringify({ pid: process.pid, start: '1', host: hostname(), runId: 'old', since: '2026-01-01T00:00:00Z' }));
    const b = acquireScheduleLock(state, 'n', 'run-b');
    expect(b.ok && b.cleared?.runId).toBe('old');
    if (b.ok) b.release();
  });

  it('release removes only its own lock, never one another run holds now', () => {
    const state = temp();
    const a = acquireScheduleLock(state, 'n', 'run-a');
    if (!a.ok) throw new Error('no lock');
    writeFileSync(lockFile(state, 'n'), JSON.stringify({ pid: process.pid, host: hostname(), runId: 'someone-else', since: 'now' }));
    a.release();
    expect(readFileSync(lockFile(state, 'n'), 'utf8')).toContain('someone-else');
  });
});

/**
 * The built CLI with a stand-in `crontab` first on PATH: `-l` prints $FAKE_CRONTAB (or says
 * "no crontab for"), `-` stores stdin there and refuses a last line without a newline, as Debian's does.
 */
describe('the CLI with a stand-in crontab', () => {
  let dir: string;
  let env: Record<string, string>;
  let crontabFile: string;
  let state: string;
  let knownHosts: string;
  let key: string;
  let recipe: string;

  beforeEach(() => {
    dir = temp();
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    crontabFile = join(dir, 'crontab.txt');
    writeFileSync(
      join(bin, 'crontab'),
      `#!/bin/sh
case "$1" in
  -l) if [ -f "$FAKE_CRONTAB" ]; then cat "$FAKE_CRONTAB"; else echo "no crontab for tester" >&2; exit 1; fi ;;
  -) cat > "$FAKE_CRONTAB.new"; if [ -s "$FAKE_CRONTAB.new" ] && [ "$(tail -c1 "$FAKE_CRONTAB.new" | od -An -c | tr -d ' ')" != '\\n' ]; then echo "new crontab file is missing newline before EOF, can't install." >&2; rm -f "$FAKE_CRONTAB.new"; exit 1; fi; mv "$FAKE_CRONTAB.new" "$FAKE_CRONTAB" ;;
  *) echo "unexpected crontab $*" >&2; exit 9 ;;
esac
`,
    );
    chmodSync(join(bin, 'crontab'), 0o755);
    state = join(dir, 'state');
    knownHosts = join(dir, 'known_hosts');
    // any well-formed key will do: add reads known_hosts and never connects
    key = join(dir, 'id_ed25519');
    const kg = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    if (kg.status !== 0) throw new Error(`ssh-keygen: ${kg.stderr}`);
    writeFileSync(knownHosts, `[127.0.0.1]:2299 ${readFileSync(`${key}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
    recipe = join(dir, 'r.yml');
    writeFileSync(
      recipe,
      'name: nightly-web\nvars:\n  token: { required: true, secret: true }\n  port: { type: number, default: 80 }\nsteps:\n  - name: Write\n    file: { path: /tmp/x, content: "{{ token }}" }\n',
    );
    env = { PATH: `${bin}:${process.env.PATH}`, FAKE_CRONTAB: crontabFile };
  });

  const cli = (args: string[]): Promise<CliResult> => hostsmith([...args, '--state-dir', state], { env, cwd: dir });
  const target = () => ['--hosts', 'root@127.0.0.1:2299', '--known-hosts', knownHosts, '--identity', key];

  it('add checks everything first: expression, name, vars, host keys — exit 2, naming the problem, crontab untouched', async () => {
    writeFileSync(crontabFile, '# mine\n');
    const cases: Array<[string[], RegExp]> = [
      [['--cron', '* * * * * *', '--var', 'token=abcdefgh'], /five fields/],
      [['--cron', '0 3 * * * L', '--var', 'token=abcdefgh'], /five fields/],
      [['--cron', '61 * * * *', '--var', 'token=abcdefgh'], /invalid cron schedule/],
      [['--cron', '@reboot', '--var', 'token=abcdefgh'], /@reboot/],
      [['--cron', '0 3 * * *'], /missing required var "token"/],
      [['--cron', '0 3 * * *', '--var', 'token=abcdefgh', '--var', 'port=eighty'], /port.*not a number/],
      [['--cron', '0 3 * * *', '--var', 'token=abcdefgh', '--name', 'Bad Name'], /lowercase letters/],
    ];
    const results = await Promise.all(cases.map(([extra]) => cli(['schedule', 'add', recipe, ...target(), ...extra])));
    cases.forEach(([extra, want], i) => {
      expect(results[i]!.code, `${extra.join(' ')}: ${results[i]!.stderr}`).toBe(2);
      expect(results[i]!.stderr).toMatch(want);
    });
    const unknownKey = await cli(['schedule', 'add', recipe, '--hosts', 'root@127.0.0.1:2298', '--known-hosts', knownHosts, '--identity', key, '--cron', '0 3 * * *', '--var', 'token=abcdefgh']);
    expect(unknownKey.code).toBe(2);
    expect(unknownKey.stderr).toMatch(/no host key for \[127\.0\.0\.1\]:2298 in .*known_hosts.*--accept-new-host-keys/);
    const noKey = await cli([
      'schedule',
      'add',
      recipe,
      '--hosts',
      'root@127.0.0.1:2299',
      '--known-hosts',
      knownHosts,
      '--identity',
      join(dir, 'missing-key'),
      '--cron',
      '0 3 * * *',
      '--var',
      'token=abcdefgh',
    ]);
    expect(noKey.code).toBe(2);
    expect(readFileSync(crontabFile, 'utf8')).toBe('# mine\n');
    expect(existsSync(join(state, 'schedules'))).toBe(false);
  });

  it('add → list → remove: one marked entry with absolute paths and no secret; the stored file holds the rest; remove restores the crontab byte for byte', async () => {
    const mine = 'MAILTO=""\n# my jobs\n\n0 1 * * * /usr/local/bin/backup\n';
    writeFileSync(crontabFile, mine);
    const add = await cli(['schedule', 'add', recipe, ...target(), '--cron', '*/10 * * * *', '--var', 'token=the-secret-token', '--on-failure', 'echo failed']);
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout).toMatch(/Schedule nightly-web added/);
    const tab = readFileSync(crontabFile, 'utf8');
    expect(tab.startsWith(mine)).toBe(true);
    const [marker, job, rest] = tab.slice(mine.length).split('\n');
    expect(marker).toBe('# hostsmith-schedule: nightly-web');
    expect(job).toBe(`*/10 * * * * ${process.execPath} ${join(ROOT, 'bin/hostsmith.js')} schedule run nightly-web --state-dir ${state}`);
    expect(rest).toBe('');
    expect(tab).not.toContain('the-secret-token');
    const stored = settingsFile(state, 'nightly-web');
    expect(statSync(stored).mode & 0o777).toBe(0o600);
    const s = readSettings(state, 'nightly-web');
    expect(s).toMatchObject({
      recipe,
      cron: '*/10 * * * *',
      onFailure: 'echo failed',
      cwd: dir,
      options: { hosts: 'root@127.0.0.1:2299', knownHosts, identity: key },
      vars: { cli: { token: 'the-secret-token' } },
    });

    const again = await cli(['schedule', 'add', recipe, ...target(), '--cron', '0 3 * * *', '--var', 'token=the-secret-token']);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists.*hostsmith schedule remove nightly-web/);

    const list = await cli(['schedule', 'list']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/nightly-web: recipe nightly-web .* on root@127\.0\.0\.1:2299/);
    expect(list.stdout).toMatch(/when: \*\/10 \* \* \* \* — Every 10 minutes/);
    expect(list.stdout).toMatch(/last run: none yet/);
    const json = await cli(['schedule', 'list', '--json']);
    expect(json.events).toHaveLength(1);
    expect(json.events[0]).toMatchObject({ name: 'nightly-web', cron: '*/10 * * * *', description: 'Every 10 minutes', inCrontab: true, lastRun: null, hosts: ['root@127.0.0.1:2299'] });
    const next = (json.events[0]!.next as string[]).map((d) => new Date(d).getTime());
    expect(next).toHaveLength(3);
    expect(next[1]! - next[0]!).toBe(600_000);
    expect(next[0]! - Date.now()).toBeLessThanOrEqual(600_000);
    expect(JSON.stringify(json.events)).not.toContain('the-secret-token');

    const rm = await cli(['schedule', 'remove', 'nightly-web']);
    expect(rm.code, rm.stderr).toBe(0);
    expect(readFileSync(crontabFile, 'utf8')).toBe(mine);
    expect(existsSync(stored)).toBe(false);
    const rm2 = await cli(['schedule', 'remove', 'nightly-web']);
    expect(rm2.code).toBe(2);
    expect(rm2.stderr).toMatch(/no schedule named nightly-web/);
  });

  it('fleet options are checked at add as apply checks them: a bad one is exit 2 naming it, the crontab untouched, nothing stored', async () => {
    writeFileSync(crontabFile, '# mine\n');
    const base = [...target(), '--cron', '0 3 * * *', '--var', 'token=abcdefgh'];
    const cases: Array<[string[], RegExp]> = [
      [['--batch', '0'], /--batch: "0" is not a number of hosts per batch/],
      [['--batch', 'two'], /--batch: "two" is not/],
      [['--batch', '150%'], /--batch: "150%" is not/],
      [['--max-fail', '1'], /--max-fail needs --batch/],
      [['--batch', '1', '--max-fail', '-1'], /--max-fail: "-1" is not/],
      [['--rollback-scope', 'world'], /--rollback-scope: "world" is not one of host, batch, fleet/],
      [['--confirm', 'soon'], /--confirm: "soon" is not a duration/],
      [['--plan-only', '--batch', '1', '--rollback-scope', 'fleet'], /--batch, --rollback-scope with --plan-only: .*changes nothing/],
    ];
    const results = await Promise.all(cases.map(([extra]) => cli(['schedule', 'add', recipe, ...base, ...extra])));
    cases.forEach(([extra, want], i) => {
      expect(results[i]!.code, `${extra.join(' ')}: ${results[i]!.stderr}`).toBe(2);
      expect(results[i]!.stderr, extra.join(' ')).toMatch(want);
    });
    expect(readFileSync(crontabFile, 'utf8')).toBe('# mine\n');
    expect(existsSync(join(state, 'schedules'))).toBe(false);
  });

  it('fleet options and --plan-only are stored and listed', async () => {
    const fleet = await cli([
      'schedule',
      'add',
      recipe,
      ...target(),
      '--cron',
      '@daily',
      '--name',
      'fleet',
      '--var',
      'token=abcdefgh',
      '--limit',
      'root@127.0.0.1:2299',
      '--batch',
      '50%',
      '--max-fail',
      '1',
      '--rollback-scope',
      'batch',
      '--confirm',
      '3m',
    ]);
    expect(fleet.code, fleet.stderr).toBe(0);
    expect(fleet.stdout).toMatch(/Each run applies with --batch 50% --max-fail 1 --rollback-scope batch --confirm 3m\./);
    expect(readSettings(state, 'fleet')).toMatchObject({ options: { limit: 'root@127.0.0.1:2299', batch: '50%', maxFail: '1', rollbackScope: 'batch', confirm: '3m' } });
    expect(readSettings(state, 'fleet').planOnly).toBeUndefined();
    const drift = await cli(['schedule', 'add', recipe, ...target(), '--cron', '@hourly', '--name', 'drift', '--var', 'token=abcdefgh', '--plan-only']);
    expect(drift.code, drift.stderr).toBe(0);
    expect(drift.stdout).toMatch(/Plan only: each run reads the hosts and changes nothing/);
    const stored = readSettings(state, 'drift');
    expect(stored.planOnly).toBe(true);
    expect(stored.options).not.toHaveProperty('batch');
    expect(readFileSync(crontabFile, 'utf8')).toMatch(/schedule run drift --state-dir \S+\n$/);

    const list = await cli(['schedule', 'list']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/drift: .*\n {2}when: .*\n {2}plan only: reads the hosts and changes nothing; drift .* fails the run, exit 2\n/);
    expect(list.stdout).toMatch(/fleet: .*\n {2}when: .*\n {2}fleet: --batch 50% --max-fail 1 --rollback-scope batch --confirm 3m\n/);
    expect(list.stdout.match(/plan only:/g)).toHaveLength(1);
    const json = await cli(['schedule', 'list', '--json']);
    expect(json.events.find((e) => e.name === 'drift')).toMatchObject({ planOnly: true, fleet: {} });
    expect(json.events.find((e) => e.name === 'fleet')).toMatchObject({ planOnly: false, fleet: { '--batch': '50%', '--max-fail': '1', '--rollback-scope': 'batch', '--confirm': '3m' } });
  });

  it('"no crontab for" is an empty crontab: add creates one, remove leaves it empty', async () => {
    const add = await cli(['schedule', 'add', recipe, ...target(), '--cron', '@daily', '--name', 'daily', '--var', 'token=the-secret-token']);
    expect(add.code, add.stderr).toBe(0);
    expect(readFileSync(crontabFile, 'utf8')).toMatch(/^# hostsmith-schedule: daily\n@daily .* schedule run daily --state-dir .*\n$/);
    expect((await cli(['schedule', 'remove', 'daily'])).code).toBe(0);
    expect(readFileSync(crontabFile, 'utf8')).toBe('');
  });

  it('cron refusing the new crontab: the error is said, the stored file is taken back', async () => {
    writeFileSync(crontabFile, '# mine\n');
    chmodSync(join(dir, 'bin', 'crontab'), 0o755);
    writeFileSync(join(dir, 'bin', 'crontab'), '#!/bin/sh\nif [ "$1" = -l ]; then cat "$FAKE_CRONTAB"; else echo "crontab: your crontab is not allowed" >&2; exit 1; fi\n');
    const add = await cli(['schedule', 'add', recipe, ...target(), '--cron', '@daily', '--var', 'token=the-secret-token']);
    expect(add.code).toBe(1);
    expect(add.stderr).toMatch(/cron refused the new crontab.*not allowed.*not changed/);
    expect(existsSync(settingsFile(state, 'nightly-web'))).toBe(false);
  });

  it('run while another run holds the lock: exit 0, "skipped: still running" naming the holder in its own log, nothing contacted', async () => {
    createSettings(state, settings('busy', { recipe, cwd: dir, options: { hosts: 'root@127.0.0.1:2299', knownHosts, identity: key } }));
    const holder = sleeper();
    try {
      writeFileSync(lockFile(state, 'busy'), JSON.stringify({ pid: holder.pid, start: procStart(holder.pid), host: hostname(), runId: 'the-holder-run', since: '2026-01-01T00:00:00Z' }));
      const r = await cli(['schedule', 'run', 'busy']);
      expect(r.code, r.stderr).toBe(0);
      const files = readdirSync(logsDir(state, 'busy')).sort();
      expect(files).toHaveLength(2);
      const id = files[0]!.replace(/\.events\.ndjson$/, '');
      expect(files).toEqual([`${id}.events.ndjson`, `${id}.log`]);
      const log = readFileSync(join(logsDir(state, 'busy'), `${id}.log`), 'utf8');
      expect(log).toMatch(/skipped: still running .*the-holder-run.*pid \d+/);
      expect(log).not.toMatch(/^\{/m);
      const events = readFileSync(join(logsDir(state, 'busy'), `${id}.events.ndjson`), 'utf8')
        .trim()
        .split('\n');
      expect(events.map((l) => JSON.parse(l).event)).toEqual(['schedule-skipped']);
      expect(events.join('\n')).not.toContain('run-started');
      expect(readFileSync(lockFile(state, 'busy'), 'utf8')).toContain('the-holder-run');
    } finally {
      holder.kill();
    }
  });

  it('run of an unknown schedule is exit 2 and says where it looked', async () => {
    const r = await cli(['schedule', 'run', 'ghost']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no schedule named ghost in .*schedules/);
  });
});
