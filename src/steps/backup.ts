/**
 * Backups on the host: what a step replaces or removes is copied first into a root-only folder,
 * <backupDir>/<step folder>/<path>, and rollback copies it back from there.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import { quote } from '../shell/script.js';
import { enterScript, splitPath, withSafePath } from '../shell/safe-path.js';
import { StepError } from '../errors.js';
import { tail, type PlanEnv, type StepContext } from './step.js';

/** A folder per step: a readable slug plus a hash of the full name, so look-alike names never share one. */
export function backupFolder(step: string): string {
  const slug = step.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 60) || 'step';
  return `${slug}-${createHash('sha256').update(step).digest('hex').slice(0, 8)}`;
}

export function backupPath(env: PlanEnv, path: string): string {
  return posix.join(env.backupDir, backupFolder(env.step), path);
}

/** Shell: make the folders `dest` goes into, the backups root readable by root only. */
export function backupDirsScript(ctx: Pick<StepContext, 'backupDir'>, dest: string): string {
  const root = quote(posix.dirname(ctx.backupDir));
  return `umask 077 && mkdir -p ${root} && chmod 0700 ${root} && mkdir -p ${quote(posix.dirname(dest))}`;
}

/**
 * Runs a copy script whose partial output the script itself removes on failure, and says what
 * happened: a full disk is named as such, with where to free space.
 */
async function copyOk(ctx: StepContext, script: string, what: string, full: string): Promise<void> {
  const r = await ctx.exec(script);
  if (r.code !== 0) throw backupFailure(ctx, r, what, full);
}

/** What a failed copy says: a full disk is named as such, with where to free space. */
export function backupFailure(ctx: Pick<StepContext, 'host'>, r: { code: number; stdout: string; stderr: string }, what: string, full: string): StepError {
  if (/No space left on device/i.test(r.stderr)) {
    return new StepError(`no space left on ${ctx.host} while ${what}; the partial copy was removed. Free space on ${full} (df -h ${full}) and run again`, {
      code: r.code,
      stderr: r.stderr,
    });
  }
  const said = tail(r.stderr) || tail(r.stdout, 5);
  return new StepError(`${what} failed (exit ${r.code})${said ? `: ${said}` : ''}`, { code: r.code, stderr: r.stderr });
}

/** Shell: copies what is at `path` (file, folder or link, with its metadata) to `dest`; a failed copy leaves nothing at `dest`. */
export function copyToBackupScript(ctx: Pick<StepContext, 'backupDir'>, path: string, dest: string): string {
  const d = quote(dest);
  const { dir, base } = splitPath(path);
  // Read from inside its folder, entered without following a planted link: what is copied is what the step manages.
  return withSafePath(`${backupDirsScript(ctx, dest)} && rm -rf -- ${d} || exit 1\n${enterScript(dir)}\n{ cp -a -- ${quote(base)} ${d} || { rc=$?; rm -rf -- ${d}; exit $rc; }; }`);
}

export async function copyToBackup(ctx: StepContext, path: string, dest: string): Promise<void> {
  await copyOk(ctx, copyToBackupScript(ctx, path, dest), `backing up ${path} to ${dest}`, posix.dirname(ctx.backupDir));
}

/**
 * Puts `backup` back at `path`: copied next to it first, so a failed copy leaves `path` as it was
 * (and the partial copy is removed).
 */
export async function restoreFromBackup(ctx: StepContext, backup: string, path: string): Promise<void> {
  await copyOk(ctx, restoreScript(backup, path), `restoring ${path} from ${backup}`, posix.dirname(path));
}

/** The script restoreFromBackup runs; the lockout watchdog runs the same one. */
export function restoreScript(backup: string, path: string): string {
  const b = quote(backup);
  const { dir, base } = splitPath(path);
  const p = quote(base);
  // In the path's folder, entered without following a planted link; the copy goes to a name no
  // one can guess, then is renamed over the path (rename does not follow a link there).
  return withSafePath(
    [
      'set -e',
      `{ test -e ${b} || test -L ${b} || { printf '%s\\n' ${quote(`the backup ${backup} is missing`)} >&2; exit 1; }; }`,
      enterScript(dir),
      `tmp=.hostsmith-restore.$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')`,
      `old=$tmp.old`,
      `{ cp -a -- ${b} "$tmp" || { rc=$?; rm -rf -- "$tmp"; exit $rc; }; }`,
      `if [ -d ${p} ] && [ ! -L ${p} ]; then mv -- ${p} "$old"; fi`,
      `mv -fT -- "$tmp" ${p}`,
      `rm -rf -- "$old"`,
    ].join('\n'),
  );
}
