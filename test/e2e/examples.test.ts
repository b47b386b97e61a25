/**
 * Every example recipe in recipes/, end to end on a fresh real host, the ways a person runs them:
 *
 * - each recipe proved by `hostsmith test` at every stage: examples-proved.test.ts (a file of its
 *   own, so that it runs beside these cases);
 * - motd: apply, undo to zero residue, and a second undo of the same run has nothing to do;
 * - web-server through a saved plan: `plan --out` marks "No default site" as known after apply
 *   (it depends on the nginx package), `apply --plan` follows it, and a new plan has nothing left;
 * - web-server through a terminal `apply`, answering yes at the confirmation, on a real pty;
 * - web-server through `bootstrap`, every question typed on a real pty.
 *
 * Each case starts on a fresh host (the sandbox host restarted with its changes wiped). The
 * host is read with plain OpenSSH (test/hosts/residue.ts) and nginx with a plain HTTP request.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, expect, it } from 'vitest';
import { residue, snapshotHost } from '../hosts/residue.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { hostsmith, httpGet, onTerminal, sandboxArgs, stepEvents } from './cli.js';

describeHosts('the example recipes, end to end on a fresh host', () => {
  const sandbox = useSandbox(1);
  const host = () => sandbox().hosts[0]!;
  let state: string;
  let used = false;

  beforeEach(async () => {
    // The sandbox starts fresh; every later case gets the host back as it booted the first time.
    if (used) await sandbox().restart(host(), { wipe: true });
    used = true;
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
  });

  const varArgs = (vars: string[]) => vars.flatMap((v) => ['--var', v]);
  const tail = (r: { stdout: string; stderr: string }) => `${r.stderr}\n${r.stdout.slice(-4000)}`;

  it('motd: apply, then undo leaves no residue; a second undo of the same run has nothing to do', async () => {
    const sb = sandbox();
    const h = host();
    const before = await snapshotHost(sb, h);
    const applied = await hostsmith(['apply', 'recipes/motd.yml', '--hosts', h.name, '--yes', '--json', ...sandboxArgs(sb, state)]);
    expect(applied.code, tail(applied)).toBe(0);
    const runId = applied.events.find((e) => e.event === 'run-started')?.runId as string | undefined;
    expect(runId).toEqual(expect.any(String));
    const undo = await hostsmith(['undo', runId!, '--yes', '--state-dir', state]);
    expect.soft(undo.code, tail(undo)).toBe(0);
    expect.soft(await residue(sb, h, before), 'what the undo left on the host').toEqual([]);
    const again = await hostsmith(['undo', runId!, '--yes', '--state-dir', state]);
    expect(again.code, tail(again)).toBe(0);
    expect(again.stdout).toMatch(/nothing to undo for run/);
  });

  it('web-server through a saved plan: "No default site" known after apply; apply --plan follows it; nothing left to plan', async () => {
    const sb = sandbox();
    const h = host();
    const planFile = join(mkdtempSync(join(tmpdir(), 'hostsmith-plan-')), 'p.json');
    const target = ['--hosts', h.name, ...sandboxArgs(sb, state), ...varArgs(['server_name=plan.test', `listen=${h.address}:8080`])];

    // Plans take no lock on the host: the saved one and the human text one are made at once.
    const [plan, text] = await Promise.all([hostsmith(['plan', 'recipes/web-server.yml', '--out', planFile, '--json', ...target]), hostsmith(['plan', 'recipes/web-server.yml', ...target])]);
    expect(plan.code, tail(plan)).toBe(0);
    const noDefault = stepEvents(plan).find((e) => e.step === 'No default site');
    // Whether the default site exists is known only once nginx is installed.
    expect(noDefault, JSON.stringify(noDefault)).toMatchObject({ status: 'planned', dynamic: true });
    expect(noDefault!.dependsOn).toContain('Install nginx');

    expect(text.code, tail(text)).toBe(0);
    const line = text.stdout.split('\n').find((l) => l.includes('No default site'));
    expect(line, text.stdout).toMatch(/known after apply/);
    expect(line).toMatch(/Install nginx/);

    const applied = await hostsmith(['apply', '--plan', planFile, '--state-dir', state]);
    expect(applied.code, tail(applied)).toBe(0);
    expect(applied.stdout).toMatch(/Done \(run \S+\)/);

    const after = await hostsmith(['plan', 'recipes/web-server.yml', '--json', ...target]);
    expect(after.code, tail(after)).toBe(0);
    expect(stepEvents(after).filter((e) => e.status === 'planned')).toEqual([]);
  });

  it('web-server through apply on a terminal: the plan shown, yes at the confirmation, nginx serves the page', async () => {
    const sb = sandbox();
    const h = host();
    const r = await onTerminal(
      ['apply', 'recipes/web-server.yml', '--hosts', h.name, ...sandboxArgs(sb, state), ...varArgs([`listen=${h.address}:8080`])],
      [
        [/Public host name of the site \(server_name\)/, 'term.test\r'],
        [/Apply these \d+ change\(s\)\? \(y\/N\)/, 'y\r'],
      ],
      { timeoutMs: 120_000 },
    );
    expect(r.code, r.screen.slice(-4000)).toBe(0);
    expect(r.screen).toMatch(/No default site/);
    expect(r.screen).toMatch(/Done \(run \S+\)/);
    const page = await httpGet(`http://${h.address}:8080/`);
    expect(page.status).toBe(200);
    expect(page.body).toContain('<h1>term.test</h1>');
  });

  it('web-server through bootstrap on a terminal: host, key-file login and vars typed, the plan confirmed', async () => {
    const sb = sandbox();
    const h = host();
    // An empty home: no ssh-agent, no ~/.ssh keys or config, no hostsmith config of the person's.
    const home = mkdtempSync(join(tmpdir(), 'hostsmith-home-'));
    const r = await onTerminal(
      ['bootstrap', 'recipes/web-server.yml', '--known-hosts', sb.knownHostsPath, '--state-dir', state],
      [
        [/Host to set up/, `root@${h.address}:${h.port}\r`],
        // Typing picks the choice whose name starts with it: the key file, not the password.
        [/How do you log in/, 'a key file\r'],
        [/Private key file/, `${sb.keyPath}\r`],
        [/Public host name of the site \(server_name\)/, 'boot.test\r'],
        [/What nginx listens on: a port, or address:port \(listen\)/, `${h.address}:8080\r`],
        [/Folder the site is served from \(site_root\)/, '\r'],
        [/Shown on the index page \(admin_email\)/, '\r'],
        [/Days of nginx logs logrotate keeps \(log_keep_days\)/, '\r'],
        [/Apply these \d+ change\(s\)\? \(Y\/n\)/, 'y\r'],
        // Not saved: an inventory.yml would be written into the project folder.
        [/to an inventory, so later runs can name it/, 'n\r'],
      ],
      { env: { HOME: home, SSH_AUTH_SOCK: '', XDG_CONFIG_HOME: join(home, '.config') }, timeoutMs: 120_000 },
    );
    expect(r.code, r.screen.slice(-4000)).toBe(0);
    expect(r.screen).toContain(`Setting up root@${h.address}:${h.port}.`);
    expect(r.screen).toContain(`Logged in to ${h.address} as root with ${sb.keyPath}.`);
    expect(r.screen).toMatch(/Done \(run \S+\)/);
    expect(r.screen).toContain('Not saved to an inventory.');
    const page = await httpGet(`http://${h.address}:8080/`);
    expect(page.status).toBe(200);
    expect(page.body).toContain('<h1>boot.test</h1>');
  });
});
