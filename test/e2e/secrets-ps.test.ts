/**
 * A secret never shows in the host's process list, during every kind of run (SPEC §5): what any
 * local user of the host could read. While each run goes on, the unprivileged user `nosudo`
 * samples `ps -eww` (every process's full command line, from /proc/<pid>/cmdline) in a tight loop
 * over one long-lived plain OpenSSH connection, and no sample may hold the value (as is, or in any
 * base64 alignment, since scripts can travel base64-encoded). The recipe puts the secret where it
 * reaches a host-side shell: a command's `run`, its `rollback` and its `env`, and a file's content.
 * Kinds of run: apply; a rollback inside the run (a later step fails); `undo` of a finished run;
 * `recover` after the controller is SIGKILLed during a secret-bearing command; the `--confirm`
 * watchdog rolling back on the host by itself (the run's link cut, verify failing); and the
 * controller's own rollback after a failing `verify`. Each sample set must show the run's own
 * `sleep` (the sampler did see the commands that carried the secret).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { sshArgs, sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, type CliResult } from './cli.js';

const SECRET = `Sekr1t-${randomBytes(8).toString('hex')}`;

const RECIPE = `name: secretps
vars:
  token: { required: true, secret: true }
  # non-empty: a second secret-bearing command that sleeps this long (the controller is killed in it)
  wait: { default: "" }
  # non-empty: a last step that fails, so the run rolls back
  fail: { default: "" }
  # the verify command's tail: "false" makes verification fail under --confirm
  check: { default: "true" }
steps:
  - name: Token file
    file: { path: /root/tok.conf, content: "token={{token}}\\n", mode: "0600" }
  - name: Token command
    command:
      run: "sleep 1.1; printf %s '{{token}}' > /root/tok; printf %s \\"$TOKEN\\" > /root/tok.env"
      rollback: "sleep 1.2; [ \\"$TOKEN\\" = '{{token}}' ] && rm -f /root/tok /root/tok.env # {{token}}"
      env: { TOKEN: "{{token}}" }
  - name: Token wait
    command: { run: "sleep {{wait}}; : '{{token}}'", env: { TOKEN: "{{token}}" }, rollback: "true" }
    when: "{{wait}}"
  - name: Fail
    command: { run: "exit 1" }
    when: "{{fail}}"
verify:
  - '[ "$(cat /root/tok)" = ''{{token}}'' ] && {{check}}'
`;

/** The forms the value could take on a command line: as is, and base64 at each of the three byte alignments. */
function forms(secret: string): string[] {
  const out = [secret];
  for (let j = 0; j < 3; j++) {
    const part = secret.slice(j);
    const whole = part.slice(0, part.length - (part.length % 3));
    out.push(Buffer.from(whole).toString('base64'));
  }
  return out;
}

/** Where samples end: the loop prints this line after each `ps`. */
const SEP = '@@sample@@';

/**
 * The host's process list, sampled as `nosudo` every ~30 ms over one ssh connection until
 * stopped. Each line: pid, parent pid, user, the full command line. The loop ends by itself when its output
 * goes (the connection closed: its next write fails).
 */
class Sampler {
  private child: ChildProcess;
  private out = '';
  private err = '';
  private closed: Promise<void>;

  constructor(target: Parameters<typeof sshArgs>[0]) {
    const loop = `while ps -eww -o pid=,ppid=,user:10=,args= && echo ${SEP}; do sleep 0.03; done`;
    this.child = spawn('/usr/bin/ssh', [...sshArgs(target, 'nosudo'), '--', loop], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.out += d.toString('utf8')));
    this.child.stderr!.on('data', (d: Buffer) => (this.err += d.toString('utf8')));
    this.closed = new Promise((res) => this.child.on('close', () => res()));
  }

  /** Resolves once at least `n` samples have arrived (the loop runs as nosudo). */
  async started(n = 2): Promise<void> {
    for (let i = 0; i < 200 && this.samples().length < n; i++) await new Promise((r) => setTimeout(r, 50));
    if (this.samples().length < n) throw new Error(`the ps sampler did not start: ${this.err}`);
  }

  samples(): string[] {
    return this.out.split(`${SEP}\n`).slice(0, -1);
  }

  /** Stops the sampler (a few more samples first) and returns every complete sample. */
  async stop(): Promise<string[]> {
    await new Promise((r) => setTimeout(r, 300));
    this.child.kill('SIGTERM');
    await this.closed;
    return this.samples();
  }
}

const runIdOf = (r: CliResult): string => {
  const id = r.events.find((e) => e.event === 'run-started')?.runId ?? /\(run ([^)\s]+)\)/.exec(r.stdout + r.stderr)?.[1];
  if (!id) throw new Error(`no run id in:\n${r.stdout}${r.stderr}`);
  return id;
};

const all = (r: CliResult) => r.stdout + r.stderr;

describeHosts('secrets: never in the host process list as another user sees it, in any kind of run', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  const host = () => sandbox().hosts[0]!;
  const target = () => ({ address: host().address, port: host().port, keyPath: sandbox().keyPath, knownHostsPath: sandbox().knownHostsPath });
  const recipe = () => join(dir, 'secretps.yml');
  const apply = (a: string[], o: Parameters<typeof hostsmith>[1] = {}) =>
    hostsmith(['apply', recipe(), ...sandboxArgs(sandbox(), state), '--hosts', host().name, '--yes', '--json', '--var', `token=${SECRET}`, ...a], o);
  const tokFiles = () => sshOk(sandbox(), host(), 'ls /root/tok /root/tok.env /root/tok.conf 2>/dev/null; true');

  /** Runs `body` with the sampler on; then: samples taken, `sleeps` seen in them, no form of the secret in any. */
  async function sampled<T>(kind: string, sleeps: string[], body: () => Promise<T>): Promise<T> {
    const sampler = new Sampler(target());
    await sampler.started();
    let samples: string[] = [];
    let result: T;
    try {
      result = await body();
    } finally {
      samples = await sampler.stop();
    }
    // Soft: a leak fails the test, yet the case goes on to put the host back for the next ones.
    expect.soft(samples.length, `${kind}: samples`).toBeGreaterThan(10);
    const seen = samples.join('');
    const missing = sleeps.filter((s) => !new RegExp(`^ *\\d+ +\\d+ +root +sleep ${s.replace('.', '\\.')}$`, 'm').test(seen));
    expect.soft(missing, `${kind}: sleeps the sampler never saw in ${samples.length} samples`).toEqual([]);
    const leaked = new Set<string>();
    for (const form of forms(SECRET)) for (const line of seen.split('\n')) if (line.includes(form)) leaked.add(line);
    expect.soft([...leaked], `${kind}: process lines (pid ppid user args) holding the secret, as nosudo saw them in ${samples.length} samples`).toEqual([]);
    return result!;
  }

  beforeAll(() => {
    dir = fixture({ 'secretps.yml': RECIPE });
    state = join(dir, 'state');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(async () => {
    await sshOk(sandbox(), host(), 'rm -f /root/tok /root/tok.env /root/tok.conf; rm -rf /var/lib/hostsmith/watchdog/*');
  });

  it('apply: the secret in a command run, its env and a file content', async () => {
    const r = await sampled('apply', ['1.1'], () => apply([]));
    expect(r.code, all(r)).toBe(0);
    // The command got the value both ways, and the file holds it.
    expect(await sshOk(sandbox(), host(), 'cat /root/tok; echo; cat /root/tok.env; echo; cat /root/tok.conf')).toBe(`${SECRET}\n${SECRET}\ntoken=${SECRET}\n`);
  }, 60_000);

  it('a rollback inside the run: a later step fails, the command rollback runs', async () => {
    const r = await sampled('in-run rollback', ['1.1', '1.2'], () => apply(['--var', 'fail=1']));
    expect(r.code, all(r)).toBe(1);
    expect(r.events.filter((e) => e.event === 'rollback-finished').map((e) => `${e.step}: ${e.status}`)).toEqual(['Token command: rolled-back', 'Token file: rolled-back']);
    expect(await tokFiles()).toBe('');
  }, 60_000);

  it('undo of a finished apply: the secret given again, the command rollback runs', async () => {
    const a = await apply([]);
    expect(a.code, all(a)).toBe(0);
    const runId = runIdOf(a);
    const u = await sampled('undo', ['1.2'], () => hostsmith(['undo', runId, '--yes', '--var', `token=${SECRET}`, '--state-dir', state]));
    expect(u.code, all(u)).toBe(0);
    expect(u.stdout).toMatch(/h1: ok: put back 2 change\(s\)/);
    expect(await tokFiles()).toBe('');
  }, 60_000);

  it('recover after SIGKILL of the controller in a secret-bearing command: the command rollback runs', async () => {
    const runs = () => (existsSync(join(state, 'runs')) ? readdirSync(join(state, 'runs')).map((f) => f.replace(/\.ndjson$/, '')) : []);
    const entries = (id: string) =>
      readFileSync(join(state, 'runs', `${id}.ndjson`), 'utf8')
        .split('\n')
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as Record<string, any>];
          } catch {
            return [];
          }
        });
    const known = new Set(runs());
    let runId: string | undefined;
    const killed = await sampled('apply killed in its command', ['1.1', '6.3'], async () => {
      let pid = 0;
      const r = apply(['--var', 'wait=6.3'], { onSpawn: (c) => (pid = c.pid!) });
      for (let i = 0; i < 400; i++) {
        runId = runs().find((id) => !known.has(id));
        if (runId && entries(runId).some((e) => e.kind === 'step-started' && e.step === 'Token wait')) break;
        await new Promise((res) => setTimeout(res, 25));
      }
      await new Promise((res) => setTimeout(res, 700)); // its `sleep 6.3` runs on the host, seen by the sampler
      process.kill(pid, 'SIGKILL');
      return r;
    });
    expect(killed.code, all(killed)).toBe(-1);
    expect(runId).toBeDefined();
    expect(entries(runId!).some((e) => e.kind === 'run-finished')).toBe(false);

    const rec = await sampled('recover', ['1.2'], () => hostsmith(['recover', runId!, '--yes', '--var', `token=${SECRET}`, '--state-dir', state]));
    expect(rec.code, all(rec)).toBe(0);
    expect(rec.stdout).toMatch(/stopped \d command\(s\) the run had left running \(.*sleep 6\.3/);
    expect(rec.stdout).toMatch(/found unchanged: Token wait/);
    expect(rec.stdout).toMatch(/recovered \(exit 0\)/);
    expect(await tokFiles()).toBe('');
  }, 90_000);

  it('--confirm: the watchdog rolls back on the host by itself (link cut, verify failing)', async () => {
    const r = await sampled('watchdog rollback on the host', ['1.1', '1.2'], () => apply(['--confirm', '5s', '--var', 'check=false'], { env: { HOSTSMITH_FAULT_CUT_AFTER_ARM: '1' } }));
    expect(r.code, all(r)).toBe(1);
    expect(r.events.filter((e) => e.event === 'watchdog').map((e) => e.what)).toEqual(['armed', 'waiting', 'fired']);
    const fired = r.events.find((e) => e.event === 'watchdog' && e.what === 'fired')!;
    expect(fired.message).toMatch(/rolled the host back by itself: rolled-back/);
    expect(await tokFiles()).toBe('');
    expect(await sshOk(sandbox(), host(), `ps -eo args | grep '[w]atchdog.sh'; ls -A /var/lib/hostsmith/watchdog 2>/dev/null; true`)).toBe('');
  }, 90_000);

  it('--confirm: a failing verify, the controller rolls back with the watchdog armed', async () => {
    const r = await sampled('verify failed, controller rollback', ['1.1', '1.2'], () => apply(['--confirm', '20s', '--var', 'check=false']));
    expect(r.code, all(r)).toBe(1);
    expect(r.events.filter((e) => e.event === 'watchdog').map((e) => e.what)).toEqual(['armed', 'disarmed']);
    expect(await tokFiles()).toBe('');
  }, 60_000);

  it('after an apply: no file nosudo can read holds the secret', async () => {
    const a = await apply([]);
    expect(a.code, all(a)).toBe(0);
    // The value goes to grep on stdin, never on its command line. Root finds the copies the recipe made…
    const asRoot = await sshRun(sandbox(), host(), 'grep -rlsF -f /dev/stdin /root 2>/dev/null; true', { input: `${SECRET}\n` });
    expect(asRoot.stdout.split('\n').filter(Boolean).sort()).toEqual(['/root/tok', '/root/tok.conf', '/root/tok.env']);
    // …and nosudo, searching everything it may read, finds none.
    const r = await sshRun(sandbox(), host(), 'grep -rlsF -D skip --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -f /dev/stdin / 2>/dev/null; true', {
      user: 'nosudo',
      input: `${forms(SECRET).join('\n')}\n`,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
  }, 60_000);
});
