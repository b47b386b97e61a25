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
import { sshRun } from '../hosts/ssh.js';
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
  const finished = (file: string) => readFileSync(file, 'utf8').includes('"event":"schedule-finished"');

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

    // The first run's log: human text and JSON events, the secret masked.
    const log = readFileSync(okLogs[0]!, 'utf8');
    const runId = okLogs[0]!
      .split('/')
      .pop()!
      .replace(/\.log$/, '');
    expect(log).toContain(`Apply: recipe sched-ok on ${h1!.name} (run ${runId})`);
    expect(log).toMatch(/"event":"run-finished".*"exitCode":0/);
    expect(log).toMatch(/"event":"schedule-finished".*"status":"ok","exitCode":0/);
    expect(log).not.toContain(SECRET);
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
    const failId = failLogs[0]!
      .split('/')
      .pop()!
      .replace(/\.log$/, '');
    expect(failLog).toMatch(/"event":"schedule-finished".*"status":"rolled-back","exitCode":1/);
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

      const logs = logsOf('sched-slow').map((f) => readFileSync(f, 'utf8'));
      expect(logs).toHaveLength(2);
      const skipped = logs.filter((l) => l.includes('skipped: still running'));
      const ran = logs.filter((l) => l.includes('"event":"run-finished"'));
      expect(skipped).toHaveLength(1);
      expect(ran).toHaveLength(1);
      const firstId = /run (\S+) started/.exec(ran[0]!)![1]!;
      expect(skipped[0]).toContain(`run ${firstId}`);
      expect(skipped[0]).not.toContain('run-started');
      expect(ran[0]).toMatch(/"event":"schedule-finished".*"status":"ok","exitCode":0/);
      expect(logs.join('\n')).not.toContain(SECRET);
      expect((await sshRun(sb, h1, 'cat /etc/sched-e2e/slow.txt')).stdout).toBe('done\n');
      expect(existsSync(lock)).toBe(false);

      const list = await cli(['schedule', 'list', '--state-dir', state, '--json']);
      expect(list.events.find((e) => e.name === 'sched-slow')?.lastRun).toMatchObject({ runId: firstId, status: 'ok', exitCode: 0 });
    } finally {
      await cli(['schedule', 'remove', 'sched-slow', '--state-dir', state]);
    }
    expect(await crontab()).toBe(before);
  });
});
