/**
 * `git`: params at load, params → footprint, what the host printed → state, params + state → plan
 * (clone, move with the commits it passes, nothing, or the refusals), and then the scripts for real
 * against repositories made here with this machine's git: clone, move, the rollback the controller
 * runs and the one the lockout watchdog runs, each back to what was there.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StepError } from '../../src/errors.js';
import { checkScript, gitSchema, gitStep, hostRollbackScript, keptRef, parseCheck, planGit, resolveTarget, type GitState, type GitUndo } from '../../src/steps/git/git.js';
import { localCtx } from './local-ctx.js';

const env = { runId: 'R1', step: 'App', backupDir: '/var/lib/hostsmith/backups/R1' };
const params = (o: Record<string, unknown> = {}) => gitSchema.parse({ repo: 'https://git.example.com/app.git', dest: '/srv/app', ...o });
const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);
const remote = (refs: Record<string, string>, head = 'main') => ({ head, refs: { 'refs/heads/main': A, ...refs } });
const clone = (o: Partial<GitState> = {}): GitState => ({
  git: true,
  runner: 'root',
  dest: 'clone',
  missing: [],
  head: A,
  branch: 'main',
  origin: 'https://git.example.com/app.git',
  branches: { main: A },
  changed: [],
  remote: remote({}),
  ...o,
});
const absent = (o: Partial<GitState> = {}): GitState => ({ git: true, runner: 'root', dest: 'absent', missing: ['/srv/app'], remote: remote({}), ...o });

describe('git: params, checked at load', () => {
  it.each([
    [{ repo: 'https://x/app.git', dest: '/srv/app' }],
    [{ repo: 'git@github.com:org/app.git', dest: '/srv/app', version: 'v1.2.0', depth: 1, force: true, owner: 'deploy', group: 'www-data' }],
    [{ repo: '/srv/app.git', dest: '/srv/app', version: 'release/2024-01' }],
    [{ repo: '{{repo_url}}', dest: '/srv/app', version: '{{ app_version }}' }],
  ])('%j is accepted', (p) => {
    expect(gitSchema.safeParse(p).success).toBe(true);
  });
  it.each([
    [{ repo: '-uhttps://x', dest: '/srv/app' }, /starts with/],
    [{ repo: 'https://x\n', dest: '/srv/app' }, /line break/],
    [{ repo: '/srv/app.git/', dest: '/srv/app' }, /normalised/],
    [{ repo: 'x', dest: 'srv/app' }, /absolute/],
    [{ repo: 'x', dest: '/' }, /cannot clone into \/ itself/],
    [{ repo: 'x', dest: '/srv/app', version: '--upload-pack=touch /x' }, /starts with/],
    [{ repo: 'x', dest: '/srv/app', version: 'v1 v2' }, /blank/],
    [{ repo: 'x', dest: '/srv/app', version: 'main..dev' }, /not a valid branch or tag name/],
    [{ repo: 'x', dest: '/srv/app', version: 'HEAD~1' }, /~/],
    [{ repo: 'x', dest: '/srv/app', depth: 0 }, /greater than or equal to 1/],
    [{ repo: 'x', dest: '/srv/app', owner: '-x' }, /starts with/],
    [{ repo: 'x', dest: '/srv/app', branch: 'main' }, /Unrecognized key/],
  ])('%j is refused', (p, why) => {
    const r = gitSchema.safeParse(p);
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(why);
  });
  it('force is off unless asked for', () => {
    expect(params().force).toBe(false);
  });
});

describe('git: footprint', () => {
  it('reads dest, git itself, a repository on the host and the accounts; writes only the dest tree', () => {
    expect(gitStep.footprint(params({ repo: '/srv/app.git', owner: 'deploy', group: 'web' }))).toEqual({
      reads: ['path:/srv/app', 'pkg:git', 'path:/srv/app.git', 'user:deploy', 'group:web'],
      writes: ['path:/srv/app'],
    });
    expect(gitStep.footprint(params())).toEqual({ reads: ['path:/srv/app', 'pkg:git'], writes: ['path:/srv/app'] });
  });
  it('a clone it made wrote the folders above dest it made too', () => {
    const undo: GitUndo = { dest: '/srv/app', runner: 'root', to: A, clone: 'made', dirs: ['/srv', '/srv/app'] };
    expect(gitStep.wrote!(params(), undo)).toEqual(['path:/srv']);
  });
});

describe('git: what the host printed → state', () => {
  const p = params({ version: 'v2' });
  it('a clone: its HEAD, branch, origin, branches, modified files (NUL-separated, renames folded) and the remote refs', () => {
    const out = [
      'runner deploy',
      `ls ${A}\tHEAD`,
      'ls ref: refs/heads/main\tHEAD',
      `ls ${B}\trefs/tags/v2`,
      `ls ${C}\trefs/tags/v2^{}`,
      'dest clone',
      `head ${A}`,
      'branch main',
      'origin https://git.example.com/app.git',
      `bref ${A} main`,
      `bref ${B} feature/x`,
      'changed',
      ' M app.conf\0R  new name\0old name\0M  bin/run\0',
    ].join('\n');
    expect(parseCheck(out, p)).toEqual({
      git: true,
      runner: 'deploy',
      dest: 'clone',
      missing: [],
      head: A,
      branch: 'main',
      origin: 'https://git.example.com/app.git',
      branches: { main: A, 'feature/x': B },
      changed: [' M app.conf', 'R  new name', 'M  bin/run'],
      remote: { head: 'main', refs: { HEAD: A, 'refs/tags/v2': B, 'refs/tags/v2^{}': C } },
    });
  });
  it('dest absent with two folders missing; an unreadable remote', () => {
    const s = parseCheck(['runner root', 'lserr fatal: repository not found', 'dest absent 2', ''].join('\n'), params({ dest: '/srv/www/app' }));
    expect(s).toEqual({ git: true, runner: 'root', dest: 'absent', missing: ['/srv/www', '/srv/www/app'], remote: { error: 'fatal: repository not found' } });
  });
  it('an empty folder, a foreign clone, no git', () => {
    expect(parseCheck('runner root\ndest empty deploy web 2775\n', params({ version: A })).dir).toEqual({ owner: 'deploy', group: 'web', mode: 0o2775 });
    expect(parseCheck('runner root\ndest foreign mallory\n', params({ version: A })).foreignOwner).toBe('mallory');
    expect(parseCheck('nogit\n', p)).toEqual({ git: false, missing: [] });
  });
  it('a full commit id needs no read of the remote; a branch or tag is looked up exactly', () => {
    expect(checkScript(params({ version: A }))).not.toContain('ls-remote');
    expect(checkScript(params({ version: 'v2' }))).toContain("ls-remote --symref -- https://git.example.com/app.git HEAD refs/heads/v2 refs/tags/v2 'refs/tags/v2^{}'");
  });
});

describe('git: the target', () => {
  it.each([
    [undefined, remote({}), { kind: 'branch', name: 'main', sha: A }],
    ['dev', remote({ 'refs/heads/dev': B }), { kind: 'branch', name: 'dev', sha: B }],
    ['v2', remote({ 'refs/tags/v2': B, 'refs/tags/v2^{}': C }), { kind: 'tag', name: 'v2', sha: C }],
    ['v3', remote({ 'refs/tags/v3': B }), { kind: 'tag', name: 'v3', sha: B }],
    [A.toUpperCase(), undefined, { kind: 'commit', name: A, sha: A }],
    ['bbbbbbb', remote({}), { kind: 'commit', name: 'bbbbbbb', sha: null }],
  ])('version %j', (version, r, want) => {
    expect(resolveTarget(params(version ? { version } : {}), { ...absent(), ...(r ? { remote: r } : { remote: undefined }) })).toEqual(want);
  });
  it('a branch named like a commit id is the branch', () => {
    expect(resolveTarget(params({ version: 'cafe' }), absent({ remote: remote({ 'refs/heads/cafe': B }) })).kind).toBe('branch');
  });
  it('a short id the clone knows is resolved', () => {
    expect(resolveTarget(params({ version: 'bbbbbbb' }), clone({ local: B })).sha).toBe(B);
  });
  it.each([
    ['nope', remote({}), /has no branch or tag named nope/],
    [undefined, { refs: {} }, /has no default branch/],
    ['v1', { error: 'fatal: could not read Username' }, /cannot read the repository .* could not read Username.*check the URL/],
  ])('version %j: refused', (version, r, why) => {
    expect(() => resolveTarget(params(version ? { version } : {}), absent({ remote: r }))).toThrow(why);
  });
});

describe('git: plan (params + state → what changes)', () => {
  it('no git: says to install it first', () => {
    expect(() => planGit(params(), { git: false, missing: [] }, env)).toThrow(/git is not installed.*add a package step for git before this step/);
  });
  it('absent: a new clone at the resolved commit; rollback removes it and the folders made for it', () => {
    const plan = planGit(params({ version: 'v2', depth: 1, owner: 'deploy' }), absent({ missing: ['/srv', '/srv/app'], remote: remote({ 'refs/tags/v2': B }) }), env);
    expect(plan).toEqual({
      changed: true,
      action: 'create',
      summary: `clone https://git.example.com/app.git into /srv/app at bbbbbbb (tag v2), depth 1, owned by deploy`,
      undo: { dest: '/srv/app', runner: 'root', to: B, clone: 'made', dirs: ['/srv', '/srv/app'] },
    });
    expect(gitStep.undoSummary!(plan.undo as never)).toBe('remove the clone /srv/app and the 1 folder made above it');
  });
  it('an empty folder: cloned into, its owner and mode kept for rollback', () => {
    const plan = planGit(params(), absent({ dest: 'empty', missing: [], dir: { owner: 'root', group: 'root', mode: 0o755 } }), env);
    expect(plan.summary).toBe('clone https://git.example.com/app.git into /srv/app (the empty folder /srv/app) at aaaaaaa (branch main)');
    expect(plan.undo).toMatchObject({ clone: 'made', dirs: [], dir: { owner: 'root', group: 'root', mode: 0o755 } });
    expect(gitStep.undoSummary!(plan.undo as never)).toBe('empty /srv/app again (it was an empty folder before the clone)');
  });
  it('at the commit, clean: nothing to do', () => {
    expect(planGit(params(), clone(), env)).toEqual({ changed: false, summary: '/srv/app is at aaaaaaa (branch main), with no local modifications', undo: null });
    expect(planGit(params({ version: A }), clone({ branch: null }), env).changed).toBe(false);
  });
  it('a move between tags: the summary and the commits it passes as a diff; rollback goes back detached', () => {
    const s = clone({ head: B, branch: null, remote: remote({ 'refs/tags/v2': C }), log: { forward: ['ccccccc three', 'ddddddd two'], back: [] } });
    const plan = planGit(params({ version: 'v2' }), s, env);
    expect(plan.summary).toBe('move /srv/app from bbbbbbb (detached) to ccccccc (tag v2); 2 commits forward, 0 back');
    expect(plan.diff).toBe('--- /srv/app at bbbbbbb (detached)\n+++ /srv/app at ccccccc (tag v2)\n+ccccccc three\n+ddddddd two\n');
    expect(plan.undo).toEqual({ dest: '/srv/app', runner: 'root', to: C, clone: 'moved', head: B, branch: null });
    expect(gitStep.undoSummary!(plan.undo as never)).toBe('check /srv/app out at bbbbbbb again (detached)');
  });
  it('a branch that moved on the remote: the local branch is moved and put back by rollback; commits not fetched yet are said to be', () => {
    const plan = planGit(params(), clone({ remote: remote({ 'refs/heads/main': B }) }), env);
    expect(plan.summary).toBe('move /srv/app from aaaaaaa (branch main) to bbbbbbb (branch main); the commits it moves over are known after the fetch');
    expect(plan.diff).toBeUndefined();
    expect(plan.undo).toMatchObject({ clone: 'moved', head: A, branch: 'main', ref: { name: 'main', sha: A } });
    expect(gitStep.undoSummary!(plan.undo as never)).toBe('check /srv/app out at aaaaaaa again (on branch main), branch main back to aaaaaaa');
  });
  it('a branch the clone does not have yet: rollback deletes it', () => {
    const plan = planGit(params({ version: 'dev' }), clone({ remote: remote({ 'refs/heads/dev': B }) }), env);
    expect(plan.undo).toMatchObject({ ref: { name: 'dev', sha: null } });
    expect(gitStep.undoSummary!(plan.undo as never)).toMatch(/delete the branch dev it made/);
  });
  it('at the commit but detached, where version is a branch: checks the branch out', () => {
    const plan = planGit(params(), clone({ branch: null }), env);
    expect(plan.summary).toBe('check out branch main in /srv/app at aaaaaaa (was detached)');
  });
  it('local modifications without force: refused naming the files; with force: the plan says they are thrown away', () => {
    const s = clone({ changed: [' M app.conf', 'M  bin/run'], remote: remote({ 'refs/tags/v2': B }) });
    expect(() => planGit(params({ version: 'v2' }), s, env)).toThrow(
      '/srv/app has local modifications in 2 files: app.conf, bin/run; nothing was changed: commit or discard them on the host, or set force: true to throw them away',
    );
    expect(() => planGit(params(), s, env)).toThrow(StepError);
    const forced = planGit(params({ version: 'v2', force: true }), s, env);
    expect(forced.summary).toMatch(/discarding local modifications in app.conf, bin\/run \(force\)$/);
    expect(forced.undo).toMatchObject({ kept: keptRef(env) });
    expect(keptRef(env)).toMatch(/^refs\/hostsmith\/discarded-[0-9a-f]{16}$/);
    expect(keptRef({ ...env, step: 'Other' })).not.toBe(keptRef(env));
    expect(gitStep.undoSummary!(forced.undo as never)).toMatch(/, and the local modifications it threw away applied again$/);
    expect(planGit(params({ force: true }), s, env).changed).toBe(true);
  });
  it.each([
    [absent({ dest: 'other', missing: [] }), /\/srv\/app is not a folder/],
    [absent({ dest: 'notclone', missing: [] }), /a folder with files in it but no git clone/],
    [absent({ dest: 'foreign', foreignOwner: 'mallory', missing: [] }), /owned by mallory, but git would run as root.*set owner: mallory/],
    [clone({ origin: 'https://evil.example.com/x.git' }), /is a clone of https:\/\/evil.example.com\/x.git, not of https:\/\/git.example.com\/app.git/],
    [clone({ head: null }), /nothing checked out/],
  ])('refused: %#', (s, why) => {
    expect(() => planGit(params(), s, env)).toThrow(why);
  });
});

describe('git: undo data must belong to the step', () => {
  const p = params();
  it.each([
    [{ dest: '/etc', runner: 'root', clone: 'made', dirs: ['/etc'] }, /for "\/etc", not the step's \/srv\/app/],
    [{ dest: '/srv/app', runner: 'root', clone: 'made', dirs: ['/var', '/srv/app'] }, /would remove the folder "\/var"/],
    [{ dest: '/srv/app', runner: 'root', clone: 'moved', head: '--orphan', branch: null }, /no commit to go back to/],
    [{ dest: '/srv/app', runner: 'root', clone: 'moved', head: A, branch: '-D' }, /branch git cannot have/],
    [{ dest: '/srv/app', runner: 'root', clone: 'moved', head: A, branch: null, ref: { name: 'main', sha: 'x' } }, /branch or commit git cannot have/],
    [{ dest: '/srv/app', runner: 'root', clone: 'gone' }, /neither/],
    [{ dest: '/srv/app', runner: 'root', clone: 'moved', head: A, branch: null, kept: 'refs/heads/main' }, /a ref hostsmith does not keep/],
  ])('%j', (u, why) => {
    expect(gitStep.undoMismatch!(p, u)).toMatch(why);
  });
  it('its own data belongs', () => {
    expect(gitStep.undoMismatch!(p, { dest: '/srv/app', runner: 'root', to: A, clone: 'made', dirs: ['/srv', '/srv/app'] })).toBeUndefined();
    expect(gitStep.undoMismatch!(p, { dest: '/srv/app', runner: 'root', to: A, clone: 'moved', head: A, branch: 'main', ref: { name: 'main', sha: null } })).toBeUndefined();
  });
});

/** A bare repository with main (two commits), an annotated tag v1 on the first and a light tag v2 on the second. */
function bareRepo(dir: string): { repo: string; c1: string; c2: string } {
  const git = (cwd: string, ...args: string[]) =>
    execFileSync('git', args, { cwd, encoding: 'utf8', env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' } }).trim();
  const repo = join(dir, 'app.git');
  const work = join(dir, 'work');
  git(dir, 'init', '-q', '--bare', '-b', 'main', repo);
  mkdirSync(work);
  git(work, 'init', '-q', '-b', 'main');
  writeFileSync(join(work, 'app.conf'), 'one\n');
  git(work, 'add', '.');
  git(work, 'commit', '-qm', 'first');
  git(work, 'tag', '-a', 'v1', '-m', 'v1');
  writeFileSync(join(work, 'app.conf'), 'two\n');
  writeFileSync(join(work, 'README'), 'read me\n');
  git(work, 'add', '.');
  git(work, 'commit', '-qm', 'second');
  git(work, 'tag', 'v2');
  git(work, 'push', '-q', repo, 'main', 'v1', 'v2');
  return { repo, c1: git(work, 'rev-parse', 'v1^{commit}'), c2: git(work, 'rev-parse', 'v2') };
}

const sh = (cwd: string, cmd: string) => execFileSync('sh', ['-c', cmd], { cwd, encoding: 'utf8' });

describe('git: the scripts, for real, on this machine', () => {
  async function step(ctx: Parameters<typeof gitStep.check>[0], p: ReturnType<typeof params>) {
    const s = await gitStep.check(ctx, p);
    return { s, plan: gitStep.plan(p, s, env) };
  }

  it('clones at a tag into folders it makes, then rolls back to nothing (controller and watchdog alike)', async () => {
    const { dir, ctx } = localCtx('hs-git-');
    const { repo, c1 } = bareRepo(dir);
    const dest = join(dir, 'srv/www/app');
    const p = params({ repo, dest, version: 'v1' });
    for (const how of ['controller', 'watchdog'] as const) {
      const { s, plan } = await step(ctx, p);
      expect(plan.summary).toBe(`clone ${repo} into ${dest} at ${c1.slice(0, 7)} (tag v1)`);
      expect(plan.undo).toMatchObject({ clone: 'made', dirs: [join(dir, 'srv'), join(dir, 'srv/www'), dest] });
      await gitStep.apply(ctx, p, plan, s);
      expect(sh(dest, 'git rev-parse HEAD; git symbolic-ref -q HEAD || echo detached; cat app.conf; git status --porcelain')).toBe(`${c1}\ndetached\none\n`);
      expect((await step(ctx, p)).plan.changed).toBe(false);
      if (how === 'controller') await gitStep.rollback(ctx, p, plan.undo!);
      else sh(dir, hostRollbackScript(plan.undo!));
      expect(existsSync(join(dir, 'srv'))).toBe(false);
    }
  });

  it('moves a clone from v1 to v2 showing the commits, refuses local modifications, and rollback puts it back on its branch', async () => {
    const { dir, ctx } = localCtx('hs-git-');
    const { repo, c1, c2 } = bareRepo(dir);
    const dest = join(dir, 'app');
    sh(dir, `git clone -q ${repo} app && cd app && git checkout -q -b stay v1`);
    const p = params({ repo, dest, version: 'v2' });
    const { s, plan } = await step(ctx, p);
    expect(plan.summary).toBe(`move ${dest} from ${c1.slice(0, 7)} (branch stay) to ${c2.slice(0, 7)} (tag v2); 1 commit forward, 0 back`);
    expect(plan.diff).toBe(`--- ${dest} at ${c1.slice(0, 7)} (branch stay)\n+++ ${dest} at ${c2.slice(0, 7)} (tag v2)\n+${c2.slice(0, 7)} second\n`);
    await gitStep.apply(ctx, p, plan, s);
    expect(sh(dest, 'git rev-parse HEAD; git symbolic-ref -q HEAD || echo detached; cat app.conf')).toBe(`${c2}\ndetached\ntwo\n`);
    await gitStep.rollback(ctx, p, plan.undo!);
    expect(sh(dest, 'git rev-parse HEAD; git symbolic-ref -q HEAD; cat app.conf; git status --porcelain')).toBe(`${c1}\nrefs/heads/stay\none\n`);

    // Dirty: the plan refuses; an apply whose clone got dirty after the plan changes nothing either.
    sh(dest, 'echo mine > app.conf');
    await expect(step(ctx, p)).rejects.toThrow(`${dest} has local modifications in 1 file: app.conf; nothing was changed`);
    await expect(gitStep.apply(ctx, p, plan, s)).rejects.toThrow(/has local modifications now; nothing was changed/);
    expect(sh(dest, 'git rev-parse HEAD; cat app.conf')).toBe(`${c1}\nmine\n`);
    // force: thrown away (kept under a ref of hostsmith's), and the watchdog's script puts back the commit and the modifications.
    const pf = params({ repo, dest, version: 'v2', force: true });
    const forced = await step(ctx, pf);
    await gitStep.apply(ctx, pf, forced.plan, forced.s);
    expect(sh(dest, 'cat app.conf; git status --porcelain; git for-each-ref --format="%(refname)" refs/hostsmith')).toBe(`two\n${keptRef(env)}\n`);
    sh(dir, hostRollbackScript(forced.plan.undo!));
    expect(sh(dest, 'git rev-parse HEAD; git symbolic-ref -q HEAD; cat app.conf; git for-each-ref refs/hostsmith')).toBe(`${c1}\nrefs/heads/stay\nmine\n`);
  });

  it('a branch it creates in an existing clone is deleted by rollback; the default branch is the remote HEAD', async () => {
    const { dir, ctx } = localCtx('hs-git-');
    const { repo, c1, c2 } = bareRepo(dir);
    sh(dir, `git clone -q ${repo} app && cd app && git checkout -q --detach v1 && git branch -q -D main`);
    const dest = join(dir, 'app');
    const p = params({ repo, dest });
    const { s, plan } = await step(ctx, p);
    expect(plan.undo).toMatchObject({ clone: 'moved', head: c1, branch: null, ref: { name: 'main', sha: null } });
    await gitStep.apply(ctx, p, plan, s);
    expect(sh(dest, 'git rev-parse HEAD; git symbolic-ref -q HEAD; git rev-parse --abbrev-ref main@{upstream}')).toBe(`${c2}\nrefs/heads/main\norigin/main\n`);
    await gitStep.rollback(ctx, p, plan.undo!);
    expect(sh(dest, 'git rev-parse HEAD; git symbolic-ref -q HEAD || echo detached; git branch --list main')).toBe(`${c1}\ndetached\n`);
  });

  it("the watchdog's rollback of a move runs git as the user who ran it, never as root in that user's clone", async () => {
    const { dir } = localCtx('hs-git-');
    const { repo, c1, c2 } = bareRepo(dir);
    // A folder `nobody` can reach, holding its own clone moved to v2 on branch stay (as a run as nobody leaves it).
    const home = mkdtempSync('/tmp/hs-git-nobody-');
    try {
      chmodSync(home, 0o755);
      sh(dir, `chmod -R a+rX ${dir} && git clone -q ${repo} ${home}/app && cd ${home}/app && git checkout -q -b stay v2 && chown -R nobody: ${home}/app`);
      const undo: GitUndo = { dest: `${home}/app`, runner: 'nobody', to: c2, clone: 'moved', head: c1, branch: 'stay', ref: { name: 'stay', sha: c1 } };
      // Journaled as root's, it is refused as root: the clone is nobody's, so its hooks and config are too.
      expect(() => execFileSync('sh', ['-c', hostRollbackScript({ ...undo, runner: 'root' })], { cwd: dir, encoding: 'utf8', stdio: 'pipe' })).toThrow(
        /app is not a clone of root's .*git is not run in it/,
      );
      sh(dir, hostRollbackScript(undo));
      expect(sh(`${home}/app`, 'git -c safe.directory=* rev-parse HEAD stay && git -c safe.directory=* symbolic-ref HEAD && cat app.conf && find . ! -user nobody | wc -l')).toBe(
        `${c1}\n${c1}\nrefs/heads/stay\none\n0\n`,
      );
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('a plan reads without writing: the clone is byte for byte the same after check', async () => {
    const { dir, ctx } = localCtx('hs-git-');
    const { repo } = bareRepo(dir);
    sh(dir, `git clone -q ${repo} app && cd app && git checkout -q --detach v1 && echo x >> app.conf && touch -d 2001-01-01 .git/index`);
    const snap = () => sh(dir, 'find app -printf "%p %s %T@\\n" | sort | md5sum');
    const before = snap();
    await gitStep.check(ctx, params({ repo, dest: join(dir, 'app'), version: 'v2', force: true }));
    expect(snap()).toBe(before);
  });

  it('depth: a clone made shallow stays shallow as it moves; a whole clone is never made shallow by a move', async () => {
    const { dir, ctx } = localCtx('hs-git-');
    const { repo, c1, c2 } = bareRepo(dir);
    // git ignores --depth for a local path; a file:// URL is fetched as a remote is.
    const url = `file://${repo}`;
    const shallow = join(dir, 'shallow');
    const p = params({ repo: url, dest: shallow, version: 'v1', depth: 1 });
    const made = await step(ctx, p);
    await gitStep.apply(ctx, p, made.plan, made.s);
    expect(sh(shallow, 'git rev-parse HEAD --is-shallow-repository; git rev-list --count HEAD')).toBe(`${c1}\ntrue\n1\n`);
    const p2 = params({ repo: url, dest: shallow, version: 'v2', depth: 1 });
    const moved = await step(ctx, p2);
    expect(moved.plan.summary).toMatch(/known after the fetch$/);
    await gitStep.apply(ctx, p2, moved.plan, moved.s);
    expect(sh(shallow, 'git rev-parse HEAD --is-shallow-repository; git rev-list --count HEAD')).toBe(`${c2}\ntrue\n1\n`);

    sh(
      dir,
      `git clone -q --no-local ${url} whole && cd whole && git checkout -q --detach v1 && git branch -q -D main && git tag -d v2 >/dev/null && git update-ref -d refs/remotes/origin/main && git update-ref -d refs/remotes/origin/HEAD && git reflog expire --expire=now --all && git gc -q --prune=now`,
    );
    const pw = params({ repo: url, dest: join(dir, 'whole'), version: 'v2', depth: 1 });
    const w = await step(ctx, pw);
    expect(w.plan.summary).toMatch(/known after the fetch$/);
    await gitStep.apply(ctx, pw, w.plan, w.s);
    expect(sh(join(dir, 'whole'), 'git rev-parse HEAD --is-shallow-repository; git rev-list --count HEAD')).toBe(`${c2}\nfalse\n2\n`);
  });

  it('a commit id given whole, and a short one', async () => {
    const { dir, ctx } = localCtx('hs-git-');
    const { repo, c1 } = bareRepo(dir);
    for (const version of [c1, c1.slice(0, 8)]) {
      const dest = join(dir, `app-${version.length}`);
      const p = params({ repo, dest, version });
      const { s, plan } = await step(ctx, p);
      await gitStep.apply(ctx, p, plan, s);
      expect(sh(dest, 'git rev-parse HEAD')).toBe(`${c1}\n`);
      expect((await step(ctx, p)).plan.changed).toBe(false);
    }
  });
});
