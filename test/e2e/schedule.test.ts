/**
 * Scheduled runs under a real cron daemon (SPEC §11). The controller is this machine: Debian's
 * `cron` runs in a mount + pid namespace of its own, where /var/spool/cron, /etc/cron.d,
 * /etc/crontab and /run are private (tmpfs or an empty file), so it sees only the crontab this test
 * installs and never the machine's own crontabs or system jobs. The CLI reaches that crontab
 * through a `crontab` first on PATH that runs /usr/bin/crontab inside the namespace (nsenter).
 * Killing the namespace's first process ends cron and every job it started; the namespace and
 * its mounts go with them. Host state is checked with plain ssh (sshRun).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { run } from '../hosts/util.js';
import { hostsmith, sandboxArgs, type CliResult } from './cli.js';

const SECRET = 'sched-secret-Zq8rT4wPx';

/** The crontab the user already had: every byte of it must survive add and remove. */
const ORIGINAL = 'MAILTO=""\n# my own jobs -- keep\n\n17 3 * * * /bin/true   # nightly no-op\n\t# indented comment  \n';

interface CronNs {
  dir: string;
  /** The namespace's first process (its pid as this machine sees it). */
  init: number;
  /** A folder with the `crontab` that reaches into the namespace: put it first on PATH. */
  bin: string;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const alive = (pid: number) => existsSync(`/proc/${pid}`);

async function startCron(): Promise<CronNs> {
  if (!existsSync('/usr/sbin/cron') || !existsSync('/usr/bin/crontab')) {
    throw new Error("this test needs Debian's cron package on the controller (apt-get install cron); it is not installed");
  }
  const dir = mkdtempSync(join(tmpdir(), 'hostsmith-cron-'));
  writeFileSync(join(dir, 'empty-crontab'), '');
  writeFileSync(
    join(dir, 'ns.sh'),
    [
      'set -e',
      'mount -t tmpfs -o mode=0755 tmpfs /var/spool/cron',
      'mkdir -m 1730 /var/spool/cron/crontabs',
      'chgrp crontab /var/spool/cron/crontabs',
      'mount -t tmpfs -o mode=0755 tmpfs /etc/cron.d',
      `mount --bind '${dir}/empty-crontab' /etc/crontab`,
      'mount -t tmpfs -o mode=0755 tmpfs /run',
      `echo ready > '${dir}/ready'`,
      'cron -f -L 15 &',
      'wait',
    ].join('\n'),
  );
  // pdeathsig: if this test process dies, so does the namespace (and cron, and its jobs).
  const child: ChildProcess = spawn('setpriv', ['--pdeathsig', 'KILL', 'unshare', '--mount', '--pid', '--fork', '--kill-child', '--mount-proc', 'sh', join(dir, 'ns.sh')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const stop = async () => {
    const kids = child.pid ? childrenOf(child.pid) : [];
    for (const p of kids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    child.kill('SIGKILL');
    for (let i = 0; i < 100 && kids.some(alive); i++) await sleep(50);
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100 && !existsSync(join(dir, 'ready')); i++) await sleep(50);
  const init = child.pid ? childrenOf(child.pid)[0] : undefined;
  if (!existsSync(join(dir, 'ready')) || !init) {
    await stop();
    throw new Error(`the cron namespace did not start: ${stderr}`);
  }
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'crontab'), `#!/bin/sh\nexec nsenter -t ${init} -m -- /usr/bin/crontab "$@"\n`);
  chmodSync(join(bin, 'crontab'), 0o755);
  // cron itself is up once it runs inside the namespace
  for (let i = 0; i < 100 && !childrenOf(init).some((p) => comm(p) === 'cron'); i++) await sleep(50);
  if (!childrenOf(init).some((p) => comm(p) === 'cron')) {
    await stop();
    throw new Error(`cron did not start in its namespace: ${stderr}`);
  }
  return { dir, init, bin, stop };
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/** Every process's command line on this machine, as `ps -eo args` shows it. */
async function psArgs(): Promise<string> {
  return (await run('ps', ['-eo', 'args'])).stdout;
}

describeHosts('schedule: update jobs under a real cron daemon', () => {
  const sandbox = useSandbox(2);
  let cron: CronNs | undefined;
  const dirs: string[] = [];
  let work: string;
  let state: string;

  beforeAll(async () => {
    cron = await startCron();
    work = mkdtempSync(join(tmpdir(), 'hostsmith-sched-e2e-'));
    dirs.push(work);
    state = join(work, 'state');
    const r = await run(join(cron.bin, 'crontab'), ['-'], { input: ORIGINAL });
    if (r.code !== 0) throw new Error(`installing the starting crontab failed: ${r.stderr}`);
  });
  afterAll(async () => {
    await cron?.stop();
    if (cron) expect(alive(cron.init)).toBe(false);
    dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  });

  const crontab = async () => {
    const r = await run(join(cron!.bin, 'crontab'), ['-l']);
    return r.code === 0 ? r.stdout : '';
  };
  const cli = (args: string[]): Promise<CliResult> => hostsmith(args, { env: { PATH: `${cron!.bin}:${process.env.PATH}` }, cwd: work });
  const target = (host: string) => [...sandboxArgs(sandbox(), state), '--hosts', host];
  const recipe = (file: string, body: string) => {
    writeFileSync(join(work, file), body);
    return join(work, file);
  };
  const logsOf = (name: string): string[] => {
    try {
      return readdirSync(join(state, 'logs', name))
        .filter((f) => f.endsWith('.log'))
        .sort()
        .map((f) => join(state, 'logs', name, f));
    } catch {
      return [];
    }
  };
  /** A run's JSON events: the file beside its .log. */
  const eventsPath = (log: string) => log.replace(/\.log$/, '.events.ndjson');
  const eventsText = (log: string) => (existsSync(eventsPath(log)) ? readFileSync(eventsPath(log), 'utf8') : '');
  const finished = (file: string) => eventsText(file).includes('"event":"schedule-finished"');
  /** Lines of a file that parse as JSON objects, and lines that do not (blank lines left out). */
  const jsonSplit = (text: string) => {
    const json: Array<Record<string, any>> = [];
    const other: string[] = [];
    for (const l of text.split('\n').filter((x) => x.trim())) {
      try {
        const v = JSON.parse(l);
        if (v && typeof v === 'object') json.push(v);
        else other.push(l);
      } catch {
        other.push(l);
      }
    }
    return { json, other };
  };
  /** The log is text only, the events file JSON only, ending with the schedule's outcome. */
  const expectSplitLog = (log: string) => {
    const text = jsonSplit(readFileSync(log, 'utf8'));
    expect(text.json, `JSON lines in ${log}`).toEqual([]);
    expect(text.other.length).toBeGreaterThan(0);
    const ev = jsonSplit(eventsText(log));
    expect(ev.other, `non-JSON lines in ${eventsPath(log)}`).toEqual([]);
    expect(ev.json.length).toBeGreaterThan(0);
    return ev.json;
  };
  const runIdOf = (log: string) =>
    log
      .split('/')
      .pop()!
      .replace(/\.log$/, '');

  it("cron runs the schedule: a log per run, the host in the recipe's state, list shows exit 0; a failing one runs --on-failure; remove keeps the rest of the crontab; the secret is in neither the crontab nor ps", {
    timeout: 200_000,
  }, async () => {
    const sb = sandbox();
    const [h1, h2] = sb.hosts;
    const ok = recipe(
      'ok.yml',
      `name: sched-ok\nvars:\n  token: { required: true, secret: true }\n  greeting: { default: hello }\nsteps:\n  - name: Write\n    file: { path: /etc/sched-e2e/ok.txt, content: "{{ greeting }} from cron\\n", mode: "0644" }\n  - name: Secret file\n    file: { path: /etc/sched-e2e/token, content: "{{ token }}\\n", mode: "0600" }\n`,
    );
    const fails = recipe(
      'fails.yml',
      `name: sched-fails\nsteps:\n  - name: Marker\n    file: { path: /etc/sched-e2e/marker.txt, content: "rolled back?\\n" }\n  - name: Breaks\n    command: { run: "echo 'disk on fire' >&2; exit 3" }\n`,
    );
    const failEnv = join(work, 'on-failure.env');
    for (const h of [h1!, h2!]) expect((await sshRun(sb, h, 'mkdir -p /etc/sched-e2e')).code).toBe(0);

    const addOk = await cli(['schedule', 'add', ok, '--cron', '* * * * *', '--name', 'every-minute', '--var', `token=${SECRET}`, '--var', 'greeting=hi', ...target(h1!.name)]);
    expect(addOk.code, addOk.stderr).toBe(0);
    const addFails = await cli(['schedule', 'add', fails, '--cron', '* * * * *', '--on-failure', `env | grep '^HOSTSMITH_' | sort > '${failEnv}'`, ...target(h2!.name)]);
    expect(addFails.code, addFails.stderr).toBe(0);

    const tab = await crontab();
    expect(tab.startsWith(ORIGINAL)).toBe(true);
    expect(tab).toContain('# hostsmith-schedule: every-minute\n* * * * * ');
    expect(tab).toContain('# hostsmith-schedule: sched-fails\n* * * * * ');
    expect(tab).toMatch(new RegExp(`schedule run every-minute --state-dir ${state}\\n`));
    expect(tab).not.toContain(SECRET);

    // Wait for cron's first run of both (the next minute, plus the run), watching the process list.
    let sawRun = false;
    const deadline = Date.now() + 130_000;
    while (Date.now() < deadline) {
      const ps = await psArgs();
      expect(ps).not.toContain(SECRET);
      if (/schedule run every-minute/.test(ps)) sawRun = true;
      const a = logsOf('every-minute');
      const b = logsOf('sched-fails');
      if (a.length && b.length && finished(a[0]!) && finished(b[0]!) && existsSync(failEnv)) break;
      await sleep(250);
    }
    const okLogs = logsOf('every-minute');
    const failLogs = logsOf('sched-fails');
    expect(okLogs.length, `no run of every-minute by cron within the wait; crontab:\n${await crontab()}`).toBeGreaterThan(0);
    expect(sawRun, 'the scheduled run never showed in ps, so the process-list check saw nothing').toBe(true);

    // The first run's log: human text; its JSON events beside it; the secret masked in both.
    const log = readFileSync(okLogs[0]!, 'utf8');
    const runId = runIdOf(okLogs[0]!);
    expect(log).toContain(`Apply: recipe sched-ok on ${h1!.name} (run ${runId})`);
    const okEvents = expectSplitLog(okLogs[0]!);
    expect(okEvents.find((e) => e.event === 'run-finished')).toMatchObject({ runId, exitCode: 0 });
    expect(okEvents.at(-1)).toMatchObject({ event: 'schedule-finished', status: 'ok', exitCode: 0, log: okLogs[0], events: eventsPath(okLogs[0]!) });
    expect(log).not.toContain(SECRET);
    expect(eventsText(okLogs[0]!)).not.toContain(SECRET);
    // The host, read with plain ssh.
    expect((await sshRun(sb, h1!, 'cat /etc/sched-e2e/ok.txt')).stdout).toBe('hi from cron\n');
    expect((await sshRun(sb, h1!, 'cat /etc/sched-e2e/token')).stdout).toBe(`${SECRET}\n`);

    // list: the last run's time, status and exit code, and the next three runs, a minute apart.
    const list = await cli(['schedule', 'list', '--state-dir', state]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`every-minute: recipe sched-ok .* on ${h1!.name}`));
    expect(list.stdout).toMatch(/when: \* \* \* \* \* — Every minute/);
    expect(list.stdout).toMatch(/last run: \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? ok, exit 0/);
    expect(list.stdout).toMatch(/sched-fails: .*\n(.*\n)*? {2}last run: .* rolled-back, exit 1/);
    const json = await cli(['schedule', 'list', '--state-dir', state, '--json']);
    const every = json.events.find((e) => e.name === 'every-minute')!;
    expect(every.lastRun).toMatchObject({ status: 'ok', exitCode: 0 });
    expect(every.next).toHaveLength(3);
    expect(new Date(every.next[1]).getTime() - new Date(every.next[0]).getTime()).toBe(60_000);
    expect(json.stdout).not.toContain(SECRET);

    // The failing schedule: rolled back on the host, exit 1, and --on-failure ran with the documented variables.
    expect(failLogs.length).toBeGreaterThan(0);
    const failLog = readFileSync(failLogs[0]!, 'utf8');
    const failId = runIdOf(failLogs[0]!);
    expect(expectSplitLog(failLogs[0]!).at(-1)).toMatchObject({ event: 'schedule-finished', status: 'rolled-back', exitCode: 1 });
    expect(failLog).toMatch(/disk on fire/);
    expect(failLog).toMatch(/the --on-failure command exited 0/);
    expect((await sshRun(sb, h2!, 'test -e /etc/sched-e2e/marker.txt && echo present || echo absent')).stdout).toBe('absent\n');
    expect(readFileSync(failEnv, 'utf8')).toBe([`HOSTSMITH_EXIT_CODE=1`, `HOSTSMITH_LOG=${failLogs[0]}`, `HOSTSMITH_RUN_ID=${failId}`, `HOSTSMITH_SCHEDULE=sched-fails`].join('\n') + '\n');

    // The user edits the crontab after add (a job below ours); remove takes only our two lines.
    const edited = (await crontab()) + '# added later by hand\n*/7 * * * * /bin/true\n';
    expect((await run(join(cron!.bin, 'crontab'), ['-'], { input: edited })).code).toBe(0);
    for (const name of ['every-minute', 'sched-fails']) {
      const rm = await cli(['schedule', 'remove', name, '--state-dir', state]);
      expect(rm.code, rm.stderr).toBe(0);
      expect(rm.stdout).toMatch(new RegExp(`Schedule ${name} removed`));
      expect(existsSync(join(state, 'schedules', `${name}.yml`))).toBe(false);
    }
    expect(await crontab()).toBe(`${ORIGINAL}# added later by hand\n*/7 * * * * /bin/true\n`);
    const again = await cli(['schedule', 'remove', 'every-minute', '--state-dir', state]);
    expect(again.code).toBe(2);
  });

  it('two overlapping runs: the second logs "skipped: still running" and exits 0; the secret is not in ps while the run goes', { timeout: 120_000 }, async () => {
    const sb = sandbox();
    const h1 = sb.hosts[0]!;
    const slow = recipe(
      'slow.yml',
      `name: sched-slow\nvars:\n  token: { required: true, secret: true }\nsteps:\n  - name: Takes a while\n    command: { run: "sleep 8; echo done > /etc/sched-e2e/slow.txt", creates: /etc/sched-e2e/slow.txt }\n  - name: Secret\n    file: { path: /etc/sched-e2e/slow-token, content: "{{ token }}\\n", mode: "0600" }\n`,
    );
    expect((await sshRun(sb, h1, 'mkdir -p /etc/sched-e2e && rm -f /etc/sched-e2e/slow.txt /etc/sched-e2e/slow-token')).code).toBe(0);
    const before = await crontab();
    // Never due while the test runs: both runs are started by hand.
    const add = await cli(['schedule', 'add', slow, '--cron', '0 0 1 1 *', '--var', `token=${SECRET}`, ...target(h1.name)]);
    expect(add.code, add.stderr).toBe(0);
    try {
      const first = cli(['schedule', 'run', 'sched-slow', '--state-dir', state]);
      const lock = join(state, 'schedules', 'sched-slow.lock');
      for (let i = 0; i < 200 && !existsSync(lock); i++) await sleep(50);
      expect(existsSync(lock), 'the first run never took its lock').toBe(true);
      // while the first run goes: the secret is in no process's arguments
      let sawRun = false;
      for (let i = 0; i < 5; i++) {
        const ps = await psArgs();
        expect(ps).not.toContain(SECRET);
        if (ps.includes('schedule run sched-slow')) sawRun = true;
        await sleep(200);
      }
      expect(sawRun).toBe(true);
      const second = await cli(['schedule', 'run', 'sched-slow', '--state-dir', state]);
      expect(second.code, second.stderr).toBe(0);
      const one = await first;
      expect(one.code, one.stderr).toBe(0);

      const files = logsOf('sched-slow');
      const logs = files.map((f) => readFileSync(f, 'utf8'));
      expect(logs).toHaveLength(2);
      const events = files.map((f) => expectSplitLog(f));
      const skipped = logs.filter((l) => l.includes('skipped: still running'));
      const ran = events.filter((ev) => ev.some((e) => e.event === 'run-finished'));
      expect(skipped).toHaveLength(1);
      expect(ran).toHaveLength(1);
      const firstId = ran[0]!.at(-1)!.runId as string;
      expect(skipped[0]).toContain(`run ${firstId}`);
      expect(events.find((ev) => ev !== ran[0])!.map((e) => e.event)).toEqual(['schedule-skipped']);
      expect(ran[0]!.at(-1)).toMatchObject({ event: 'schedule-finished', status: 'ok', exitCode: 0 });
      expect([...logs, ...files.map(eventsText)].join('\n')).not.toContain(SECRET);
      expect((await sshRun(sb, h1, 'cat /etc/sched-e2e/slow.txt')).stdout).toBe('done\n');
      expect(existsSync(lock)).toBe(false);

      const list = await cli(['schedule', 'list', '--state-dir', state, '--json']);
      expect(list.events.find((e) => e.name === 'sched-slow')?.lastRun).toMatchObject({ runId: firstId, status: 'ok', exitCode: 0 });
    } finally {
      await cli(['schedule', 'remove', 'sched-slow', '--state-dir', state]);
    }
    expect(await crontab()).toBe(before);
  });

  it('a plan-only schedule: on a converged host exit 0 and no --on-failure; after drift exit 2, --on-failure with the documented variables, and nothing changed on the host', {
    timeout: 120_000,
  }, async () => {
    const sb = sandbox();
    const h1 = sb.hosts[0]!;
    const file = '/etc/sched-e2e/drift/app.conf';
    const drift = recipe('drift.yml', `name: sched-drift\nsteps:\n  - name: App config\n    file: { path: ${file}, content: "port = 8080\\n", mode: "0644" }\n`);
    const failEnv = join(work, 'drift-failure.env');
    // The host starts converged: the file as the recipe wants it, put there with plain ssh.
    await sshOk(sb, h1, `rm -rf /etc/sched-e2e/drift && mkdir -p /etc/sched-e2e/drift && printf 'port = 8080\\n' > ${file} && chmod 0644 ${file}`);
    const before = await crontab();
    const add = await cli([
      'schedule',
      'add',
      drift,
      '--cron',
      '0 0 1 1 *',
      '--plan-only',
      '--on-failure',
      `env | grep -E '^HOSTSMITH_(SCHEDULE|RUN_ID|EXIT_CODE|LOG)=' | sort > '${failEnv}'`,
      ...target(h1.name),
    ]);
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout).toMatch(/Plan only: each run reads the hosts and changes nothing/);
    // The same crontab line as any schedule: what it does is in the settings file.
    expect(await crontab()).toMatch(/# hostsmith-schedule: sched-drift\n0 0 1 1 \* .* schedule run sched-drift --state-dir \S+\n$/);
    // What the host's folder looks like, to the nanosecond: a plan must leave all of it as it is.
    const snapshot = () => sshOk(sb, h1, 'find /etc/sched-e2e/drift -printf "%p %m %U:%G %s %T@ %C@\\n" | sort; md5sum /etc/sched-e2e/drift/*');
    try {
      const converged = await cli(['schedule', 'run', 'sched-drift', '--state-dir', state]);
      expect(converged.code, converged.stderr).toBe(0);
      expect(existsSync(failEnv), 'the converged run fired --on-failure').toBe(false);
      const [firstLog] = logsOf('sched-drift');
      const firstEvents = expectSplitLog(firstLog!);
      expect(firstEvents.find((e) => e.event === 'run-started')).toMatchObject({ mode: 'plan' });
      expect(firstEvents.at(-1)).toMatchObject({ event: 'schedule-finished', status: 'in-sync', exitCode: 0, planOnly: true });
      expect(readFileSync(firstLog!, 'utf8')).not.toMatch(/running the --on-failure command/);

      // Drift on the host (plain ssh), then the scheduled plan.
      await sshOk(sb, h1, `printf 'port = 9999\\n' > ${file}`);
      const drifted = await snapshot();
      const run2 = await cli(['schedule', 'run', 'sched-drift', '--state-dir', state]);
      expect(run2.code, run2.stderr).toBe(2);
      expect(run2.stderr).toMatch(/schedule sched-drift: run \S+ drifted, exit 2/);
      expect(await snapshot()).toBe(drifted);
      expect(await sshOk(sb, h1, `cat ${file}`)).toBe('port = 9999\n');

      const logs = logsOf('sched-drift');
      expect(logs).toHaveLength(2);
      // The drifted run's own log, by its run id: two runs in the same second sort by their ids'
      // random part, not by when they ran.
      const runId = /run (\S+) drifted/.exec(run2.stderr)![1]!;
      const log = logs.find((l) => runIdOf(l) === runId)!;
      expect(log, `no log of run ${runId} among ${logs.join(', ')}`).toBeDefined();
      const events = expectSplitLog(log);
      expect(events.find((e) => e.event === 'run-started')).toMatchObject({ runId, mode: 'plan' });
      expect(events.find((e) => e.event === 'step-finished' && e.step === 'App config')).toMatchObject({ status: 'planned' });
      expect(events.some((e) => e.event === 'step-finished' && e.status === 'changed')).toBe(false);
      expect(events.at(-1)).toMatchObject({ event: 'schedule-finished', runId, status: 'drifted', exitCode: 2, planOnly: true, log });
      const text = readFileSync(log, 'utf8');
      expect(text).toMatch(/-port = 9999\n\s*\+port = 8080/);
      expect(text).toMatch(/running the --on-failure command/);
      expect(readFileSync(failEnv, 'utf8')).toBe([`HOSTSMITH_EXIT_CODE=2`, `HOSTSMITH_LOG=${log}`, `HOSTSMITH_RUN_ID=${runId}`, `HOSTSMITH_SCHEDULE=sched-drift`].join('\n') + '\n');

      const list = await cli(['schedule', 'list', '--state-dir', state]);
      expect(list.code, list.stderr).toBe(0);
      expect(list.stdout).toMatch(/sched-drift: .*\n {2}when: .*\n {2}plan only: reads the hosts and changes nothing/);
      expect(list.stdout).toMatch(new RegExp(`sched-drift: (.*\\n)*? {2}last run: .* drifted, exit 2 \\(run ${runId};`));
      const json = await cli(['schedule', 'list', '--state-dir', state, '--json']);
      expect(json.events.find((e) => e.name === 'sched-drift')).toMatchObject({ planOnly: true, lastRun: { runId, status: 'drifted', exitCode: 2 } });
    } finally {
      await cli(['schedule', 'remove', 'sched-drift', '--state-dir', state]);
    }
    expect(await crontab()).toBe(before);
  });

  it('fleet options: a bad --batch at add is exit 2 and no crontab entry; --batch 1 --max-fail 0 is stored, and when the first host fails the second is never touched', {
    timeout: 120_000,
  }, async () => {
    const sb = sandbox();
    const [h1, h2] = [sb.hosts[0]!, sb.hosts[1]!];
    const fleet = recipe(
      'fleet.yml',
      `name: sched-fleet\nsteps:\n  - name: Marker\n    file: { path: /etc/sched-e2e/fleet/marker.txt, content: "was here\\n" }\n  - name: Refuses where told to\n    command: { run: "if [ -e /etc/sched-e2e/fleet/fail-here ]; then echo 'refusing on this host' >&2; exit 1; fi" }\n`,
    );
    for (const h of [h1, h2]) await sshOk(sb, h, 'rm -rf /etc/sched-e2e/fleet && mkdir -p /etc/sched-e2e/fleet');
    await sshOk(sb, h1, 'touch /etc/sched-e2e/fleet/fail-here');
    const hosts = [...sandboxArgs(sb, state), '--hosts', `${h1.name},${h2.name}`];
    const before = await crontab();

    const bad = await cli(['schedule', 'add', fleet, '--cron', '0 0 1 1 *', '--name', 'sched-fleet', ...hosts, '--batch', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--batch: "0" is not a number of hosts per batch/);
    expect(await crontab()).toBe(before);
    expect(existsSync(join(state, 'schedules', 'sched-fleet.yml'))).toBe(false);

    const add = await cli(['schedule', 'add', fleet, '--cron', '0 0 1 1 *', '--name', 'sched-fleet', ...hosts, '--batch', '1', '--max-fail', '0']);
    expect(add.code, add.stderr).toBe(0);
    try {
      const stored = readFileSync(join(state, 'schedules', 'sched-fleet.yml'), 'utf8');
      expect(stored).toMatch(/^ {2}batch: "1"$/m);
      expect(stored).toMatch(/^ {2}maxFail: "0"$/m);
      const r = await cli(['schedule', 'run', 'sched-fleet', '--state-dir', state]);
      expect(r.code, r.stderr).toBe(1);
      // h1 failed and was rolled back; h2, in the second batch, was never touched.
      expect(await sshOk(sb, h1, 'ls -A /etc/sched-e2e/fleet')).toBe('fail-here\n');
      expect(await sshOk(sb, h2, 'ls -A /etc/sched-e2e/fleet')).toBe('');
      const [log] = logsOf('sched-fleet');
      const events = expectSplitLog(log!);
      expect(events.find((e) => e.event === 'host-finished' && e.host === h1.name)).toMatchObject({ status: 'rolled-back' });
      expect(events.find((e) => e.event === 'host-finished' && e.host === h2.name)).toMatchObject({ status: 'not-started' });
      expect(events.some((e) => e.event === 'host-connected' && e.host === h2.name)).toBe(false);
      expect(events.at(-1)).toMatchObject({ event: 'schedule-finished', exitCode: 1 });
      expect(readFileSync(log!, 'utf8')).toMatch(/refusing on this host/);
    } finally {
      await cli(['schedule', 'remove', 'sched-fleet', '--state-dir', state]);
    }
    expect(await crontab()).toBe(before);
  });
});
