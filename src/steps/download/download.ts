/**
 * `download`: a URL to a path on the host, held to a sha256 given in the recipe.
 *
 * The controller fetches the URL, not the host: the host needs no curl or wget (a minimal
 * Debian has neither), the bytes are checked before anything is written, and a fleet fetches
 * each file once. Since the checksum is known in advance, the plan needs no download at all: a
 * file already there with that checksum is left alone (never fetched again), and a saved plan
 * stays exact. The write, the backup of what it replaces and the rollback are the file step's.
 */
import { z } from 'zod';
import { StepError } from '../../errors.js';
import { applyPath, pathStepParts, planPath, type FileUndo, type PathState, type Wanted } from '../file-state.js';
import { modeSchema } from '../modes.js';
import { absolutePath, ownerName } from '../paths.js';
import { sha256, type Plan, type PlanEnv, type StepType } from '../step.js';
import { backupPath } from '../backup.js';

export const downloadSchema = z
  .object({
    // A refine rather than zod's url(): the recipe JSON Schema then needs no "uri" format of its validators.
    url: z
      .string()
      .refine((u) => URL.canParse(u), 'must be a URL')
      .refine((u) => /^https?:\/\//i.test(u), 'only http:// and https:// URLs can be fetched'),
    dest: absolutePath,
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, "must be the file's sha256: 64 hex digits (sha256sum prints it)")
      .transform((s) => s.toLowerCase()),
    mode: modeSchema.optional(),
    owner: ownerName('owner').optional(),
    group: ownerName('group').optional(),
  })
  .strict();

export type DownloadParams = z.output<typeof downloadSchema>;

const short = (hash: string) => hash.slice(0, 12);

/** The wanted path with the given bytes (the file's own when its checksum already matches). */
const wantedWith = (p: DownloadParams, content: Buffer): Wanted => ({ path: p.dest, state: 'present', content, mode: p.mode, owner: p.owner, group: p.group });

/** Whether what is at dest already holds the wanted bytes. */
const matches = (p: DownloadParams, s: PathState) => s.kind === 'file' && sha256(s.content ?? Buffer.alloc(0)) === p.sha256;

export function planDownload(p: DownloadParams, s: PathState, env: PlanEnv): Plan<FileUndo> {
  // Right bytes already: only metadata can differ, as for a file step with that content.
  if (matches(p, s)) return planPath(wantedWith(p, s.content!), s, env);
  if (s.kind === 'absent') {
    return { changed: true, action: 'create', summary: `download ${p.url} to ${p.dest} (sha256 ${short(p.sha256)}…)`, undo: { kind: 'absent', path: p.dest, created: s.missing } };
  }
  if (s.kind !== 'file') throw new StepError(`${p.dest} is a ${s.kind}, not a regular file; remove it first (a file step with state: absent)`);
  const had = sha256(s.content ?? Buffer.alloc(0));
  return {
    changed: true,
    summary: `download ${p.url} over ${p.dest} (sha256 ${short(had)}… → ${short(p.sha256)}…)`,
    undo: { kind: 'file', path: p.dest, mode: s.mode, owner: s.owner, group: s.group, backup: backupPath(env, p.dest) },
  };
}

/** Fetched bodies by checksum, for this process: every host of a run gets the one download. */
const fetched = new Map<string, Promise<Buffer>>();

/** The URL's bytes, checked against the checksum; a failure is not kept, so a retry fetches again. */
export function fetchVerified(url: string, want: string, o: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<Buffer> {
  const key = `${want} ${url}`;
  let body = fetched.get(key);
  if (!body) {
    body = (async () => {
      const signals = [AbortSignal.timeout(o.timeoutMs ?? 300_000), ...(o.signal ? [o.signal] : [])];
      let res: Response;
      try {
        res = await fetch(url, { signal: AbortSignal.any(signals), redirect: 'follow' });
      } catch (e) {
        const cause = (e as { cause?: { message?: string } }).cause?.message;
        throw new StepError(`cannot fetch ${url} from this machine: ${cause ?? (e as Error).message}; nothing was written`);
      }
      if (!res.ok) throw new StepError(`cannot fetch ${url}: the server answered ${res.status} ${res.statusText}; nothing was written`);
      const bytes = Buffer.from(await res.arrayBuffer());
      const got = sha256(bytes);
      if (got !== want) {
        throw new StepError(
          `${url} has sha256 ${got}, not the ${want} the recipe gives (${bytes.length} bytes fetched); nothing was written. If the file was meant to change, put its new checksum in the recipe.`,
        );
      }
      return bytes;
    })();
    fetched.set(key, body);
    body.catch(() => fetched.delete(key));
  }
  return body;
}

export const downloadStep: StepType<DownloadParams, PathState, FileUndo> = {
  type: 'download',
  schema: downloadSchema,
  ...pathStepParts<DownloadParams>((p) => p.dest),
  plan: planDownload,
  async apply(ctx, p, plan, s) {
    const content = matches(p, s) ? s.content! : await fetchVerified(p.url, p.sha256, { signal: ctx.signal, timeoutMs: ctx.timeoutMs });
    return { state: await applyPath(ctx, wantedWith(p, content), plan, s) };
  },
};
