/**
 * `firewall`: params at load, params → footprint and the file as written, params + what the host
 * printed (nft's listings and verdict, the files) → state → plan, and the scripts apply and
 * rollback run. nft is never run here: this machine's own firewall is not the test's to touch, so
 * every exec goes to a fake that answers as a host would and records what it was sent.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConnectError, StepError } from '../../src/errors.js';
import type { PathState } from '../../src/steps/file-state.js';
import {
  editConf,
  fileText,
  firewallSchema,
  firewallStep,
  NEW_CONF,
  armRevertScript,
  confirmRevertScript,
  parseFirewallCheck,
  planFirewall,
  REVERT_SECONDS,
  restoreInput,
  revertFiles,
  tableFileText,
  wholeText,
  type FirewallState,
  type FirewallUndo,
} from '../../src/steps/firewall/firewall.js';
import type { StepContext } from '../../src/steps/step.js';
import type { ExecOptions, ExecResult } from '../../src/transport/transport.js';

const env = { runId: 'R1', step: 'Firewall', backupDir: '/var/lib/hostsmith/backups/R1' };
const whole = (content = 'table inet filter {\n  chain input { type filter hook input priority 0; policy accept; }\n}\n') => firewallSchema.parse({ content });
const table = (content = 'chain input {\n  type filter hook input priority 0; policy accept;\n  tcp dport 8080 accept\n}') => firewallSchema.parse({ table: { family: 'inet', name: 'app' }, content });
const file = (content: string): PathState => ({ kind: 'file', content: Buffer.from(content), mode: 0o644, owner: 'root', group: 'root', missing: [] });
const absent = (missing: string[] = []): PathState => ({ kind: 'absent', missing });

const LIVE = 'table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}';
const APP = 'table inet app {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 8080 accept\n\t}\n}';

/** NUL-terminated fields, as the host prints them. */
const nul = (...f: string[]) => Buffer.from(f.map((x) => `${x}\x00`).join(''));
/** What file-state's check prints for a regular file 0644 root:root, or for an absent path with one missing folder. */
const fileAnswer = (content: string) => Buffer.concat([nul('file', '644', 'root', 'root', '0', ''), Buffer.from(content)]);
const ABSENT = nul('absent', '', '', '', '1', '');

/** What checkScript prints: seven NUL-terminated fields, then file-state's answer for the file. */
function answer(o: { nft?: boolean; live?: [string, string]; check?: [string, string]; render?: [string, string]; file?: string | null }): Buffer {
  if (o.nft === false) return Buffer.from('nonft\0\0\0\0\0\0\0\0');
  const [lh, l] = o.live ?? ['ok', ''];
  const [ch, c] = o.check ?? ['ok', ''];
  const [rh, r] = o.render ?? ['ok', ''];
  const head = Buffer.from(`nft\0${lh}\0${l}\0${ch}\0${c}\0${rh}\0${r}\0`);
  const f = o.file === undefined || o.file === null ? ABSENT : fileAnswer(o.file);
  return Buffer.concat([head, f]);
}

describe('firewall: params, checked at load', () => {
  it.each([
    [{ content: 'flush ruleset\n' }],
    [{ src: 'rules.nft.hbs', vars: { port: 22 } }],
    [{ table: { family: 'inet', name: 'app' }, content: 'chain c {}' }],
    [{ table: { family: 'ip6', name: 'My_table-2' }, src: 'app.nft.hbs' }],
  ])('%j is a firewall step', (p) => {
    expect(firewallSchema.safeParse(p).success).toBe(true);
  });
  it.each([
    [{}, /give the ruleset as content or as a template in src/],
    [{ content: 'x', src: 'y' }, /either content or src/],
    [{ content: 'x', vars: { a: 1 } }, /vars are for a template in src/],
    [{ table: { family: 'inet', name: '../../etc/passwd' }, content: 'x' }, /letters, digits/],
    [{ table: { family: 'inet', name: 'app x' }, content: 'x' }, /letters, digits/],
    [{ table: { family: 'ipv4', name: 'app' }, content: 'x' }, /Invalid enum value/],
    [{ table: { family: 'inet' }, content: 'x' }, /Required/],
    [{ content: 'x', path: '/etc/other.conf' }, /Unrecognized key/],
  ])('%j is refused', (p, why) => {
    const r = firewallSchema.safeParse(p);
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });
});

describe('firewall: footprint', () => {
  it('the whole ruleset: /etc/nftables.conf and all of the live ruleset; it reads the drop-ins it may include and nft itself', () => {
    expect(firewallStep.footprint(whole())).toEqual({
      reads: ['path:/etc/nftables.conf', 'nft:*', 'path:/usr/sbin/nft', 'path:/etc/nftables.d'],
      writes: ['path:/etc/nftables.conf', 'nft:*'],
    });
  });
  it('one table: its drop-in, the include in /etc/nftables.conf and that table alone', () => {
    expect(firewallStep.footprint(table())).toEqual({
      reads: ['path:/etc/nftables.d/inet-app.nft', 'path:/etc/nftables.conf', 'nft:inet/app', 'path:/usr/sbin/nft'],
      writes: ['path:/etc/nftables.d/inet-app.nft', 'path:/etc/nftables.conf', 'nft:inet/app'],
    });
  });
});

describe('firewall: the file as written', () => {
  it('the whole ruleset begins with flush ruleset (put first when missing)', () => {
    expect(wholeText('table inet f {}')).toBe('flush ruleset\ntable inet f {}\n');
    expect(wholeText('# mine\n\nflush ruleset\ntable inet f {}\n')).toBe('# mine\n\nflush ruleset\ntable inet f {}\n');
    expect(wholeText('flush ruleset;\n')).toBe('flush ruleset;\n');
  });
  it('a #! line stays first', () => {
    expect(wholeText('#!/usr/sbin/nft -f\ntable inet f {}\n')).toBe('#!/usr/sbin/nft -f\nflush ruleset\ntable inet f {}\n');
  });
  it('a table: made, deleted and made again with its body, in one file', () => {
    const text = tableFileText({ family: 'inet', name: 'app' }, 'chain c {\n}');
    expect(text.split('\n').slice(2)).toEqual(['table inet app', 'delete table inet app', 'table inet app {', 'chain c {', '}', '}', '']);
    expect(text).toMatch(/^# table inet app, kept by hostsmith/);
  });
  it('a template rendered earlier is what is written; one known by its digest only (the journal) is not', () => {
    expect(fileText({ ...firewallSchema.parse({ src: 'r.hbs' }), rendered: 'table ip t {}\n' })).toBe('flush ruleset\ntable ip t {}\n');
    expect(fileText({ ...firewallSchema.parse({ src: 'r.hbs' }), rendered: `sha256:${'a'.repeat(64)} (20 bytes)` })).toBeNull();
  });
  it('/etc/nftables.conf includes the drop-ins: made when absent, the line added once', () => {
    expect(editConf(null)).toBe(NEW_CONF);
    expect(NEW_CONF).toMatch(/^#!\/usr\/sbin\/nft -f\n[\s\S]*flush ruleset\n\ninclude "\/etc\/nftables\.d\/\*\.nft"\n$/);
    const debian = '#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n}\n';
    expect(editConf(debian)).toBe(`${debian}\n# Added by hostsmith: the tables kept in /etc/nftables.d.\ninclude "/etc/nftables.d/*.nft"\n`);
    const already = `${debian}include "/etc/nftables.d/*.nft";\n`;
    expect(editConf(already)).toBe(already);
  });
});

describe('firewall: what the host printed → state', () => {
  it('nft missing: a step error that says to install nftables first', () => {
    expect(() => parseFirewallCheck(answer({ nft: false }), whole())).toThrow(/nft is not installed on this host.*package: \{ install: \[nftables\] \}/);
  });
  it('the live ruleset cannot be listed without root: said, with what to do', () => {
    expect(() => parseFirewallCheck(answer({ live: ['err', 'Error: Operation not permitted'] }), whole())).toThrow(
      /cannot read the live nftables ruleset \(nft list\): Error: Operation not permitted \(nft needs root/,
    );
  });
  it('the live table, nft -c’s verdict and the rendering are kept; the file is read as any path is', () => {
    const s = parseFirewallCheck(
      answer({ live: ['ok', `table\n${APP}`], check: ['bad', '/etc/nftables.d/inet-app.nft:7:3-9: Error: syntax error'], render: ['no', 'Error: x'], file: 'old\n' }),
      table(),
    );
    expect(s).toMatchObject({ live: APP, wanted: null, unrendered: 'Error: x', invalid: '/etc/nftables.d/inet-app.nft:7:3-9: Error: syntax error' });
    expect(s.file).toMatchObject({ kind: 'file', content: Buffer.from('old\n') });
  });
  it('a table that is not there is null', () => {
    expect(parseFirewallCheck(answer({ live: ['ok', 'none'] }), table()).live).toBeNull();
  });
  it('an answer cut short is an error, not a guess', () => {
    expect(() => parseFirewallCheck(Buffer.from('nft\0ok\0'), whole())).toThrow(/cut short/);
  });
});

const state = (o: Partial<FirewallState> = {}): FirewallState => ({ live: LIVE, wanted: LIVE, file: file(fileText(whole())!), ...o });

describe('firewall: plan (params + state → what changes)', () => {
  it('live and file as wanted: unchanged', () => {
    expect(planFirewall(whole(), state(), env)).toMatchObject({ changed: false, undo: null, summary: 'the nftables ruleset is loaded as /etc/nftables.conf has it' });
  });
  it('a trailing newline nft prints (and the shell drops) is no difference', () => {
    expect(planFirewall(whole(), state({ wanted: `${LIVE}\n` }), env).changed).toBe(false);
  });
  it('nft -c refused the new ruleset: the plan fails with nft’s message, nothing to undo', () => {
    expect(() => planFirewall(whole(), state({ invalid: '/etc/nftables.conf:3:1-4: Error: syntax error, unexpected junk' }), env)).toThrow(
      /the new ruleset for \/etc\/nftables\.conf does not pass nft -c, so nothing was changed:\n\/etc\/nftables\.conf:3:1-4: Error: syntax error/,
    );
  });
  it('the live ruleset drifted: loaded again, the diff between the listings, the old listing kept for rollback', () => {
    const drifted = `${LIVE}\ntable ip nat {\n}`;
    const plan = planFirewall(whole(), state({ live: drifted }), env);
    expect(plan.summary).toBe('load the nftables ruleset from /etc/nftables.conf (/etc/nftables.conf as wanted; live: replace the ruleset)');
    expect(plan.diff).toContain('--- a/(live) nft list ruleset');
    expect(plan.diff).toContain('-table ip nat {');
    expect(plan.undo).toEqual({ table: null, file: null, conf: null, live: { before: drifted } });
  });
  it('a new file: created, with its diff; undo removes it', () => {
    const plan = planFirewall(whole(), state({ live: '', file: absent() }), env);
    expect(plan.summary).toMatch(/^load the nftables ruleset from \/etc\/nftables\.conf \(create \/etc\/nftables\.conf; live: replace the ruleset\)$/);
    expect(plan.diff).toContain('+++ b/etc/nftables.conf');
    expect(plan.undo).toMatchObject({ file: { kind: 'absent', path: '/etc/nftables.conf', created: [] }, live: { before: '' } });
  });
  it('a table that is not there: created, its drop-in folder made, the include added; undo deletes the table', () => {
    const s: FirewallState = { live: null, wanted: APP, file: absent(['/etc/nftables.d']), conf: file('#!/usr/sbin/nft -f\nflush ruleset\n') };
    const plan = planFirewall(table(), s, env);
    expect(plan.action).toBe('create');
    expect(plan.summary).toBe(
      'load table inet app from /etc/nftables.d/inet-app.nft (create /etc/nftables.d/inet-app.nft; update /etc/nftables.conf to include /etc/nftables.d; live: create table inet app)',
    );
    expect(plan.undo).toMatchObject({
      table: { family: 'inet', name: 'app' },
      file: { kind: 'absent', path: '/etc/nftables.d/inet-app.nft', created: ['/etc/nftables.d'] },
      conf: { kind: 'file', path: '/etc/nftables.conf', backup: expect.stringMatching(/\/etc\/nftables\.conf$/) },
      live: { before: null },
    });
    expect(plan.diff).toContain('+table inet app {');
  });
  it('a table as wanted everywhere: unchanged, the rest of the ruleset is not its business', () => {
    const s: FirewallState = { live: APP, wanted: APP, file: file(fileText(table())!), conf: file(`flush ruleset\ninclude "/etc/nftables.d/*.nft"\n`) };
    expect(planFirewall(table(), s, env)).toMatchObject({
      changed: false,
      summary: 'table inet app is loaded as /etc/nftables.d/inet-app.nft has it (and /etc/nftables.conf includes /etc/nftables.d)',
    });
  });
  it('no rendering to compare with (no namespace on this host): loaded again, said why, diffed against the file', () => {
    const plan = planFirewall(whole(), state({ wanted: null, unrendered: 'unshare: unshare failed: Operation not permitted' }), env);
    expect(plan.changed).toBe(true);
    expect(plan.summary).toMatch(/live: loaded again \(the new ruleset could not be listed for a comparison: unshare: unshare failed: Operation not permitted\)/);
    expect(plan.diff).toContain('+flush ruleset');
  });
  it('a folder where the file goes is refused', () => {
    expect(() => planFirewall(whole(), state({ file: { kind: 'directory', mode: 0o755, owner: 'root', group: 'root', missing: [] } }), env)).toThrow(StepError);
  });
});

describe('firewall: rollback (controller and watchdog alike)', () => {
  it('the whole ruleset: flush and the old rules, in one nft -f', () => {
    expect(restoreInput(null, LIVE)).toBe(`flush ruleset\n${LIVE}\n`);
    expect(restoreInput(null, '')).toBe('flush ruleset\n');
  });
  it('a table: delete-and-add with the old listing, or the delete alone when it was not there', () => {
    expect(restoreInput({ family: 'inet', name: 'app' }, APP)).toBe(`table inet app\ndelete table inet app\n${APP}\n`);
    expect(restoreInput({ family: 'inet', name: 'app' }, null)).toBe('table inet app\ndelete table inet app\n');
  });
  const undo: FirewallUndo = {
    table: { family: 'inet', name: 'app' },
    file: { kind: 'absent', path: '/etc/nftables.d/inet-app.nft', created: ['/etc/nftables.d'] },
    conf: { kind: 'file', path: '/etc/nftables.conf', backup: '/var/lib/hostsmith/backups/R1/Firewall-1/etc/nftables.conf' },
    live: { before: null },
  };
  it('the watchdog’s script: the table deleted first, then each file, every part tried', () => {
    const script = firewallStep.hostRollback!(table(), undo, { host: 'h', runId: 'R1', step: 'Firewall', backupDir: '/b', init: 'systemd' });
    expect(script.indexOf('nft -f /dev/stdin')).toBeLessThan(script.indexOf('inet-app.nft'));
    expect(script.indexOf('inet-app.nft')).toBeLessThan(script.indexOf('/var/lib/hostsmith/backups/R1/Firewall-1/etc/nftables.conf'));
    expect(script).toContain("'table inet app\ndelete table inet app\n'");
    expect(script).toContain('PATH="$PATH:/usr/sbin:/sbin"');
    expect(script.match(/\|\| hs_rc=1/g)).toHaveLength(3);
  });
  it('says what it puts back', () => {
    expect(firewallStep.undoSummary!(undo as never)).toBe(
      'delete table inet app (it was not there); remove /etc/nftables.d/inet-app.nft and the folders the step created (/etc/nftables.d); put back file /etc/nftables.conf from the backup /var/lib/hostsmith/backups/R1/Firewall-1/etc/nftables.conf',
    );
    expect(firewallStep.undoSummary!({ table: null, file: null, conf: null, live: { before: 'a\nb' } })).toBe('load the nftables ruleset as it was (2 lines)');
  });
  it.each([
    [{ ...undo, table: { family: 'ip', name: 'app' } }, /for table ip app, not table inet app/],
    [{ ...undo, table: null }, /for the nftables ruleset, not table inet app/],
    [{ ...undo, file: { kind: 'absent', path: '/etc/passwd', created: [] } }, /not the step's \/etc\/nftables\.d\/inet-app\.nft/],
    [{ ...undo, conf: { kind: 'file', path: '/etc/nftables.conf', backup: '/tmp/evil' } }, /not in a hostsmith backup folder/],
    [{ ...undo, live: { before: 3 } }, /not text/],
    [{ ...undo, file: 'x' }, /not an object/],
  ])('refuses journaled data that is not its own: %j', (u, why) => {
    expect(firewallStep.undoMismatch!(table(), u as never)).toMatch(why);
  });
  it('accepts its own', () => {
    expect(firewallStep.undoMismatch!(table(), undo as never)).toBeUndefined();
  });
  it('the whole ruleset’s data never deletes a table or edits the include', () => {
    expect(firewallStep.undoMismatch!(whole(), { table: null, file: null, conf: null, live: { before: null } })).toMatch(/would delete a table/);
  });
});

/** A host that answers each exec from `answers` (the first whose test matches), recording what was sent. */
function fakeCtx(answers: Array<[RegExp, Partial<ExecResult>]>): { ctx: StepContext; sent: Array<{ cmd: string; stdin?: string }> } {
  const sent: Array<{ cmd: string; stdin?: string }> = [];
  const exec = async (cmd: string, o?: ExecOptions): Promise<ExecResult> => {
    sent.push({ cmd, ...(o?.stdin !== undefined ? { stdin: o.stdin.toString() } : {}) });
    const hit = answers.find(([re]) => re.test(cmd))?.[1] ?? {};
    const stdout = hit.stdout ?? '';
    return { code: 0, stderr: '', ...hit, stdout, stdoutRaw: hit.stdoutRaw ?? Buffer.from(stdout) } as ExecResult;
  };
  const ctx = { host: 'h1', step: 'Firewall', runId: 'R1', backupDir: env.backupDir, sudo: false, exec, readFile: async () => null, writeFile: async () => {} } as unknown as StepContext;
  return { ctx, sent };
}

describe('firewall: the check on a host (a fake one: nft never runs here)', () => {
  it('one exec: the file’s bytes on stdin, checked with nft -c and rendered in a throwaway network namespace', async () => {
    const { ctx, sent } = fakeCtx([[/hs_nft_live/, { stdoutRaw: answer({ live: ['ok', LIVE], render: ['ok', LIVE], file: fileText(whole()) }) }]]);
    const s = await firewallStep.check(ctx, whole());
    expect(planFirewall(whole(), s, env).changed).toBe(false);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.stdin).toBe(fileText(whole()));
    expect(sent[0]!.cmd).toContain('nft -c -f /dev/stdin');
    expect(sent[0]!.cmd).toContain("unshare -n sh -c 'nft -f /dev/stdin && nft -s list ruleset'");
    expect(sent[0]!.cmd).toContain('nft -s list ruleset 2>&1');
  });
  it('a table reads /etc/nftables.conf too, and lists its table alone', async () => {
    const conf = fileAnswer(NEW_CONF);
    const { ctx, sent } = fakeCtx([
      [/hs_nft_live/, { stdoutRaw: answer({ live: ['ok', 'none'], render: ['ok', APP] }) }],
      [/nftables\.conf/, { stdoutRaw: conf }],
    ]);
    const s = await firewallStep.check(ctx, table());
    expect(s.conf).toMatchObject({ kind: 'file', content: Buffer.from(NEW_CONF) });
    expect(sent[0]!.cmd).toContain('nft -s list table inet app 2>&1');
    expect(sent[0]!.cmd).toContain("grep -qxF 'table inet app'");
  });
  it('with the text known by digest only (undo, recover), nothing is sent to nft -c', async () => {
    const { ctx, sent } = fakeCtx([[/hs_nft_live/, { stdoutRaw: Buffer.concat([nul('nft', 'ok', LIVE, 'skip', '', 'skip', ''), nul('absent', '', '', '', '0', '')]) }]]);
    const p = { ...firewallSchema.parse({ src: 'r.hbs' }), rendered: `sha256:${'b'.repeat(64)} (9 bytes)` };
    const s = await firewallStep.check(ctx, p);
    expect(s.live).toBe(LIVE);
    expect(sent[0]!.cmd).not.toContain('nft -c');
    expect(sent[0]!.stdin).toBeUndefined();
  });
});

describe('firewall: apply on a host (a fake one)', () => {
  const s: FirewallState = { live: null, wanted: APP, file: absent(['/etc/nftables.d']), conf: file('flush ruleset\n') };
  const kind = (cmd: string) => (/^if rm -- /.test(cmd) ? 'confirm' : /nft -f \/etc/.test(cmd) ? 'load' : /hs_write/.test(cmd) ? `write ${/nftables\.d/.test(cmd) ? 'drop-in' : 'conf'}` : 'other');
  const LOAD = /nft -f \/etc\/nftables\.d\/inet-app\.nft/;
  const CONFIRM = /^if rm -- /;

  it('the include, the drop-in, the live load (held to the table as read, absent; the host’s revert armed first), then the controller confirms', async () => {
    const plan = planFirewall(table(), s, env);
    const { ctx, sent } = fakeCtx([
      [LOAD, { stdout: `table\n${APP}` }],
      [CONFIRM, { stdout: 'confirmed\n' }],
    ]);
    const out = await firewallStep.apply(ctx, table(), plan, s);
    expect(sent.map((x) => kind(x.cmd))).toEqual(['write conf', 'write drop-in', 'load', 'confirm']);
    expect(sent[1]!.stdin).toBe(fileText(table()));
    // The guard: the live table printed "none" when planned; the revert is armed before the load.
    const load = sent[2]!.cmd;
    expect(load).toContain(`= ${createHash('sha256').update('none').digest('hex')} ]`);
    expect(load.indexOf('setsid sh -c')).toBeLessThan(load.indexOf('nft -f /etc/nftables.d/inet-app.nft'));
    expect(load).toContain(`sleep ${REVERT_SECONDS}; if rm -- "$1" 2>/dev/null; then nft -f "$2"; fi`);
    expect(load).toContain("'table inet app\ndelete table inet app\n'");
    expect(load).toContain('env -u HOSTSMITH_RUN setsid');
    expect(sent[3]!.cmd).toContain(revertFiles(ctx).pending);
    expect((out.state as FirewallState).live).toBe(APP);
  });
  it('nft -f refusing at apply: the revert disarmed in the same exec, the files put back, and the failure says the live ruleset is as it was', async () => {
    const plan = planFirewall(table(), s, env);
    const { ctx, sent } = fakeCtx([[LOAD, { code: 1, stderr: 'Error: Could not process rule: No such file or directory\nhostsmith-failed: load 1' }]]);
    await expect(firewallStep.apply(ctx, table(), plan, s)).rejects.toThrow(
      /loading \/etc\/nftables\.d\/inet-app\.nft with nft -f failed \(exit 1\); the live ruleset is as it was: Error: Could not process rule/,
    );
    expect(sent[2]!.cmd).toMatch(/nft -f \/etc\/nftables\.d\/inet-app\.nft \|\| \{ rc=\$\?; if rm -- /);
    const after = sent.slice(3).map((x) => x.cmd);
    expect(after).toHaveLength(2);
    expect(after.map(kind)).not.toContain('load');
    expect(after.map(kind)).not.toContain('confirm');
    expect(after[0]).toMatch(/rmdir|rm -f/);
    expect(after[0]).toContain('inet-app.nft');
    expect(after[1]).toContain('/var/lib/hostsmith/backups/R1/Firewall-');
  });
  it('the host reverted before the controller came back: the step fails, saying so, and puts its files back (the live ruleset is already back)', async () => {
    const plan = planFirewall(table(), s, env);
    const { ctx, sent } = fakeCtx([
      [LOAD, { stdout: `table\n${APP}` }],
      [CONFIRM, { stdout: 'reverted\n' }],
    ]);
    await expect(firewallStep.apply(ctx, table(), plan, s)).rejects.toThrow(/the host loaded the old ruleset again by itself: the controller did not get back to it within 20s/);
    expect(
      sent
        .slice(4)
        .map((x) => x.cmd)
        .join('\n'),
    ).not.toContain('nft -f');
    expect(sent.slice(4)).toHaveLength(2);
  });
  it('the link lost when the controller comes back to confirm: the lost link goes to the engine as it is, and nothing is put back over it', async () => {
    const plan = planFirewall(table(), s, env);
    const { ctx, sent } = fakeCtx([[LOAD, { stdout: `table\n${APP}` }]]);
    const exec = ctx.exec;
    ctx.exec = async (cmd, o) => {
      if (CONFIRM.test(cmd)) throw new ConnectError('h1', 'cannot open a channel: No response from server');
      return exec(cmd, o);
    };
    await expect(firewallStep.apply(ctx, table(), plan, s)).rejects.toBeInstanceOf(ConnectError);
    expect(sent.map((x) => kind(x.cmd))).toEqual(['write conf', 'write drop-in', 'load']);
  });
  it('the scripts are sh', () => {
    const { ctx } = fakeCtx([]);
    for (const script of [armRevertScript(ctx, { family: 'inet', name: 'app' }, APP), confirmRevertScript(ctx)]) {
      // Parsed only (sh -n runs nothing): nft never runs on this machine.
      expect(spawnSync('sh', ['-n'], { input: script }).status).toBe(0);
    }
  });
  it('rollback loads the old table listing again before it puts the files back', async () => {
    const undo: FirewallUndo = {
      table: { family: 'inet', name: 'app' },
      file: { kind: 'file', path: '/etc/nftables.d/inet-app.nft', backup: '/var/lib/hostsmith/backups/R1/F/etc/nftables.d/inet-app.nft' },
      conf: null,
      live: { before: APP },
    };
    const { ctx, sent } = fakeCtx([]);
    await firewallStep.rollback(ctx, table(), undo);
    expect(sent[0]!.cmd).toContain(`printf '%s' 'table inet app\ndelete table inet app\n${APP}\n' | nft -f /dev/stdin`);
    expect(sent[1]!.cmd).toContain('/var/lib/hostsmith/backups/R1/F/etc/nftables.d/inet-app.nft');
  });
});
