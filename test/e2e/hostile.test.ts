/**
 * A hostile local user on the host. `nosudo` (no sudo, no root) plants symlinks in the PARENT
 * folders of paths that a root run manages, before the run and during it, aiming at root-only
 * files: /etc/motd, /etc/shadow, /etc/hosts, /etc/issue.net, /etc/cron.d, /etc/ld.so.conf.d.
 * /tmp (world-writable, sticky) is the attacker's playground: `ln -s /etc /tmp/hs-dir` as nosudo.
 *
 * Every case fingerprints those files (kind, mode, owner, sha256, read with plain ssh as root)
 * before and after and requires them unchanged; it also requires the exit code, and an error that
 * names the offending component (the link, not the path under it). The residue checker adds that
 * nothing else on the host changed. A control case shows that a link root made in a folder only
 * root can write is followed as before (as /lib -> usr/lib is): the refusals are about who could
 * have planted the link, not about links.
 *
 * Each case uses its own names under /tmp; a case that did damage gets a wiped host afterwards.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import type { Sandbox, SandboxHost } from '../hosts/hosts.js';
import { residue, snapshotHost, type HostSnapshot } from '../hosts/residue.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { fixture, hostsmith, sandboxArgs, stepEvents, type CliResult } from './cli.js';

/** The root-only files an attacker aims at: kind, mode, owner, sha256; "absent" when not there. */
const PROTECTED = [
  'for f in /etc/motd /etc/shadow /etc/hosts /etc/issue.net /etc/new.conf /etc/cron.d /etc/ld.so.conf.d \\',
  '    $(find /etc/cron.d /etc/ld.so.conf.d -mindepth 1 2>/dev/null | sort); do',
  '  if [ -L "$f" ] || [ -e "$f" ]; then',
  '    printf \'%s %s\' "$f" "$(stat -c \'%F %a %U:%G\' -- "$f")"',
  '    if [ -f "$f" ] && [ ! -L "$f" ]; then printf \' %s\' "$(sha256sum < "$f" | cut -c1-64)"; fi',
  "    printf '\\n'",
  '  else echo "$f absent"; fi',
  'done',
  // Anything new (or gone) right in /etc: a temp file of an atomic write through a link lands here.
  "find /etc -mindepth 1 -maxdepth 1 -printf '/etc entry %f %y\\n' | sort",
].join('\n');

/** The lines of `before` that are gone (-) and of `after` that are new (+): [] when unchanged. */
function changes(before: string, after: string): string[] {
  const b = before.split('\n').filter(Boolean);
  const a = after.split('\n').filter(Boolean);
  return [...b.filter((l) => !a.includes(l)).map((l) => `- ${l}`), ...a.filter((l) => !b.includes(l)).map((l) => `+ ${l}`)];
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** `p` named as a path of its own: not as the start of a longer path (/tmp/hs-dir/motd names /tmp/hs-dir/motd, not /tmp/hs-dir). */
const naming = (p: string) => new RegExp(`(?<![\\w/.-])${esc(p)}(?![\\w/-]|\\.\\w)`);

/** What the run said went wrong, short: for assertion messages. */
function said(r: CliResult): string {
  const errors = r.events.filter((e) => e.error).map((e) => `${e.event}${e.step ? ` "${e.step}"` : ''}${e.status ? ` (${e.status})` : ''}: ${e.error}`);
  const steps = stepEvents(r).map((e) => `${e.step}: ${e.status}${e.summary ? ` — ${e.summary}` : ''}`);
  const stderr = r.stderr.trim();
  return [`exit ${r.code}`, ...steps, ...errors, stderr ? `stderr: ${stderr.slice(-1500)}` : ''].filter(Boolean).join('\n  ');
}

describeHosts('a hostile local user plants symlinks in the folders a root run writes through', () => {
  const sandbox = useSandbox(1);
  const temps: string[] = [];
  let pristine = '';
  let state = '';
  let before = '';
  let snap: HostSnapshot;

  const host = (): [Sandbox, SandboxHost] => [sandbox(), sandbox().hosts[0]!];
  const root = (cmd: string) => sshOk(...host(), cmd);
  const nosudo = (cmd: string) => sshOk(...host(), cmd, { user: 'nosudo' });
  const fingerprint = () => root(PROTECTED);

  const recipe = (steps: string, files: Record<string, string> = {}) => {
    const dir = fixture({ 'r.yml': `name: hostile\nsteps:\n${steps}`, ...files });
    temps.push(dir);
    return join(dir, 'r.yml');
  };
  const args = (...a: string[]) => [...a, '--hosts', host()[1].name, '--json', ...sandboxArgs(sandbox(), state)];

  /** Call once the plants are in place: the state every assertion compares with. */
  const baseline = async () => {
    before = await fingerprint();
    snap = await snapshotHost(...host());
  };

  /** The three things every attack case asserts, softly, so a failure shows all of them. */
  const expectHeld = async (r: CliResult, o: { code: number; component?: string; ignore?: string[] }) => {
    const why = said(r);
    expect.soft(changes(before, await fingerprint()), `protected files changed; the run said:\n  ${why}`).toEqual([]);
    expect.soft(r.code, `exit code; the run said:\n  ${why}`).toBe(o.code);
    if (o.component) expect.soft(naming(o.component).test(r.stdout + r.stderr), `the output names ${o.component}; the run said:\n  ${why}`).toBe(true);
    expect.soft(await residue(...host(), snap, { ignore: o.ignore ?? [] }), 'nothing else on the host changed').toEqual([]);
  };

  beforeAll(async () => {
    pristine = await fingerprint();
    // Sanity: the targets are there and are what the attacks expect, so "unchanged" means something.
    expect(pristine).toMatch(/^\/etc\/shadow regular file 640 root:shadow /m);
    expect(pristine).toMatch(/^\/etc\/issue\.net regular file 644 root:root /m);
    expect(pristine).toMatch(/^\/etc\/new\.conf absent$/m);
    expect(pristine).toMatch(/^\/etc\/ld\.so\.conf\.d directory 755 root:root$/m);
    expect(pristine).toMatch(/^\/etc\/cron\.d directory 755 root:root$/m);
    // nosudo really is not root.
    expect(await nosudo('id -u')).not.toBe('0\n');
  });

  afterEach(async () => {
    state = '';
    // A case that got through did damage: give the next one a fresh host.
    const now = await sshRun(...host(), `rm -rf /etc/new.conf /srv/real /srv/link\n${PROTECTED}`);
    if (now.code !== 0 || changes(pristine, now.stdout).length) await sandbox().restart(host()[1], { wipe: true });
  });

  afterAll(() => {
    for (const d of temps) rmSync(d, { recursive: true, force: true });
  });

  const newState = () => {
    state = mkdtempSync(join(tmpdir(), 'hostsmith-state-'));
    temps.push(state);
  };

  // ------------------------------------------------------------------ 1. planted before the run

  const viaEtc: Array<[string, string]> = [
    ['a file with content, /tmp/hs-dir/motd (-> /etc/motd)', `  - name: Motd\n    file: { path: /tmp/hs-dir/motd, content: "owned by nosudo\\n" }\n`],
    ['a mode-only file step, /tmp/hs-dir/shadow mode 0644 (-> /etc/shadow)', `  - name: Shadow\n    file: { path: /tmp/hs-dir/shadow, mode: "0644" }\n`],
    ['a line step, /tmp/hs-dir/hosts (-> /etc/hosts)', `  - name: Hosts\n    line: { path: /tmp/hs-dir/hosts, line: "10.66.66.66 deb.debian.org" }\n`],
    ['a removal, /tmp/hs-dir/issue.net state: absent (-> /etc/issue.net)', `  - name: Issue\n    file: { path: /tmp/hs-dir/issue.net, state: absent }\n`],
  ];

  it.each(viaEtc)('1. /tmp/hs-dir -> /etc planted by nosudo before the run, %s: refused naming /tmp/hs-dir (exit 1), /etc unchanged', async (_what, steps) => {
    newState();
    await nosudo('rm -rf /tmp/hs-dir && ln -s /etc /tmp/hs-dir && [ "$(stat -c %U /tmp/hs-dir)" = nosudo ]');
    await baseline();
    const r = await hostsmith(args('apply', recipe(steps), '--yes'));
    await expectHeld(r, { code: 1, component: '/tmp/hs-dir' });
  });

  // ------------------------------------------------------------------ 2. a template into cron.d

  it('2. a template whose dest is under /tmp/hs-cron -> /etc/cron.d: refused naming /tmp/hs-cron (exit 1), nothing written to /etc/cron.d', async () => {
    newState();
    await nosudo('rm -rf /tmp/hs-cron && ln -s /etc/cron.d /tmp/hs-cron');
    await baseline();
    const file = recipe(`  - name: Evil cron\n    template: { src: evil.hbs, dest: /tmp/hs-cron/evil }\n`, {
      'templates/evil.hbs': '* * * * * root touch /tmp/hs-cron-pwned\n',
    });
    const r = await hostsmith(args('apply', file, '--yes'));
    await expectHeld(r, { code: 1, component: '/tmp/hs-cron' });
  });

  // ------------------------------------------------------------------ 3. a deeper component

  it('3. /tmp/hs-a (a real folder of nosudo) holding b -> /etc: a file step on /tmp/hs-a/b/motd is refused naming /tmp/hs-a/b (exit 1)', async () => {
    newState();
    await nosudo('rm -rf /tmp/hs-a && mkdir /tmp/hs-a && ln -s /etc /tmp/hs-a/b');
    await baseline();
    const r = await hostsmith(args('apply', recipe(`  - name: Deep motd\n    file: { path: /tmp/hs-a/b/motd, content: "owned by nosudo\\n" }\n`), '--yes'));
    await expectHeld(r, { code: 1, component: '/tmp/hs-a/b' });
  });

  // ------------------------------------------------------------------ 4, 5. swapped during the run

  /**
   * Runs `steps`, whose first step is `first`; once it has finished, nosudo swaps `dir` for a
   * link to `to` (the folder moved aside to `dir`.old). The step after it waits for the swap
   * (up to 10 s), then fails, so the run rolls back through the swapped folder.
   */
  const swapDuringRun = async (dir: string, to: string, first: string, steps: string) => {
    let swap: Promise<unknown> | undefined;
    const fail = `  - name: Fails\n    command: { run: "i=0; while [ ! -L ${dir} ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done; echo 'failing on purpose' >&2; exit 1" }\n`;
    const r = await hostsmith(args('apply', recipe(steps + fail), '--yes'), {
      onSpawn: (child) => {
        let buf = '';
        child.stdout?.on('data', (d) => {
          buf += String(d);
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (swap || !line.startsWith('{')) continue;
            const e = JSON.parse(line) as Record<string, unknown>;
            if (e.event === 'step-finished' && e.step === first) {
              swap = nosudo(`mv ${dir} ${dir}.old && ln -s ${to} ${dir}`).catch((err: unknown) => err);
            }
          }
        });
      },
    });
    const swapped = await swap;
    expect(swapped, 'the swap happened while the run waited').not.toBeInstanceOf(Error);
    expect(swap, `the first step finished, so the swap was made; the run said:\n  ${said(r)}`).toBeDefined();
    return r;
  };

  it('4. nosudo swaps its folder /tmp/nsdir for a link to /etc/ld.so.conf.d mid-run: the rollback does not restore app.conf into it (exit 3, names /tmp/nsdir)', async () => {
    newState();
    await nosudo("rm -rf /tmp/nsdir /tmp/nsdir.old && mkdir /tmp/nsdir && printf '/opt/nosudo/lib\\n' > /tmp/nsdir/app.conf");
    await baseline();
    const r = await swapDuringRun('/tmp/nsdir', '/etc/ld.so.conf.d', 'App conf', `  - name: App conf\n    file: { path: /tmp/nsdir/app.conf, content: "managed by root\\n" }\n`);
    expect
      .soft(
        stepEvents(r).map((e) => [e.step, e.status]),
        said(r),
      )
      .toEqual([
        ['App conf', 'changed'],
        ['Fails', 'failed'],
      ]);
    await expectHeld(r, { code: 3, component: '/tmp/nsdir' });
  });

  it('5. nosudo swaps /tmp/nsdir2 for a link to /etc mid-run: the rollback of a file the run created does not delete /etc/new.conf (exit 3, names /tmp/nsdir2)', async () => {
    newState();
    await root("printf 'harmless\\n' > /etc/new.conf");
    await nosudo('rm -rf /tmp/nsdir2 /tmp/nsdir2.old && mkdir /tmp/nsdir2');
    await baseline();
    const r = await swapDuringRun('/tmp/nsdir2', '/etc', 'New conf', `  - name: New conf\n    file: { path: /tmp/nsdir2/new.conf, content: "made by root\\n" }\n`);
    expect
      .soft(
        stepEvents(r).map((e) => [e.step, e.status]),
        said(r),
      )
      .toEqual([
        ['New conf', 'changed'],
        ['Fails', 'failed'],
      ]);
    await expectHeld(r, { code: 3, component: '/tmp/nsdir2' });
  });

  // ------------------------------------------------------------------ 6. swapped between plan and apply

  const planThenApply = async (steps: string, swap: string) => {
    const file = recipe(steps);
    const planFile = join(mkdtempSync(join(tmpdir(), 'hostsmith-plan-')), 'plan.json');
    temps.push(planFile.slice(0, -'/plan.json'.length));
    const p = await hostsmith(args('plan', file, '--out', planFile));
    expect(p.code, `plan: ${said(p)}`).toBe(0);
    expect(stepEvents(p).map((e) => e.status)).toEqual(['planned']);
    await nosudo(swap);
    return hostsmith(['apply', '--plan', planFile, '--json', '--state-dir', state]);
  };

  it("6. a line step on nosudo's /tmp/hs-ln6/app.conf, swapped for a link to /etc/hosts between plan and apply --plan: refused as stale (exit 5), /etc/hosts unchanged", async () => {
    newState();
    await nosudo("rm -rf /tmp/hs-ln6 && mkdir /tmp/hs-ln6 && printf 'a=1\\n' > /tmp/hs-ln6/app.conf");
    await baseline();
    const r = await planThenApply(
      `  - name: App line\n    line: { path: /tmp/hs-ln6/app.conf, line: "10.66.66.66 deb.debian.org" }\n`,
      'rm /tmp/hs-ln6/app.conf && ln -s /etc/hosts /tmp/hs-ln6/app.conf',
    );
    await expectHeld(r, { code: 5, component: '/tmp/hs-ln6/app.conf' });
  });

  // Owner root vs nosudo is what makes this stale today; the refusal should also say why: the
  // re-check must not read through the planted link, but name it.
  it('6b. the same, but nosudo swaps the folder /tmp/hs-p6 (holding a copy of /etc/hosts) for a link to /etc: refused (exit 5), and the refusal names /tmp/hs-p6', async () => {
    newState();
    await nosudo('rm -rf /tmp/hs-p6 /tmp/hs-p6.old && mkdir /tmp/hs-p6 && cp /etc/hosts /tmp/hs-p6/hosts');
    await baseline();
    const r = await planThenApply(`  - name: Hosts line\n    line: { path: /tmp/hs-p6/hosts, line: "10.66.66.66 deb.debian.org" }\n`, 'mv /tmp/hs-p6 /tmp/hs-p6.old && ln -s /etc /tmp/hs-p6');
    await expectHeld(r, { code: 5, component: '/tmp/hs-p6' });
  });

  // ------------------------------------------------------------------ 7. control

  it('7. control: a link root made in a folder only root can write (/srv/link -> /srv/real) is followed: exit 0, /srv/real/x written', async () => {
    newState();
    await root('rm -rf /srv/real /srv/link && mkdir -p /srv/real && ln -s /srv/real /srv/link');
    await baseline();
    const r = await hostsmith(args('apply', recipe(`  - name: Through a trusted link\n    file: { path: /srv/link/x, content: "ok\\n" }\n`), '--yes'));
    expect
      .soft(
        stepEvents(r).map((e) => [e.step, e.status]),
        said(r),
      )
      .toEqual([['Through a trusted link', 'changed']]);
    await expectHeld(r, { code: 0, ignore: ['/srv'] });
    expect(await root('cat /srv/real/x; stat -c "%F %U" /srv/link')).toBe('ok\nsymbolic link root\n');
  });
});
