/**
 * applyPath (file, template, line): one exec holds the path to the state it was planned from,
 * backs up what it replaces, changes it and reads it back. Run for real through /bin/sh with the
 * local transport in a scratch folder; the real-host tier is test/e2e/probes.test.ts.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyPath, checkPath, pathKey, planPath, type Wanted } from '../../src/steps/file-state.js';
import { fingerprint } from '../../src/steps/step.js';
import { localCtx } from './local-ctx.js';

function setup() {
  const { dir, ctx, execs } = localCtx('hs-apply-path-', { backupDir: 'backups/R1' });
  const env = { runId: 'R1', step: 'S', backupDir: ctx.backupDir };
  return { dir, ctx, execs, env };
}

describe('applyPath: one exec per change', () => {
  it('updates a file: backs it up, writes it, and gives back the state a fresh read gives', async () => {
    const { dir, ctx, execs, env } = setup();
    const path = join(dir, 'app.conf');
    writeFileSync(path, 'old\n');
    const w: Wanted = { path, state: 'present', content: Buffer.from('new\n'), mode: 0o600 };
    const s = await checkPath(ctx, path);
    const plan = planPath(w, s, env);
    execs.length = 0;
    const after = await applyPath(ctx, w, plan, s);
    expect(execs).toHaveLength(1);
    expect(readFileSync(path, 'utf8')).toBe('new\n');
    expect(readFileSync((plan.undo as { backup: string }).backup, 'utf8')).toBe('old\n');
    expect(after).toBeDefined();
    expect(fingerprint(pathKey(after!))).toBe(fingerprint(pathKey(await checkPath(ctx, path))));
    expect(after!.mode).toBe(0o600);
  });

  it('creates a file and the folders it lives in, in one exec', async () => {
    const { dir, ctx, execs, env } = setup();
    const path = join(dir, 'a/b/c.txt');
    const w: Wanted = { path, state: 'present', content: Buffer.from('x') };
    const s = await checkPath(ctx, path);
    execs.length = 0;
    const after = await applyPath(ctx, w, planPath(w, s, env), s);
    expect(execs).toHaveLength(1);
    expect(readFileSync(path, 'utf8')).toBe('x');
    expect(after).toMatchObject({ kind: 'file', missing: [] });
  });

  it('writes nothing, and backs up nothing, when the path moved since it was read', async () => {
    const { dir, ctx, env } = setup();
    const path = join(dir, 'app.conf');
    writeFileSync(path, 'old\n');
    const w: Wanted = { path, state: 'present', content: Buffer.from('new\n') };
    const s = await checkPath(ctx, path);
    const plan = planPath(w, s, env);
    writeFileSync(path, 'someone else\n');
    await expect(applyPath(ctx, w, plan, s)).rejects.toThrow(/^not applied: its state moved since the plan was made \(someone changed .*app\.conf after it was read\); nothing was written/);
    expect(readFileSync(path, 'utf8')).toBe('someone else\n');
    expect(existsSync(ctx.backupDir)).toBe(false);
  });

  it('a path that appeared since it was read absent is left alone', async () => {
    const { dir, ctx, env } = setup();
    const path = join(dir, 'new.conf');
    const w: Wanted = { path, state: 'absent' };
    const gone = await checkPath(ctx, path);
    writeFileSync(path, 'made meanwhile\n');
    const rm: Wanted = { path, state: 'present', content: Buffer.from('ours\n') };
    await expect(applyPath(ctx, rm, planPath(rm, gone, env), gone)).rejects.toThrow(/its state moved/);
    expect(readFileSync(path, 'utf8')).toBe('made meanwhile\n');
    expect(planPath(w, gone, env).changed).toBe(false);
  });

  it('a failed backup names what it was backing up, and the file stays as it was', async () => {
    const { dir, ctx, env } = setup();
    const path = join(dir, 'app.conf');
    writeFileSync(path, 'old\n');
    // The backups root is a file: no folder can be made under it.
    writeFileSync(join(dir, 'backups'), 'not a folder');
    const w: Wanted = { path, state: 'present', content: Buffer.from('new\n') };
    const s = await checkPath(ctx, path);
    await expect(applyPath(ctx, w, planPath(w, s, env), s)).rejects.toThrow(/^backing up .*app\.conf to .* failed \(exit 1\): .*(Not a directory|File exists)/);
    expect(readFileSync(path, 'utf8')).toBe('old\n');
  });

  it('a failed write says what and why, with the exit code of the write', async () => {
    const { dir, ctx, env } = setup();
    // The parent is a file: the temporary file cannot be made next to the path.
    writeFileSync(join(dir, 'plain'), 'x');
    const path = join(dir, 'plain/app.conf');
    const w: Wanted = { path, state: 'present', content: Buffer.from('new\n') };
    const s = { kind: 'absent' as const, missing: [] };
    await expect(applyPath(ctx, w, planPath(w, s, env))).rejects.toThrow(/^writing .*plain\/app\.conf failed \(exit 1\): .*plain is not a folder/);
  });
});
