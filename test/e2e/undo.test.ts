/**
 * `hostsmith undo <run-id>` on a real host: a run touching every step type (file, template,
 * package, service, line, cron, user, group and a command with a rollback, and a handler the
 * template notifies) is taken back from the journal alone (its recipe deleted), and the host
 * equals its snapshot from before the run, the handler having run once more after the rollback; a
 * hand edit makes undo refuse (exit 5, nothing changed) until --force, which puts back the rest
 * and names what it skipped; an undo killed part-way is finished by `recover`. Host state is read
 * with plain OpenSSH.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { sshOk } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, journalText, sandboxArgs } from './cli.js';

const TOKEN = 'tok-Undo-8153';

const RECIPE = `name: undoable
vars:
  token: { required: true, secret: true }
steps:
  - name: Group
    group: { name: undogroup }
  - name: User
    user: { name: undouser, shell: /bin/sh }
  - name: Cron
    cron: { name: undo-job, schedule: "0 4 * * *", command: "true" }
  - name: File
    file: { path: /srv/undo/motd, content: "hello\\n", mode: "0640" }
  - name: Template
    template: { src: t.hbs, dest: /etc/undo-tmpl.conf }
    notify: [Record]
  - name: Package
    package: { install: [hello], update_cache: true }
  - name: Service
    service: { name: cron, enabled: false }
  - name: Line
    line: { path: /srv/undo/app.conf, line: "workers=8", match: "^workers=" }
  - name: Command
    command: { run: "touch /srv/undo/mark-{{token}}", rollback: "rm /srv/undo/mark-{{token}}" }
handlers:
  - name: Record
    command: { run: "echo reloaded >> /var/log/undo-handler.log", rollback: "true" }
`;

/**
 * Paths, modes, owners and content of what the steps can touch, one package and the accounts.
 * The shadow tools' `-` backup files (passwd-, group-…) are left out: useradd/groupadd rewrite
 * them and rollback restores entries, not those copies.
 */
const SNAPSHOT = [
  'P="/etc /srv /home /var/spool/cron"',
  '{ find $P -xdev -printf "%p %m %u %g %y\\n" 2>/dev/null',
  '  find $P -xdev -type f -exec sha256sum {} + 2>/dev/null',
  "  dpkg-query -W -f '${Package} ${Version} ${Status}\\n' cron hello 2>&1",
  '  getent passwd undouser; getent group undogroup',
  '  ls -d /run/hostsmith/lock 2>/dev/null',
  "} | grep -Ev '^(/etc/(passwd|group|shadow|gshadow|subuid|subgid)-( |$)|[0-9a-f]{64}  /etc/(passwd|group|shadow|gshadow|subuid|subgid)-$)' | sort",
].join('\n');

const CLEANUP = [
  'crontab -r 2>/dev/null',
  'userdel -r undouser 2>/dev/null',
  'groupdel undogroup 2>/dev/null',
  'rm -rf /srv/undo /etc/undo-tmpl.conf /var/log/undo-handler.log',
  'DEBIAN_FRONTEND=noninteractive apt-get purge -y -q hello >/dev/null 2>&1',
  'update-rc.d cron enable >/dev/null 2>&1',
  'true',
].join('; ');

describeHosts('undo <run-id>: a finished run taken back from the journal', () => {
  const sandbox = useSandbox(1);
  let dir: string;
  let state: string;
  let before: string;
  const args = (...a: string[]) => [...a, ...sandboxArgs(sandbox(), state)];
  // Undo is given no inventory nor known_hosts: the journal says how the run reached the host.
  const args0 = (...a: string[]) => [...a, '--state-dir', state];
  const undo = (...a: string[]) => ['undo', ...a, '--state-dir', state];
  const host = () => sandbox().hosts[0]!;
  const snapshot = () => sshOk(sandbox(), host(), SNAPSHOT);
  const apply = async () => {
    const r = await hostsmith(args('apply', join(dir, 'undoable.yml'), '--hosts', 'h1', '--yes', '--json', '--var', `token=${TOKEN}`));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    return r.events.find((e) => e.event === 'run-started')!.runId as string;
  };
  const undoRunOf = (out: string) => /undo run (\S+) \(of run/.exec(out)?.[1];

  beforeAll(async () => {
    dir = fixture({ 'undoable.yml': RECIPE, 'templates/t.hbs': 'on {{facts.hostname}}\n' });
    state = join(dir, 'state');
    await sshOk(sandbox(), host(), `${CLEANUP}; mkdir -p /srv/undo && printf '# app\\nworkers=2\\n' > /srv/undo/app.conf`);
    before = await snapshot();
  });

  afterAll(async () => {
    await sshOk(sandbox(), host(), CLEANUP).catch(() => {});
  });

  it('puts the host back exactly, with the recipe gone; then there is nothing to undo, nor in the undo', async () => {
    const runId = await apply();
    const applied = await snapshot();
    expect(applied).not.toEqual(before);
    expect(applied).toMatch(/^undouser:/m);
    // The apply journals a salted digest of the secret, never its value.
    expect(journalText(state)).not.toContain(TOKEN);
    rmSync(join(dir, 'undoable.yml'));
    rmSync(join(dir, 'templates'), { recursive: true });

    // Without a terminal: the secret the rollback command needs must be given, and right (exit 2, nothing contacted).
    const missing = await hostsmith(undo(runId, '--yes'));
    expect(missing.code, missing.stderr + missing.stdout).toBe(2);
    expect(missing.stderr).toMatch(/secret var token/);
    const wrong = await hostsmith(undo(runId, '--yes', '--var', 'token=not-it'));
    expect(wrong.code, wrong.stderr + wrong.stdout).toBe(2);
    expect(wrong.stderr).toMatch(/not the value run .* was applied with/);
    const noYes = await hostsmith(undo(runId, '--var', `token=${TOKEN}`));
    expect(noYes.code, noYes.stderr).toBe(2);
    expect(await snapshot()).toEqual(applied);

    const calls = await sshOk(sandbox(), host(), 'cat /var/log/undo-handler.log');
    expect(calls).toBe('reloaded\n');
    const r = await hostsmith(undo(runId, '--yes', '--var', `token=${TOKEN}`));
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/Will put back, newest change first:[\s\S]*Record[\s\S]*Command[\s\S]*Service[\s\S]*Package[\s\S]*Group/);
    expect(r.stdout).toMatch(/h1: ok: put back 10 change\(s\)/);
    expect(await snapshot()).toEqual(before);
    // The handler the template notified ran once more after the template was put back.
    expect(await sshOk(sandbox(), host(), 'cat /var/log/undo-handler.log')).toBe('reloaded\nreloaded\n');
    expect(journalText(state)).not.toContain(TOKEN);
    const undoRun = undoRunOf(r.stdout);
    expect(undoRun).toBeDefined();

    const again = await hostsmith(undo(runId, '--yes'));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/nothing to undo .*already undone/);
    const ofUndo = await hostsmith(undo(undoRun!, '--yes'));
    expect(ofUndo.code, ofUndo.stderr).toBe(0);
    expect(ofUndo.stdout).toMatch(/itself an undo/);
    const shown = await hostsmith(args0('show', undoRun!));
    expect(shown.stdout).toMatch(/undo of recipe undoable/);
  }, 90_000);

  it('a hand-edited file: exit 5 naming it, nothing changed; --force puts back the rest and reports it', async () => {
    dir = fixture({ 'undoable.yml': RECIPE, 'templates/t.hbs': 'on {{facts.hostname}}\n' });
    const runId = await apply();
    await sshOk(sandbox(), host(), 'echo "edited by hand" > /srv/undo/motd');
    const edited = await snapshot();

    const refused = await hostsmith(undo(runId, '--yes', '--var', `token=${TOKEN}`));
    expect(refused.code, refused.stderr + refused.stdout).toBe(5);
    expect(refused.stderr).toMatch(/h1: File \[file\]: DRIFT: its state changed since the run/);
    expect(refused.stderr).toMatch(/nothing was changed/);
    expect(await snapshot()).toEqual(edited);

    const forced = await hostsmith(undo(runId, '--yes', '--force', '--var', `token=${TOKEN}`));
    expect(forced.code, forced.stderr + forced.stdout).toBe(3);
    expect(forced.stdout).toMatch(/h1: rollback-incomplete: put back 9 change\(s\); NOT put back: File \(its state changed since the run/);
    // Everything but the edited file is as before the run.
    const motd = (s: string) =>
      s
        .split('\n')
        .filter((l) => !l.includes('/srv/undo/motd'))
        .join('\n');
    const now = await snapshot();
    expect(now).toMatch(/\/srv\/undo\/motd/);
    expect(motd(now)).toEqual(motd(before));

    // Only the skipped step is left, and it still drifts.
    const left = await hostsmith(undo(runId, '--yes', '--var', `token=${TOKEN}`));
    expect(left.code, left.stderr + left.stdout).toBe(5);
    expect(left.stderr).toMatch(/File \[file\]: DRIFT/);
    expect(left.stderr).not.toMatch(/Line \[line\]/);
  }, 90_000);

  it('an undo killed part-way is a run recover finishes; undo again takes back the rest', async () => {
    await sshOk(sandbox(), host(), `${CLEANUP}; mkdir -p /srv/undo && printf '# app\\nworkers=2\\n' > /srv/undo/app.conf`);
    const clean = await snapshot();
    const runId = await apply();
    // Killed once its 7th entry is on disk: the rollback of Command has started, not finished.
    const killed = await hostsmith(undo(runId, '--yes', '--var', `token=${TOKEN}`), { env: { HOSTSMITH_FAULT_KILL_AT_WRITE: '7' } });
    expect(killed.code, killed.stderr + killed.stdout).toBe(-1);
    const open = await hostsmith(['recover', '--state-dir', state, '--json']);
    const undoRun = open.events.find((e) => e.event === 'open-run' && e.mode === 'undo');
    expect(undoRun).toMatchObject({ status: 'crashed', recoverable: true });
    // Its rollback command holds the secret: recover needs it too, checked against the run's digest.
    const noSecret = await hostsmith(['recover', undoRun!.runId, '--yes', '--state-dir', state]);
    expect(noSecret.code, noSecret.stderr).toBe(2);
    expect(noSecret.stderr).toMatch(/secret var token/);
    const rec = await hostsmith(['recover', undoRun!.runId, '--yes', '--state-dir', state, '--var', `token=${TOKEN}`]);
    expect(rec.code, rec.stderr + rec.stdout).toBe(0);
    expect(rec.stdout).toMatch(/Command \[command\]: its rollback was stopped/);
    expect(rec.stdout).toMatch(/h1: rolled-back: rolled back 1 change\(s\)/);
    expect(await sshOk(sandbox(), host(), 'ls /srv/undo; test -e /run/hostsmith/lock && echo LOCKED || true')).not.toMatch(/mark-|LOCKED/);
    const rest = await hostsmith(undo(runId, '--yes', '--var', `token=${TOKEN}`));
    expect(rest.code, rest.stderr + rest.stdout).toBe(0);
    expect(rest.stdout).toMatch(/h1: ok: put back 8 change\(s\)/);
    expect(await snapshot()).toEqual(clean);
  }, 120_000);
});
