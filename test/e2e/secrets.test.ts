/**
 * Secrets are never shown (SPEC §5), proven on a real host: every case searches everything the
 * run leaves behind — stdout (human and --json), stderr, the journal files, `show <run-id>`, the
 * `plan --out` file — for the value, each of its escaped forms and each of its lines; and the
 * host's process list, read by an unprivileged user while a step runs.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, journalText, onlyJsonLines, sandboxArgs, stepEvents, type CliResult } from './cli.js';

/** What a secret may look like on the way out: as is, JSON-escaped once and twice, shell-quoted. */
function leaks(secret: string): string[] {
  const pieces = new Set([secret, secret.trimEnd()]);
  if (secret.includes('\n')) for (const l of secret.split('\n')) if (l.trim()) pieces.add(l.trim());
  const out = new Set<string>();
  for (const p of pieces) {
    const shellInner = p.replace(/'/g, `'\\''`);
    for (const f of [p, shellInner]) {
      out.add(f);
      out.add(JSON.stringify(f).slice(1, -1));
      out.add(JSON.stringify(JSON.stringify(f)).slice(1, -1));
    }
  }
  return [...out];
}

function expectHidden(text: string, secret: string, where: string): void {
  for (const form of leaks(secret)) {
    if (text.includes(form)) throw new Error(`${where} shows the secret as ${JSON.stringify(form)}:\n${text.slice(Math.max(0, text.indexOf(form) - 300), text.indexOf(form) + 300)}`);
  }
}

const runIdOf = (r: CliResult): string => {
  const id = r.events.find((e) => e.event === 'run-started')?.runId ?? /\(run ([^)]+)\)/.exec(r.stdout + r.stderr)?.[1];
  if (!id) throw new Error(`no run id in:\n${r.stdout}${r.stderr}`);
  return id;
};

describeHosts('secrets: never shown in any output, the journal, show, plan files or the process list', () => {
  const sandbox = useSandbox(1);
  const dirs: string[] = [];
  const temp = (prefix: string) => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  /** Runs the CLI against the sandbox with its own state dir. */
  function cli(state: string) {
    return (...a: string[]) => hostsmith([...a, ...sandboxArgs(sandbox(), state), '--hosts', sandbox().hosts[0]!.name]);
  }

  /**
   * Everything a person or a script could read after these runs: their output, the plan file,
   * every journal line, and `show` (human and --json) of every applied run.
   */
  async function everything(state: string, runs: CliResult[], planFile?: string): Promise<string> {
    const parts = runs.map((r) => `${r.stdout}\n${r.stderr}`);
    if (planFile) parts.push(readFileSync(planFile, 'utf8'));
    const journal = journalText(state);
    expect(journal.length).toBeGreaterThan(100);
    parts.push(journal);
    const ids = new Set(runs.filter((r) => r.events.length || /Apply:/.test(r.stdout)).map(runIdOf));
    for (const id of ids) {
      if (!journal.includes(id)) continue;
      const human = await hostsmith(['show', id, '--state-dir', state]);
      const json = await hostsmith(['show', id, '--state-dir', state, '--json']);
      expect(human.code, human.stderr).toBe(0);
      expect(json.code, json.stderr).toBe(0);
      expect(human.stdout).toContain(id);
      parts.push(human.stdout, human.stderr, json.stdout, json.stderr);
    }
    return parts.join('\n');
  }

  it('a rotated secret: the old value read from the host is not shown when the line is replaced', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const state = temp('hostsmith-state-');
    const run = cli(state);
    const OLD = 'Old-Rotated-Pw-4711';
    const NEW = 'New-Rotated-Pw-0815';
    const dir = fixture({
      'r.yml': `name: rotate
vars:
  pw: { required: true, secret: true }
steps:
  - name: Password line
    line: { path: /root/app.env, line: "PASSWORD={{pw}}", match: "^PASSWORD=", create: true, mode: "0600" }
`,
    });
    dirs.push(dir);
    const first = await run('apply', join(dir, 'r.yml'), '--var', `pw=${OLD}`, '--yes');
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(await sshOk(sb, h, 'cat /root/app.env')).toBe(`PASSWORD=${OLD}\n`);

    const planFile = join(dir, 'plan.json');
    const plan = await run('plan', join(dir, 'r.yml'), '--var', `pw=${NEW}`, '--out', planFile);
    const planJson = await run('plan', join(dir, 'r.yml'), '--var', `pw=${NEW}`, '--json');
    const apply = await run('apply', join(dir, 'r.yml'), '--var', `pw=${NEW}`, '--yes', '--json', '--verbose');
    expect(plan.code, plan.stdout + plan.stderr).toBe(0);
    expect(apply.code, apply.stdout + apply.stderr).toBe(0);
    // The change happened, and the output says what it did without the old value.
    expect(await sshOk(sb, h, 'cat /root/app.env')).toBe(`PASSWORD=${NEW}\n`);
    const summary = stepEvents(apply)[0]!.summary as string;
    expect(summary).toBe('/root/app.env: replace line 1 (old value hidden: the step holds a secret) with "PASSWORD=***"');
    expect(plan.stdout).toContain('old value hidden');

    const all = await everything(state, [first, plan, planJson, apply], planFile);
    expect(all).toContain('***');
    expectHidden(all, OLD, 'the rotation runs');
    expectHidden(all, NEW, 'the rotation runs');
  });

  it('a secret with " and \\ is masked in --json, the journal, show and the plan file', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const state = temp('hostsmith-state-');
    const run = cli(state);
    const secret = `Q"uo\\te\\\\d"-'x`;
    const dir = fixture({
      'r.yml': `name: escapes
vars:
  tok: { required: true, secret: true }
steps:
  - name: Token line
    line: { path: /root/tok.env, line: "TOKEN={{tok}}", create: true }
  - name: Token command
    command: { run: "printf '%s' {{quote tok}} > /root/tok.raw", rollback: "rm -f /root/tok.raw" }
  - name: Echo it back
    command: { run: "cat /root/tok.raw", rollback: "true" }
  - name: Quote the output
    command: { run: "echo {{quote steps.[Echo it back].stdout}} > /root/tok.copy; echo {{quote steps.[Echo it back].stdout}} >&2; exit 3" }
`,
    });
    dirs.push(dir);
    const planFile = join(dir, 'plan.json');
    const plan = await run('plan', join(dir, 'r.yml'), '--var', `tok=${secret}`, '--out', planFile, '--json');
    const apply = await run('apply', join(dir, 'r.yml'), '--var', `tok=${secret}`, '--yes', '--json', '--verbose');
    const human = await run('apply', join(dir, 'r.yml'), '--var', `tok=${secret}`, '--yes');
    expect(plan.code, plan.stdout + plan.stderr).toBe(0);
    expect(onlyJsonLines(apply)).toBe(apply.events.length);
    // The last step fails: the earlier ones are rolled back, and the host says what the value was.
    expect(apply.code, apply.stdout + apply.stderr).toBe(1);
    expect(human.code).toBe(1);
    expect((await sshRun(sb, h, 'test -e /root/tok.raw')).code).not.toBe(0);
    expect((await sshRun(sb, h, 'test -e /root/tok.env')).code).not.toBe(0);
    const failed = stepEvents(apply).find((e) => e.status === 'failed')!;
    expect(failed.step).toBe('Quote the output');
    expect(failed.error).toContain('***');
    expect(apply.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back', 'rolled-back', 'rolled-back']);

    const all = await everything(state, [plan, apply, human], planFile);
    expectHidden(all, secret, 'the escaping runs');
  });

  it('a multi-line secret echoed by failing commands with long output: no line of it is shown', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const state = temp('hostsmith-state-');
    const run = cli(state);
    const key = '-----BEGIN TEST KEY-----\nAAAA-first-line-1111\nBBBB-second-line-2222\nCCCC-third-line-3333\n-----END TEST KEY-----\n';
    const dir = fixture({
      'r.yml': `name: multiline
vars:
  key: { required: true, secret: true }
steps:
  - name: Marker
    file: { path: /root/ml-marker, content: "made\\n" }
  - name: Key then 18 lines
    fatal: false
    command: { run: "printf '%s' {{quote key}} >&2; seq 1 18 >&2; exit 4" }
  - name: 30 lines then the key
    command: { run: "seq 100 130 >&2; printf '%s' {{quote key}} >&2; exit 5" }
`,
    });
    dirs.push(dir);
    const planFile = join(dir, 'plan.json');
    const plan = await run('plan', join(dir, 'r.yml'), '--var', `key=${key}`, '--out', planFile);
    const apply = await run('apply', join(dir, 'r.yml'), '--var', `key=${key}`, '--yes', '--json', '--verbose');
    const human = await run('apply', join(dir, 'r.yml'), '--var', `key=${key}`, '--yes', '--verbose');
    expect(plan.code, plan.stdout + plan.stderr).toBe(0);
    expect(apply.code, apply.stdout + apply.stderr).toBe(1);
    expect(human.code).toBe(1);
    // Both failures are reported with the host's words around the hidden lines.
    const errors = stepEvents(apply)
      .filter((e) => e.status === 'failed')
      .map((e) => e.error as string);
    expect(errors).toHaveLength(2);
    // The 20-line tail cut the key: its last two lines are left, each masked on its own.
    expect(errors[0]).toMatch(/exited 4: \*\*\*\n\*\*\*\n1\n2\n[\d\n]*\n17\n18$/);
    // The key came last and the output was trimmed: the whole value without its final newline.
    expect(errors[1]).toMatch(/exited 5: 116\n[\d\n]*\n130\n\*\*\*$/);
    expect((await sshRun(sb, h, 'test -e /root/ml-marker')).code).not.toBe(0);

    const all = await everything(state, [plan, apply, human], planFile);
    expectHidden(all, key, 'the multi-line runs');
  });

  it('env values and command text are not in the host process list while the step runs', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const state = temp('hostsmith-state-');
    const run = cli(state);
    const pw = 'Ps-Visible-Never-9931';
    const dir = fixture({
      'r.yml': `name: env
vars:
  pw: { required: true, secret: true }
steps:
  - name: As root
    command: { run: "PW_COPY={{quote pw}}; sleep 3.3", env: { DB_PASSWORD: "{{pw}}" } }
  - name: Through sudo as deploy
    command: { run: "PW_COPY={{quote pw}}; sleep 3.4", env: { DB_PASSWORD: "{{pw}}" }, user: deploy }
`,
    });
    dirs.push(dir);
    const applying = run('apply', join(dir, 'r.yml'), '--var', `pw=${pw}`, '--yes', '--json');
    let done = false;
    void applying.finally(() => (done = true));
    const snapshots: string[] = [];
    while (!done) {
      const ps = await sshRun(sb, h, 'ps -eo args', { user: 'nosudo' });
      expect(ps.code, ps.stderr).toBe(0);
      snapshots.push(ps.stdout);
    }
    const apply = await applying;
    expect(apply.code, apply.stdout + apply.stderr).toBe(0);
    // The check could see each step: its sleep was in a snapshot taken as nosudo.
    const seen = snapshots.join('\n');
    expect(seen).toMatch(/^sleep 3\.3$/m);
    expect(seen).toMatch(/^sleep 3\.4$/m);
    expect(seen).toMatch(/^sudo -n -H -u deploy -- sh -c /m);
    expectHidden(seen, pw, 'ps -eo args as nosudo');
    expect(seen).not.toContain('DB_PASSWORD');
    expect(seen).not.toContain('PW_COPY');

    const all = await everything(state, [apply]);
    expectHidden(all, pw, 'the env run');
  });

  it('a one-character secret (--var pw=0) leaves a journal that parses, and the run rolls back', async () => {
    const sb = sandbox();
    const h = sb.hosts[0]!;
    const state = temp('hostsmith-state-');
    const run = cli(state);
    const dir = fixture({
      'r.yml': `name: short
vars:
  pw: { required: true, secret: true }
steps:
  - name: Conf
    file: { path: /root/short.conf, content: "pw={{pw}}\\n", mode: "0600" }
  - name: Line
    line: { path: /root/short.env, line: "PW=pw{{pw}}x", create: true }
  - name: Fail
    command: { run: "echo pw={{pw}} >&2; exit 1" }
`,
    });
    dirs.push(dir);
    const planFile = join(dir, 'plan.json');
    const plan = await run('plan', join(dir, 'r.yml'), '--var', 'pw=0', '--out', planFile);
    const apply = await run('apply', join(dir, 'r.yml'), '--var', 'pw=0', '--yes', '--json');
    expect(plan.code, plan.stdout + plan.stderr).toBe(0);
    expect(apply.code, apply.stdout + apply.stderr).toBe(1);
    // Warned, by var name, on stderr; stdout stays JSON only.
    expect(apply.stderr).toMatch(/warning: the secret var "pw" has a value .*shorter than 4 characters/);
    expect(plan.stderr).toMatch(/secret var "pw"/);
    expect(onlyJsonLines(apply)).toBe(apply.events.length);
    expect(apply.events.at(-1)).toMatchObject({ event: 'run-finished', exitCode: 1 });
    expect(stepEvents(apply).map((e) => e.status)).toEqual(['changed', 'changed', 'failed']);
    expect(apply.events.filter((e) => e.event === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back', 'rolled-back']);
    expect(await sshOk(sb, h, 'ls /root/short.conf /root/short.env 2>&1 || true')).toMatch(/No such file[\s\S]*No such file/);

    // Every journal line parses; times, ids, digests and numbers are intact.
    const runId = runIdOf(apply);
    const lines = journalText(state).split('\n').filter(Boolean);
    const entries = lines.map((l) => JSON.parse(l) as Record<string, any>);
    expect(entries[0]).toMatchObject({ kind: 'run-started', runId });
    expect(entries.at(-1)).toMatchObject({ kind: 'run-finished', exitCode: 1 });
    for (const e of entries) if (e.time) expect(new Date(e.time).toISOString()).toBe(e.time);
    for (const e of entries) for (const k of ['pre', 'post'] as const) if (e[k]) expect(e[k]).toMatch(/^[0-9a-f]{64}$/);
    expect(entries.filter((e) => e.kind === 'rollback-finished').map((e) => e.status)).toEqual(['rolled-back', 'rolled-back']);
    expect(JSON.parse(readFileSync(planFile, 'utf8')).runId).toMatch(/0/);

    const all = await everything(state, [plan, apply], planFile);
    for (const shown of ['pw=0', 'PW=pw0x']) expect(all).not.toContain(shown);
    expect(all).toContain('pw=***');
  });
});
