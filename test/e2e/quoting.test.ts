/**
 * The hostile-value quoting matrix (issue 6, standing tests), on a real host. Each value below
 * runs a marker command (`touch /tmp/pwned-…`) if a shell ever interprets it, or is harmful in
 * another way when not passed as one word (a leading `-`, `*`, `~`, `$HOME`, a line break). Every
 * value goes, through `--var` and `{{vNN}}` as a user would pass it, into every step field that
 * reaches a shell on the host, and each run is applied (or planned, for packages) for real.
 *
 * A step may do its work, be refused at validation, or fail (and be rolled back); but after every
 * run no marker may exist, on the host or here. Where a step did its work, the value is on the host
 * byte for byte: file content, path, link target, env value and $PWD seen by the command, crontab
 * line, passwd field; and a second apply changes nothing (what is read back is what was written).
 * Runs that fail at their last step prove the rollbacks too (they remove or put back hostile
 * paths, run rollback commands with the same env and cwd): the host is then as it was, compared by
 * a listing of every name, mode, owner and content hash. A self-check first shows that each
 * marker value does run its marker when a shell interprets it.
 *
 * The host is read back with plain ssh (test/hosts/ssh.ts), and paths go to it NUL-separated on
 * stdin: the test itself never quotes a value for a shell.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { describeHosts, useSandbox } from '../hosts/use-sandbox.js';
import { sshOk, sshRun } from '../hosts/ssh.js';
import { fixture, hostsmith, onlyJsonLines, sandboxArgs, stepEvents, type CliResult } from './cli.js';

/** Markers carry this run's token, so a marker on this machine is known to be ours. */
const TOKEN = randomBytes(3).toString('hex');
const MARK = (id: string) => `/tmp/pwned-${TOKEN}-${id}`;

interface Hostile {
  id: string;
  what: string;
  value: string;
  /** Where a plain shell runs its marker: as a bare word, inside '…', inside "…", or as the command itself (the self-check). */
  fires?: 'bare' | 'single' | 'double' | 'command';
}

const fill = (unit: string, bytes: number) => unit.repeat(Math.ceil(bytes / unit.length));
/**
 * The marker path without a "/" (printf makes it): a long value with slashes would be a folder
 * tree deeper than PATH_MAX wherever it is a path, which no tool of this machine could delete.
 */
const SLASHLESS = (id: string) => `$(printf '${MARK(id).replace(/\//g, '\\057')}')`;

const VALUES: Hostile[] = [
  { id: '01', what: '$(…)', value: `x$(touch ${MARK('01')})`, fires: 'bare' },
  { id: '02', what: 'backticks', value: `\`touch ${MARK('02')}\``, fires: 'bare' },
  { id: '03', what: "closes '…'", value: `'; touch ${MARK('03')}; '`, fires: 'single' },
  { id: '04', what: 'closes "…"', value: `"; touch ${MARK('04')}; "`, fires: 'double' },
  { id: '05', what: 'newline', value: `a\ntouch ${MARK('05')}`, fires: 'bare' },
  { id: '06', what: 'leading -', value: '-rf' },
  { id: '07', what: 'leading --', value: '--help' },
  // Octal, not \x: the host's sh (dash) has a printf without \x.
  { id: '08', what: 'hidden command name', value: `$(printf '\\164ouch') ${MARK('08')}`, fires: 'command' },
  { id: '09', what: 'unicode', value: 'ünïcødé ✓ 日本' },
  { id: '10', what: '20 kB with blanks', value: `long-${fill(`$(touch ${SLASHLESS('10')}) \`touch ${SLASHLESS('10')}\` 'q' "d"; `, 20_000)}`, fires: 'bare' },
  { id: '11', what: 'glob', value: '*' },
  { id: '12', what: 'tilde', value: '~root' },
  { id: '13', what: 'variable', value: '$HOME' },
  { id: '14', what: 'backslash', value: '\\' },
  { id: '15', what: 'percent', value: '%' },
  // No blanks: these pass every account-name check that only looks for blanks and ":".
  { id: '16', what: '; and ${IFS}', value: `;touch\${IFS}${MARK('16')};`, fires: 'bare' },
  { id: '17', what: '$(…) and ${IFS}', value: `$(touch\${IFS}${MARK('17')})`, fires: 'bare' },
  { id: '18', what: 'redirection', value: `>${MARK('18')}`, fires: 'bare' },
  { id: '19', what: 'pipe', value: `|touch\${IFS}${MARK('19')}`, fires: 'bare' },
  { id: '20', what: "quote()'s own '\\''", value: `'x'\\''$(touch ${MARK('20')})'`, fires: 'double' },
  { id: '21', what: 'carriage return', value: `a\rtouch ${MARK('21')}` },
  { id: '22', what: 'backslash before $(…)', value: `\\$(touch ${MARK('22')})` },
  { id: '23', what: 'lone -', value: '-' },
  { id: '24', what: 'blanks and tabs around', value: '  two  spaces\tand\ttabs  ' },
  { id: '25', what: '20 kB without blanks', value: fill(`$(touch\${IFS}${SLASHLESS('25').replace(' ', '${IFS}')})`, 20_000), fires: 'bare' },
  // What echo (dash's turns \c, \101 into an end and an "A") or a printf format would change.
  { id: '26', what: 'echo escapes, printf format', value: 'a\\c \\101 \\n %s %n \\\\' },
];

const ref = (h: Hostile) => `{{v${h.id}}}`;
const VAR_ARGS = VALUES.flatMap((h) => ['--var', `v${h.id}=${h.value}`]);
const VARS_YAML = VALUES.map((h) => `  v${h.id}: { required: true }`).join('\n');

// ---- what the schemas let through, so a value refused by mistake fails the test too ----

const hasBreak = (s: string) => /[\r\n]/.test(s);
/** useradd refuses passwd fields with control characters (a tab, a carriage return). */
const hasControl = (s: string) => /[\0-\x1f\x7f]/.test(s);
/** `prefix + value` is a path the host can hold and the schema takes (absolute, normalised, short names). */
const isPath = (prefix: string, v: string) => {
  const p = prefix + v;
  return !hasBreak(v) && posix.normalize(p) === p && !p.endsWith('/') && p.split('/').every((c) => Buffer.byteLength(c) <= 255);
};
const isRegex = (v: string) => {
  try {
    new RegExp(v);
    return true;
  } catch {
    return false;
  }
};

/** One step of a generated recipe: non-fatal, so the other values still get their turn. */
function step(name: string, body: string, extra: string[] = []): string {
  return [`  - name: ${JSON.stringify(name)}`, '    fatal: false', ...extra.map((e) => `    ${e}`), `    ${body}`].join('\n');
}

function recipe(name: string, steps: string[], o: { failAtEnd?: boolean } = {}): string {
  const fail = o.failAtEnd ? ['  - name: fail at the end\n    command: { run: "exit 7" }'] : [];
  return `name: ${name}\nvars:\n${VARS_YAML}\nsteps:\n${[...steps, ...fail].join('\n')}\n`;
}

const y = JSON.stringify;
/** Messages carry values of 20 kB: cut each long run of text. */
const short = (s: string) => s.replace(/[^\n]{400,}/g, (m) => `${m.slice(0, 200)}…(${m.length} chars)…${m.slice(-100)}`);

describeHosts('hostile values through every field that reaches a shell: no marker ever runs, values land byte for byte', () => {
  const sandbox = useSandbox(1);
  const dirs: string[] = [];
  const temp = () => {
    const d = mkdtempSync(join(tmpdir(), 'hostsmith-quoting-'));
    dirs.push(d);
    return d;
  };
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const state = temp();

  /** What is in root's home and in /home before the tests: anything else there is theirs. */
  let initial: Set<string>;
  const topLevel = async () =>
    Buffer.from(await ssh('find /root /home -mindepth 1 -maxdepth 1 -print0 | base64 -w0'), 'base64')
      .toString('utf8')
      .split('\0')
      .filter(Boolean);
  beforeAll(async () => {
    initial = new Set(await topLevel());
  });

  /**
   * After each test, pass or fail, what the tests made goes (a marker too, so the next test
   * reports its own): here with the host's own rm, as folders named by long values may nest
   * deeper than PATH_MAX, which the sandbox's clean-up on this machine could not delete.
   */
  afterEach(async () => {
    await ssh(
      'for u in $(getent passwd | cut -d: -f1 | grep -E \'^q[hcg][0-9]{2}$\'); do userdel -r "$u" 2>/dev/null || userdel "$u"; done; crontab -r 2>/dev/null; rm -rf /root/qm /tmp/pwned-*; true',
    );
    await perPath(
      (await topLevel()).filter((p) => !initial.has(p)),
      'rm -rf -- "$p"',
    );
  });

  const host = () => sandbox().hosts[0]!;
  const ssh = (cmd: string, input?: string) => sshOk(sandbox(), host(), cmd, input === undefined ? {} : { input });

  /** Runs `body` once per path (in "$p"), the paths NUL-separated on stdin; one output line per path. */
  async function perPath(paths: string[], body: string): Promise<string[]> {
    if (!paths.length) return [];
    const out = await ssh(`while IFS= read -r -d '' p; do ${body}; printf '\\n'; done`, paths.map((p) => `${p}\0`).join(''));
    const lines = out.split('\n').slice(0, -1);
    expect(lines).toHaveLength(paths.length);
    return lines;
  }

  interface Probe {
    kind: 'file' | 'dir' | 'link' | 'none';
    owner?: string;
    group?: string;
    /** A file's bytes or a link's target. */
    data?: Buffer;
  }

  type Twelve = [Probe, Probe, Probe, Probe, Probe, Probe, Probe, Probe, Probe, Probe, Probe, Probe];

  async function probe(paths: string[]): Promise<Probe[]> {
    const stat = `"$(stat -c '%a %U %G' -- "$p")"`;
    const lines = await perPath(
      paths,
      `if [ -L "$p" ]; then printf 'link %s ' ${stat}; readlink -n -- "$p" | base64 -w0; ` +
        `elif [ -f "$p" ]; then printf 'file %s ' ${stat}; base64 -w0 < "$p"; ` +
        `elif [ -d "$p" ]; then printf 'dir %s ' ${stat}; else printf none; fi`,
    );
    return lines.map((l) => {
      const [kind, , owner, group, b64] = l.split(' ');
      return kind === 'none' ? { kind: 'none' } : { kind: kind as Probe['kind'], owner, group, data: Buffer.from(b64 ?? '', 'base64') };
    });
  }

  /** Creates each path as a folder (or a file holding the word `line` and a newline); true where it could. */
  async function precreate(paths: string[], line?: string): Promise<boolean[]> {
    if (line !== undefined) expect(line).toMatch(/^\w+$/);
    const make = line === undefined ? 'mkdir -p -- "$p"' : `mkdir -p -- "$(dirname -- "$p")" && printf '%s\\n' ${line} > "$p"`;
    return (await perPath(paths, `{ ${make}; } 2>/dev/null && printf ok || printf no`)).map((l) => l === 'ok');
  }

  /**
   * Every name under the folders with its type, mode and owner (and a link's target, a file's
   * size), then every file's sha256: what a rollback must put back. Folder sizes and times are left
   * out (a folder does not shrink when its entries go).
   */
  async function snapshot(roots: string[]): Promise<string[]> {
    const out: string[] = [];
    for (const root of roots) {
      const listing = await ssh(
        `cd ${root} 2>/dev/null || exit 0; ` +
          `find . -mindepth 1 \\( -type d -printf 'd %m %u:%g %P\\0' \\) -o \\( -type l -printf 'l %u:%g %P -> %l\\0' \\) -o -printf '%y %m %u:%g %s %P\\0' | sort -z | base64 -w0; echo; ` +
          `find . -type f -exec sha256sum -z -- {} + | sort -z | base64 -w0`,
      );
      for (const part of listing.split('\n')) {
        out.push(
          ...Buffer.from(part, 'base64')
            .toString('utf8')
            .split('\0')
            .filter(Boolean)
            .map((l) => `${root}: ${l}`),
        );
      }
    }
    return out;
  }

  /** No marker on the host, and none here (a value must not reach a shell on this side either). */
  async function noMarkers(after: string): Promise<void> {
    const r = await sshRun(sandbox(), host(), 'ls -d /tmp/pwned-* 2>/dev/null; true');
    expect(r.stdout, `a marker command ran on the host during ${after}`).toBe('');
    expect(
      readdirSync('/tmp').filter((f) => f.startsWith(`pwned-${TOKEN}`)),
      `a marker command ran on this machine during ${after}`,
    ).toEqual([]);
  }

  /**
   * Applies (or plans) a generated recipe with every value as a --var. Whatever each step did, no
   * marker exists afterwards, and the run ends normally (exit 0, 1 or 2, never "unexpected
   * error") with JSON lines only on stdout. Returns each step's finished event by name.
   */
  async function run(yaml: string, o: { mode?: 'apply' | 'plan'; files?: Record<string, string>; what: string }): Promise<{ r: CliResult; steps: Map<string, Record<string, any>> }> {
    const dir = fixture({ 'r.yml': yaml, ...o.files });
    dirs.push(dir);
    const mode = o.mode ?? 'apply';
    const r = await hostsmith([mode, join(dir, 'r.yml'), ...(mode === 'apply' ? ['--yes'] : []), '--json', ...sandboxArgs(sandbox(), state), '--hosts', host().name, ...VAR_ARGS]);
    // First of all: nothing ran that a value carried.
    await noMarkers(o.what);
    const said = short(`${o.what}: exit ${r.code}\n${r.stderr}\n${problems(r)}`);
    expect([0, 1, 2], said).toContain(r.code);
    expect(r.stderr, said).not.toMatch(/unexpected error/i);
    expect(onlyJsonLines(r), said).toBeGreaterThan(0);
    const steps = new Map(stepEvents(r).map((e) => [e.step as string, e]));
    return { r, steps };
  }

  /** What went wrong in a run, one line per failed step or rollback. */
  function problems(r: CliResult): string {
    return r.events
      .filter((e) => (e.event === 'step-finished' && e.status === 'failed') || (e.event === 'rollback-finished' && e.status !== 'rolled-back') || e.event === 'host-finished')
      .map((e) => short(`${e.event} ${e.step ?? ''} ${e.status}: ${e.error ?? ''}`))
      .join('\n');
  }

  /** A second apply of the same recipe changes nothing: each step reads back from the host what it wrote. */
  async function expectSettled(yaml: string, first: Map<string, Record<string, any>>, o: { files?: Record<string, string>; what: string }): Promise<void> {
    const again = await run(yaml, { ...o, what: `${o.what}, applied again` });
    expect(again.steps.size).toBeGreaterThan(0);
    for (const [name, now] of again.steps) {
      if (first.get(name)?.status !== 'changed') continue;
      expect.soft(now?.status, short(`${name}, applied again: ${now?.error ?? now?.summary}`)).toBe('unchanged');
    }
  }

  /** The run failed at its last step and rolled back every completed step, fully. */
  function expectRolledBack(r: CliResult, what: string): void {
    const said = short(`${what}:\n${r.stderr}\n${problems(r)}`);
    expect(r.code, said).toBe(1);
    const finished = r.events.find((e) => e.event === 'host-finished')!;
    expect(finished.status, said).toBe('rolled-back');
    const rb = r.events.filter((e) => e.event === 'rollback-finished');
    expect(rb.length, said).toBeGreaterThan(0);
    expect(
      rb.filter((e) => e.status !== 'rolled-back'),
      said,
    ).toEqual([]);
  }

  /** A step's status, checked against what the schema allows for its value. */
  function statusOf(steps: Map<string, Record<string, any>>, name: string, mustLand: boolean | 'unchanged'): string {
    const e = steps.get(name);
    expect.soft(e, `no step-finished event for "${name}"`).toBeDefined();
    const status = e!.status as string;
    expect.soft(['changed', 'unchanged', 'failed', 'skipped'], name).toContain(status);
    const said = short(`${name}: ${e!.error ?? e!.summary}`);
    if (mustLand === 'unchanged') expect.soft(status, said).toBe('unchanged');
    else if (mustLand) expect.soft(status, said).toBe('changed');
    return status;
  }

  const bytes = (b: Buffer | undefined) => (b ?? Buffer.alloc(0)).toString('utf8');

  it('self-check: each marker value does run its marker when a shell interprets it (a command that forgets {{quote}})', async () => {
    const live = VALUES.filter((h) => h.fires);
    const wrap = {
      bare: (s: string) => `echo ${s} >/dev/null`,
      single: (s: string) => `echo '${s}' >/dev/null`,
      double: (s: string) => `echo "${s}" >/dev/null`,
      command: (s: string) => s,
    };
    const steps = live.map((h) => step(`raw ${h.id}`, `command: { run: ${y(wrap[h.fires!](ref(h)))} }`));
    const dir = fixture({ 'r.yml': recipe('quoting-self-check', steps) });
    dirs.push(dir);
    const r = await hostsmith(['apply', join(dir, 'r.yml'), '--yes', '--json', ...sandboxArgs(sandbox(), state), '--hosts', host().name, ...VAR_ARGS]);
    expect(r.code, short(`${r.stderr}\n${problems(r)}`)).toBe(0);
    const made = (await ssh('ls -d /tmp/pwned-* 2>/dev/null; true')).split('\n').filter(Boolean).sort();
    expect(made).toEqual(live.map((h) => MARK(h.id)).sort());
    await ssh('rm -f /tmp/pwned-*');
    await noMarkers('the self-check clean-up');
  });

  it('file (content, path, directory, absent, link target, owner, group), template (vars, dest), line (line, match, path)', async () => {
    const Q = '/root/qm';
    const P = {
      path: `${Q}/path/`,
      dir: `${Q}/dir/`,
      absent: `${Q}/absent/`,
      tdest: `${Q}/tdest/`,
      lpath: `${Q}/lpath/`,
    };
    const fields: Record<string, (h: Hostile) => string> = {
      'file.path': (h) => `file: { path: ${y(P.path + ref(h))}, content: "ok" }`,
      'file.directory': (h) => `file: { path: ${y(P.dir + ref(h))}, state: directory }`,
      'file.absent': (h) => `file: { path: ${y(P.absent + ref(h))}, state: absent }`,
      'file.target': (h) => `file: { path: ${y(`${Q}/link/${h.id}`)}, state: link, target: ${y(ref(h))} }`,
      'template.dest': (h) => `template: { src: t.hbs, dest: ${y(P.tdest + ref(h))}, vars: { val: "ok" } }`,
      'line.path': (h) => `line: { path: ${y(P.lpath + ref(h))}, line: "ok", create: true }`,
      'file.content': (h) => `file: { path: ${y(`${Q}/content/${h.id}`)}, content: ${y(ref(h))} }`,
      'file.owner': (h) => `file: { path: ${y(`${Q}/owner/${h.id}`)}, content: "ok", owner: ${y(ref(h))} }`,
      'file.group': (h) => `file: { path: ${y(`${Q}/group/${h.id}`)}, content: "ok", group: ${y(ref(h))} }`,
      'template.vars': (h) => `template: { src: t.hbs, dest: ${y(`${Q}/tvars/${h.id}`)}, vars: { val: ${y(ref(h))} } }`,
      'line.line': (h) => `line: { path: ${y(`${Q}/line/${h.id}`)}, line: ${y(ref(h))}, create: true }`,
      'line.match': (h) => `line: { path: ${y(`${Q}/match/${h.id}`)}, line: "after", match: ${y(ref(h))} }`,
    };
    const stepsOf = (names: string[]) => VALUES.flatMap((h) => names.map((f) => step(`${f} ${h.id}`, fields[f]!(h))));
    const files = { 't.hbs': '{{val}}' };

    // What the host holds before: files for the absent steps, the match steps and a canary
    // beside them that a `*` must never reach.
    const absentAt = VALUES.map((h) => P.absent + h.value);
    const absentMade = await precreate(absentAt, 'pre');
    expect(
      await precreate(
        VALUES.map((h) => `${Q}/match/${h.id}`),
        'before',
      ),
    ).not.toContain(false);
    expect(await precreate([`${P.absent}canary`, `${P.path}canary`, `${P.dir}canary`, `${P.tdest}canary`, `${P.lpath}canary`], 'canary')).not.toContain(false);
    const before = await snapshot([Q]);
    expect(before.length).toBeGreaterThan(VALUES.length);

    // 1. Made, then rolled back by the failing last step: removed again, or put back from backups
    // (template and line steps undo through the same code as file steps).
    const first = await run(recipe('quoting-paths-rollback', stepsOf(['file.path', 'file.directory', 'file.absent', 'file.target']), { failAtEnd: true }), {
      files,
      what: 'the path steps rolled back',
    });
    expectRolledBack(first.r, 'the path steps rolled back');
    const made = stepEvents(first.r).filter((e) => e.status === 'changed').length;
    expect(made).toBeGreaterThan(3 * VALUES.length);
    expect(first.r.events.filter((e) => e.event === 'rollback-finished')).toHaveLength(made);
    expect(await snapshot([Q])).toEqual(before);

    // 2. Every field, kept: each value that did its work is on the host as it was given.
    const { steps } = await run(recipe('quoting-paths', stepsOf(Object.keys(fields))), { files, what: 'the path and value steps' });
    const at = (h: Hostile) => [
      P.path + h.value,
      P.dir + h.value,
      P.absent + h.value,
      `${Q}/link/${h.id}`,
      P.tdest + h.value,
      P.lpath + h.value,
      `${Q}/content/${h.id}`,
      `${Q}/owner/${h.id}`,
      `${Q}/group/${h.id}`,
      `${Q}/tvars/${h.id}`,
      `${Q}/line/${h.id}`,
      `${Q}/match/${h.id}`,
    ];
    const seen = await probe(VALUES.flatMap(at));
    VALUES.forEach((h, i) => {
      const [path, dir, absent, link, tdest, lpath, content, owner, group, tvars, line, match] = seen.slice(i * 12, i * 12 + 12) as Twelve;
      const v = h.value;
      const ok = (field: string, mustLand: boolean) => statusOf(steps, `${field} ${h.id}`, mustLand) === 'changed';
      if (ok('file.path', isPath(P.path, v))) expect.soft([path.kind, bytes(path.data)], `file.path ${h.id}`).toEqual(['file', 'ok']);
      if (ok('file.directory', isPath(P.dir, v))) expect.soft(dir.kind, `file.directory ${h.id}`).toBe('dir');
      if (ok('file.absent', isPath(P.absent, v) && absentMade[i]!)) expect.soft(absent.kind, `file.absent ${h.id}`).toBe('none');
      if (ok('file.target', !hasBreak(v) && Buffer.byteLength(v) < 4096)) expect.soft([link.kind, bytes(link.data)], `file.target ${h.id}`).toEqual(['link', v]);
      if (ok('template.dest', isPath(P.tdest, v))) expect.soft([tdest.kind, bytes(tdest.data)], `template.dest ${h.id}`).toEqual(['file', 'ok']);
      if (ok('line.path', isPath(P.lpath, v))) expect.soft([lpath.kind, bytes(lpath.data)], `line.path ${h.id}`).toEqual(['file', 'ok\n']);
      if (ok('file.content', true)) expect.soft([content.kind, bytes(content.data)], `file.content ${h.id}`).toEqual(['file', v]);
      // No account has such a name: chown refuses it, and no file is left half-made.
      if (ok('file.owner', false)) expect.soft(owner.owner, `file.owner ${h.id}`).toBe(v);
      else expect.soft(owner.kind, `file.owner ${h.id}`).toBe('none');
      if (ok('file.group', false)) expect.soft(group.group, `file.group ${h.id}`).toBe(v);
      else expect.soft(group.kind, `file.group ${h.id}`).toBe('none');
      if (ok('template.vars', true)) expect.soft([tvars.kind, bytes(tvars.data)], `template.vars ${h.id}`).toEqual(['file', v]);
      if (ok('line.line', !hasBreak(v))) expect.soft([line.kind, bytes(line.data)], `line.line ${h.id}`).toEqual(['file', `${v}\n`]);
      if (ok('line.match', isRegex(v))) expect.soft([match.kind, bytes(match.data)], `line.match ${h.id}`).toEqual(['file', new RegExp(v).test('before') ? 'after\n' : 'before\nafter\n']);
    });
    // Read back, the hostile names, targets and lines are what was written.
    await expectSettled(recipe('quoting-paths', stepsOf(['file.path', 'file.target', 'line.line', 'file.content'])), steps, { files, what: 'the path and value steps' });
    // The canaries beside the hostile names are untouched.
    expect((await probe([`${P.absent}canary`, `${P.path}canary`, `${P.dir}canary`])).map((p) => bytes(p.data))).toEqual(['canary\n', 'canary\n', 'canary\n']);
  });

  it('command (env, cwd, creates, removes, run and unless through {{quote}}, user), run and rolled back', async () => {
    const Q = '/root/qm';
    // A relative cwd, creates and removes are relative to the login user's home (/root): the
    // value is the whole path, a leading "-" included. Each one is made first as a folder.
    const inHome = VALUES.map((h) => `/root/${h.value}`);
    const made = await precreate(inHome);
    const write = (what: string, h: Hostile, text: string) => `printf %s ${text} > ${Q}/${what}/${h.id}`;
    const steps = VALUES.flatMap((h) => [
      step(`command.env ${h.id}`, `command: { run: ${y(write('env', h, '"$V"'))}, rollback: ${y(write('env-rb', h, '"$V"'))}, env: { V: ${y(ref(h))} } }`),
      step(`command.cwd ${h.id}`, `command: { run: ${y(write('cwd', h, '"$PWD"'))}, rollback: ${y(write('cwd-rb', h, '"$PWD"'))}, cwd: ${y(ref(h))} }`),
      step(`command.creates ${h.id}`, `command: { run: ${y(write('creates', h, 'ran'))}, rollback: "true", creates: ${y(ref(h))} }`),
      step(`command.removes ${h.id}`, `command: { run: ${y(write('removes', h, 'ran'))}, rollback: "true", removes: ${y(ref(h))} }`),
      step(`command.run ${h.id}`, `command: { run: ${y(write('run', h, `{{quote v${h.id}}}`))}, rollback: ${y(write('run-rb', h, `{{quote v${h.id}}}`))} }`),
      step(`unless ${h.id}`, `command: { run: "true", rollback: "true" }`, [`unless: ${y(`${write('unless', h, `{{quote v${h.id}}}`)}; false`)}`]),
      step(`command.user ${h.id}`, `command: { run: "true", rollback: "true", user: ${y(ref(h))} }`),
    ]);
    await ssh(`mkdir -p ${['env', 'env-rb', 'cwd', 'cwd-rb', 'creates', 'removes', 'run', 'run-rb', 'unless'].map((d) => `${Q}/${d}`).join(' ')}`);
    const { r, steps: done } = await run(recipe('quoting-commands', steps, { failAtEnd: true }), { what: 'the command steps' });
    expectRolledBack(r, 'the command steps');

    const files = (what: string) => VALUES.map((h) => `${Q}/${what}/${h.id}`);
    const [env, envRb, cwd, cwdRb, creates, removes, run_, runRb, unless] = await Promise.all(
      ['env', 'env-rb', 'cwd', 'cwd-rb', 'creates', 'removes', 'run', 'run-rb', 'unless'].map((w) => probe(files(w))),
    );
    VALUES.forEach((h, i) => {
      const v = h.value;
      const text = (p: Probe[] | undefined) => [p![i]!.kind, bytes(p![i]!.data)];
      statusOf(done, `command.env ${h.id}`, true);
      // The command and its rollback (run from the journal's undo data) saw the same value.
      expect.soft(text(env), `command.env ${h.id}`).toEqual(['file', v]);
      expect.soft(text(envRb), `command.env ${h.id} rollback`).toEqual(['file', v]);
      if (statusOf(done, `command.cwd ${h.id}`, made[i]! && !hasBreak(v)) === 'changed') {
        expect.soft(text(cwd), `command.cwd ${h.id}`).toEqual(['file', `/root/${v}`]);
        expect.soft(text(cwdRb), `command.cwd ${h.id} rollback`).toEqual(['file', `/root/${v}`]);
      }
      // The folder exists: a creates guard skips the command, a removes guard lets it run.
      if (statusOf(done, `command.creates ${h.id}`, made[i]! && !hasBreak(v) ? 'unchanged' : false) === 'unchanged') {
        expect.soft(text(creates), `command.creates ${h.id}`).toEqual(['none', '']);
      }
      if (statusOf(done, `command.removes ${h.id}`, made[i]! && !hasBreak(v)) === 'changed') {
        expect.soft(text(removes), `command.removes ${h.id}`).toEqual(['file', 'ran']);
      }
      statusOf(done, `command.run ${h.id}`, true);
      expect.soft(text(run_), `command.run ${h.id}`).toEqual(['file', v]);
      expect.soft(text(runRb), `command.run ${h.id} rollback`).toEqual(['file', v]);
      statusOf(done, `unless ${h.id}`, true);
      expect.soft(text(unless), `unless ${h.id}`).toEqual(['file', v]);
      // No account has such a name: sudo refuses.
      statusOf(done, `command.user ${h.id}`, false);
    });
  });

  it('cron (name, command, user): the crontab holds each entry as given', async () => {
    await sshRun(sandbox(), host(), 'crontab -r');
    // 1 January only: cron must not run these entries while the test looks.
    const at = '0 0 1 1 *';
    const steps = VALUES.flatMap((h) => [
      step(`cron.name ${h.id}`, `cron: { name: ${y(ref(h))}, schedule: ${y(at)}, command: "true" }`),
      step(`cron.command ${h.id}`, `cron: { name: ${y(`qc${h.id}`)}, schedule: ${y(at)}, command: ${y(ref(h))} }`),
      step(`cron.user ${h.id}`, `cron: { name: ${y(`qu${h.id}`)}, schedule: ${y(at)}, command: "true", user: ${y(ref(h))} }`),
    ]);
    const yaml = recipe('quoting-cron', steps);
    const { steps: done } = await run(yaml, { what: 'the cron steps' });
    let want = '';
    for (const h of VALUES) {
      const v = h.value;
      const fits = Buffer.byteLength(v) < 1000;
      if (statusOf(done, `cron.name ${h.id}`, !hasBreak(v) && v === v.trim() && fits) === 'changed') want += `# hostsmith: ${v}\n${at} true\n`;
      // crontab itself refuses a command that starts with "*".
      if (statusOf(done, `cron.command ${h.id}`, !hasBreak(v) && !/(^|[^\\])%/.test(v) && !v.startsWith('*') && fits) === 'changed') want += `# hostsmith: qc${h.id}\n${at} ${v}\n`;
      statusOf(done, `cron.user ${h.id}`, false);
    }
    const tab = await sshRun(sandbox(), host(), 'crontab -l');
    expect(tab.stdout).toBe(want);
    await expectSettled(yaml, done, { what: 'the cron steps' });
  });

  it('user (home, comment, shell, groups, name), group name, service name; package names (plan)', async () => {
    const accounts = ['/etc/passwd', '/etc/group', '/etc/shadow', '/etc/gshadow', '/etc/subuid', '/etc/subgid'];
    const snap = async () => [await ssh(`sha256sum ${accounts.join(' ')}`), ...(await snapshot(['/home', '/var/mail']))];
    const before = await snap();

    // 1. Homes named by the value, made and then rolled back: users, groups and homes go again.
    const home = (h: Hostile) => step(`user.home ${h.id}`, `user: { name: ${y(`qh${h.id}`)}, home: ${y(`/home/${ref(h)}`)} }`);
    const first = await run(recipe('quoting-users-rollback', VALUES.map(home), { failAtEnd: true }), { what: 'the user homes rolled back' });
    expectRolledBack(first.r, 'the user homes rolled back');
    expect(await snap()).toEqual(before);

    // 2. Every account field, kept. Comment and shell are plain passwd fields: one account has both.
    const passwdFields = (h: Hostile) => step(`user.comment+shell ${h.id}`, `user: { name: ${y(`qc${h.id}`)}, comment: ${y(ref(h))}, shell: ${y(`/bin/${ref(h)}`)}, create_home: false }`);
    const steps = VALUES.flatMap((h) => [
      home(h),
      passwdFields(h),
      step(`user.groups ${h.id}`, `user: { name: ${y(`qg${h.id}`)}, groups: [${y(ref(h))}], create_home: false }`),
      step(`user.name ${h.id}`, `user: { name: ${y(ref(h))}, create_home: false }`),
      step(`group.name ${h.id}`, `group: { name: ${y(ref(h))} }`),
      step(`service.name ${h.id}`, `service: { name: ${y(ref(h))}, state: started }`),
    ]);
    const { steps: done } = await run(recipe('quoting-users', steps), { what: 'the account steps' });
    const passwd = new Map(
      (await ssh('getent passwd'))
        .split('\n')
        .filter(Boolean)
        .map((l) => [l.split(':')[0]!, l.split(':')] as const),
    );
    for (const h of VALUES) {
      const v = h.value;
      const field = (name: string, i: number) => passwd.get(name)?.[i];
      if (statusOf(done, `user.home ${h.id}`, isPath('/home/', v) && !v.includes(':') && !v.includes('/') && !hasControl(v)) === 'changed')
        expect.soft(field(`qh${h.id}`, 5), `user.home ${h.id}`).toBe(`/home/${v}`);
      if (statusOf(done, `user.comment+shell ${h.id}`, isPath('/bin/', v) && !v.includes(':') && !hasControl(v)) === 'changed') {
        expect.soft(field(`qc${h.id}`, 4), `user.comment ${h.id}`).toBe(v);
        expect.soft(field(`qc${h.id}`, 6), `user.shell ${h.id}`).toBe(`/bin/${v}`);
      }
      for (const f of ['user.groups', 'user.name', 'group.name', 'service.name']) statusOf(done, `${f} ${h.id}`, false);
    }
    // Read back (getent, the home's state), each account is as it was made.
    await expectSettled(
      recipe(
        'quoting-users',
        VALUES.flatMap((h) => [home(h), passwdFields(h)]),
      ),
      done,
      { what: 'the account steps' },
    );
    // Accounts named by the value were never made.
    expect([...passwd.keys()].filter((n) => VALUES.some((h) => h.value === n))).toEqual([]);

    // Packages are only planned: a name the host would take would install it.
    const pkgs = VALUES.flatMap((h) => [
      step(`package.install ${h.id}`, `package: { install: [${y(ref(h))}] }`),
      step(`package.install-string ${h.id}`, `package: { install: ${y(ref(h))} }`),
      step(`package.remove ${h.id}`, `package: { remove: [${y(ref(h))}] }`),
    ]);
    const plan = await run(recipe('quoting-packages', pkgs), { mode: 'plan', what: 'the package plan' });
    for (const h of VALUES) for (const f of ['package.install', 'package.install-string', 'package.remove']) statusOf(plan.steps, `${f} ${h.id}`, false);
  });
});
