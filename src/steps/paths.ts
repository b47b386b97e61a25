/**
 * Schemas for the values a step hands to the host as paths and account names, shared by every
 * step type so each field is refused the same way, at validation (exit 2 with file:line:col).
 *
 * Why paths must be normalised: rollback removes the folders a step created, derived from the
 * path; `/a/new/../b/f` would make it `rmdir /a/new/..`, and `//` or `/./` make the same folder
 * look like two. The user is told the normalised form to write instead.
 */
import { posix } from 'node:path';
import { z } from 'zod';

/** Why `p` cannot be used as an absolute path on the host, or undefined when it can. */
export function absolutePathProblem(p: string): string | undefined {
  if (!p.startsWith('/')) return 'must be an absolute path';
  if (/[\0\r\n]/.test(p)) return 'a path cannot contain a line break or a NUL byte';
  const norm = normalisePath(p);
  if (norm !== p) return `"${p}" is not a normalised path ("." or ".." parts, "//" or a trailing "/"): write "${norm}"`;
  return undefined;
}

/** The lexical normal form: no ".", "..", "//" or trailing "/" (except the root itself). */
export function normalisePath(p: string): string {
  const n = posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

/** An absolute, normalised path on the host. */
export const absolutePath = z.string().superRefine((p, ctx) => {
  const why = absolutePathProblem(p);
  if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
});

/**
 * A path that may also be relative (to the login user's home or `cwd`, as a shell sees it):
 * no line break or NUL, and normalised when absolute.
 */
export const hostPath = z
  .string()
  .min(1, 'must not be empty')
  .superRefine((p, ctx) => {
    const why = p.startsWith('/') ? absolutePathProblem(p) : /[\0\r\n]/.test(p) ? 'a path cannot contain a line break or a NUL byte' : undefined;
    if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
  });

/**
 * A user or group name (or number) handed to chown, sudo -u and the like: a leading "-" would be
 * read as an option, ":" splits owner from group, and blanks or control characters never name an
 * account.
 */
export const ownerName = (what: 'owner' | 'group' | 'user') =>
  z.string().superRefine((s, ctx) => {
    const issue = (message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, message });
    if (s === '') issue(`${what} must not be empty`);
    else if (s.startsWith('-')) issue(`${what} "${s}" starts with "-" (it would be read as an option); give the account's name or number`);
    else if (s.includes(':')) issue(`${what} "${s}" contains ":"; ${what === 'owner' ? 'give the group in its own field (group:)' : 'an account name cannot hold ":"'}`);
    else if (/[\s\0-\x1f\x7f]/.test(s)) issue(`${what} ${JSON.stringify(s)} contains a blank, line break or control character; give the account's name or number`);
  });

/** A link target: relative or absolute, but one line (a newline would be cut off when read back). */
export const linkTarget = z.string().superRefine((t, ctx) => {
  if (/[\0\r\n]/.test(t)) ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'a link target cannot contain a line break or a NUL byte' });
});
