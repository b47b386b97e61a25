/**
 * Live progress on several hosts, read off a real terminal screen (tmux) as a person sees it:
 * while a slow step runs on three hosts, the bottom of the screen holds one line per host with
 * the step's place, its name and a running time; once the run ends, those lines give way to
 * the summary table. Without a terminal the same run prints plain lines only.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, ROOT, sandboxArgs } from './cli.js';

const BIN = join(ROOT, 'bin/hostsmith.js');
const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
const hasTmux = spawnSync('tmux', ['-V']).status === 0;
if (!hasTmux) {
  // CI installs tmux; a machine without it says so rather than pass the screen test unseen.
  if (process.env.HOSTSMITH_REQUIRE_HOSTS === '1') throw new Error('tmux is required for the terminal-screen tests (apt-get install tmux)');
  console.warn('SKIPPING the live-progress screen test: tmux is not installed');
}

const RECIPE = `name: progress
steps:
  - name: Quick file
    file: { path: /etc/hs-progress, content: "p\\n" }
  - name: Slow step
    command: { run: "sleep 6", creates: /etc/hs-progress-done }
  - name: Mark done
    command: { run: "touch /etc/hs-progress-done", creates: /etc/hs-progress-done }
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeHosts('live progress for several hosts', () => {
  const sandbox = useSandbox(3);
  const dirs: string[] = [];
  const session = `hs-progress-${process.pid}`;
  afterAll(() => {
    spawnSync('tmux', ['kill-session', '-t', session]);
    dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  });

  it.skipIf(!hasTmux)('a terminal shows one live line per host during a slow step, then the summary', async () => {
    const sb = sandbox();
    const dir = fixture({ 'r.yml': RECIPE });
    const state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    dirs.push(dir, state);
    const names = sb.hosts.map((h) => h.name);
    const args = ['apply', join(dir, 'r.yml'), '--hosts', names.join(','), '--yes', ...sandboxArgs(sb, state)];
    const cmd = `cd ${q(ROOT)} && NO_COLOR=1 ${[process.execPath, BIN, ...args].map(q).join(' ')}; echo "exit=$?"; sleep 60`;
    const env: Record<string, string | undefined> = { ...process.env, TERM: 'xterm' };
    delete env.CI;
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '120', '-y', '30', cmd], { env });
    const screen = () => execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });

    // During the slow step: every host has its live line, in the order given, at the bottom.
    let during = '';
    const slowLine = (h: string) => new RegExp(`^${h}\\s+[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] step 2/3  Slow step  \\d+\\.\\ds$`, 'm');
    for (let i = 0; i < 120 && !names.every((h) => slowLine(h).test(during)); i++) {
      await sleep(250);
      during = screen();
    }
    expect(during, during).toSatisfy((s: string) => names.every((h) => slowLine(h).test(s)));
    const bottom = during.trimEnd().split('\n').slice(-3);
    expect(
      bottom.map((l) => l.split(/\s+/)[0]),
      during,
    ).toEqual(names);
    // The steps already done scroll above the board as plain lines with their host.
    for (const h of names) expect(during).toMatch(new RegExp(`^${h}  \\+ Quick file  changed: create /etc/hs-progress`, 'm'));
    // The running time counts up while the step runs.
    const t0 = Number(/Slow step {2}(\d+\.\d)s/.exec(during)?.[1]);
    await sleep(1500);
    const later = screen();
    const t1 = Number(/Slow step {2}(\d+\.\d)s/.exec(later)?.[1]);
    expect(t1, later).toBeGreaterThan(t0);

    // At the end the live lines are gone and the summary table says how each host ended.
    let end = '';
    for (let i = 0; i < 120 && !/exit=\d+/.test(end); i++) {
      await sleep(250);
      end = screen();
    }
    expect(end, end).toMatch(/exit=0/);
    expect(end).not.toMatch(/step \d\/3 {2}\S.*\d+\.\ds$/m);
    for (const h of names) expect(end).toMatch(new RegExp(`^${h}\\s+ok\\s+3\\s+0\\s`, 'm'));
    for (const h of sb.hosts) expect((await sshRun(sb, h, 'test -e /etc/hs-progress-done')).code).toBe(0);
  });

  it('without a terminal the same run prints plain lines, no redraws', async () => {
    const sb = sandbox();
    const dir = fixture({ 'r.yml': RECIPE.replace('sleep 6', 'true').replaceAll('hs-progress', 'hs-progress-plain') });
    const state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    dirs.push(dir, state);
    const r = await hostsmith(['apply', join(dir, 'r.yml'), '--hosts', sb.hosts.map((h) => h.name).join(','), '--yes', ...sandboxArgs(sb, state)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/\x1b/);
    expect(r.stdout).not.toMatch(/step \d\/3/);
    for (const h of sb.hosts) expect(r.stdout).toContain(`${h.name}  ~ Slow step  changed`);
  });
});
