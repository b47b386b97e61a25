/**
 * Backups on the host: what a step replaces or removes is copied first into a root-only folder,
 * <backupDir>/<step folder>/<path>, and rollback copies it back from there.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { quote } from '../transport/shell.js';
import { runOk, type PlanEnv, type StepContext } from './step.js';

/** A folder per step: a readable slug plus a hash of the full name, so look-alike names never share one. */
export function backupFolder(step: string): string {
  const slug = step.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 60) || 'step';
  return `${slug}-${createHash('sha256').update(step).digest('hex').slice(0, 8)}`;
}

export function backupPath(env: PlanEnv, path: string): string {
  return posix.join(env.backupDir, backupFolder(env.step), path);
}

/** Shell: make the folders `dest` goes into, the backups root readable by root only. */
export function backupDirsScript(ctx: StepContext, dest: string): string {
  const root = quote(posix.dirname(ctx.backupDir));
  return `umask 077 && mkdir -p ${root} && chmod 0700 ${root} && mkdir -p ${quote(posix.dirname(dest))}`;
}

/** Copies what is at `path` (file, folder or link, with its metadata) to `dest`. */
export async function copyToBackup(ctx: StepContext, path: string, dest: string): Promise<void> {
  await runOk(ctx, `${backupDirsScript(ctx, dest)} && rm -rf -- ${quote(dest)} && cp -a -- ${quote(path)} ${quote(dest)}`, `backing up ${path} to ${dest}`);
}

/** Puts `backup` back at `path`: copied next to it first, so a failed copy leaves `path` as it was. */
export async function restoreFromBackup(ctx: StepContext, backup: string, path: string): Promise<void> {
  const b = quote(backup);
  const p = quote(path);
  const tmp = quote(`${path}.hostsmith-restore`);
  await runOk(
    ctx,
    [
      `test -e ${b} || test -L ${b}`,
      `rm -rf -- ${tmp}`,
      `cp -a -- ${b} ${tmp}`,
      `rm -rf -- ${p}.hostsmith-old`,
      `if [ -d ${p} ] && [ ! -L ${p} ]; then mv -- ${p} ${p}.hostsmith-old; fi`,
      `mv -fT -- ${tmp} ${p}`,
      `rm -rf -- ${p}.hostsmith-old`,
    ].join(' && '),
    `restoring ${path} from ${backup}`,
  );
}
