/**
 * `hostsmith prune --older-than 30d` on a real host: a run that replaced a file (so its backup is
 * on the host under /var/lib/hostsmith/backups/<run-id>) is made 40 days old by rewriting the
 * run-started time in its journal (plain NDJSON); prune removes that backup folder on the host and
 * the journal, and `undo` of the run then says it was pruned. A newer run keeps both.
 * Host state is read with plain OpenSSH.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs } from './cli.js';

const RECIPE = `name: prunable
vars:
  word: { required: true }
steps:
  - name: Conf
    file: { path: /srv/prune/app.conf, content: "word={{word}}\\n" }
`;

describeHosts('prune --older-than: old runs forgotten, on the host and in the journal', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  const ids: string[] = [];
  const host = () => sandbox().hosts[0]!;
  const journal = (id: string) => join(state, 'runs', `${id}.ndjson`);
  const onHost = async (path: string) => (await sshRun(sandbox(), host(), `test -e '${path}'`)).code === 0;
  const apply = async (word: string) => {
    const r = await hostsmith(['apply', join(dir, 'prunable.yml'), '--hosts', 'h1', '--yes', '--json', '--var', `word=${word}`, ...sandboxArgs(sandbox(), state)]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const id = r.events.find((e) => e.event === 'run-started')!.runId as string;
    ids.push(id);
    return id;
  };

  beforeAll(async () => {
    dir = fixture({ 'prunable.yml': RECIPE });
    state = join(dir, 'state');
    await sshOk(sandbox(), host(), 'rm -rf /srv/prune && mkdir -p /srv/prune && echo original > /srv/prune/app.conf');
  });

  afterAll(async () => {
    await sshOk(sandbox(), host(), ['rm -rf /srv/prune', ...ids.map((id) => `rm -rf '/var/lib/hostsmith/backups/${id}'`)].join('; ')).catch(() => {});
  });

  it("removes the old run's host backups and journal, keeps the newer run, and undo says why it cannot", async () => {
    const oldRun = await apply('one');
    const newRun = await apply('two');
    const oldBackups = `/var/lib/hostsmith/backups/${oldRun}`;
    const newBackups = `/var/lib/hostsmith/backups/${newRun}`;
    expect(await onHost(oldBackups)).toBe(true);
    expect(await onHost(newBackups)).toBe(true);
    // The journal says where the backups are.
    expect(readFileSync(journal(oldRun), 'utf8')).toContain(`"backupDir":"${oldBackups}"`);

    // Make the first run 40 days old.
    const lines = readFileSync(journal(oldRun), 'utf8').split('\n');
    const first = JSON.parse(lines[0]!);
    expect(first.kind).toBe('run-started');
    first.time = new Date(Date.now() - 40 * 86_400_000).toISOString();
    lines[0] = JSON.stringify(first);
    writeFileSync(journal(oldRun), lines.join('\n'));

    // Given no inventory nor known_hosts: the journal says how each run reached its host.
    const r = await hostsmith(['prune', '--older-than', '30d', '--yes', '--state-dir', state]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain(`removed ${oldBackups}`);
    expect(r.stdout).toMatch(new RegExp(`pruned run ${oldRun} \\(prunable\\) on h1`));
    expect(r.stdout).not.toContain(newRun);

    expect(await onHost(oldBackups)).toBe(false);
    expect(existsSync(journal(oldRun))).toBe(false);
    expect(await onHost(newBackups)).toBe(true);
    expect(existsSync(journal(newRun))).toBe(true);
    expect(await sshOk(sandbox(), host(), 'cat /srv/prune/app.conf')).toBe('word=two\n'); // managed files are not touched

    const undo = await hostsmith(['undo', oldRun, '--yes', '--state-dir', state]);
    expect(undo.code, undo.stderr + undo.stdout).toBe(2);
    expect(undo.stderr).toMatch(new RegExp(`run ${oldRun} was pruned on .*older than 30d.*can no longer be undone`, 's'));

    // Again: nothing older is left; the newer run is still there to undo.
    const again = await hostsmith(['prune', '--older-than', '30d', '--yes', '--state-dir', state]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/nothing to prune/);
    const shown = await hostsmith(['show', newRun, '--state-dir', state]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain(`backups in ${newBackups}`);
  }, 60_000);
});
