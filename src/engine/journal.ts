/**
 * The journal: one NDJSON file per run under <state-dir>/runs/. Every entry is written and
 * fsynced before the change it announces, so a crash leaves enough to finish or undo the run.
 */
import { mkdir, open, readdir, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { HostsmithError, InputError, JournalError } from '../errors.js';
import type { Masker } from './mask.js';

export type JournalEntry =
  | { kind: 'run-started'; runId: string; time: string; recipe: string; recipeFile: string; mode: 'apply'; hosts: string[]; vars: Record<string, unknown>; pid: number; controller: string }
  | { kind: 'host-started'; time: string; host: string; facts: unknown; backupDir: string; target?: Record<string, unknown> }
  | {
      kind: 'step-started';
      time: string;
      host: string;
      step: string;
      type: string;
      handler?: boolean;
      params: unknown;
      undo: unknown;
      irreversible: boolean;
      summary: string;
      /** sha256 of the pre-state the step saw. */
      pre: string;
    }
  | {
      kind: 'step-finished';
      time: string;
      host: string;
      step: string;
      type: string;
      status: string;
      summary: string;
      changed: boolean;
      durationMs: number;
      /** sha256 of the state after apply (for drift checks on undo). */
      post?: string;
      error?: string;
    }
  | { kind: 'rollback-started'; time: string; host: string; step: string; type: string }
  | { kind: 'rollback-finished'; time: string; host: string; step: string; type: string; status: 'rolled-back' | 'rollback-failed'; error?: string }
  | { kind: 'host-finished'; time: string; host: string; status: string; counts: import('./events.js').Counts; error?: string }
  | { kind: 'run-finished'; time: string; status: string; exitCode: number };

export type Entry = JournalEntry;

export function runsDir(stateDir: string): string {
  return join(stateDir, 'runs');
}

export class Journal {
  private chain: Promise<void> = Promise.resolve();
  private torn = false;

  private constructor(
    private readonly fh: FileHandle,
    readonly file: string,
    private readonly masker: Masker,
  ) {}

  static async create(stateDir: string, runId: string, masker: Masker): Promise<Journal> {
    const dir = runsDir(stateDir);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new HostsmithError(`cannot create the journal folder ${dir}: ${(e as Error).message}; pass --state-dir <dir>`, 2);
    }
    const file = join(dir, `${runId}.ndjson`);
    const fh = await open(file, 'wx', 0o600);
    return new Journal(fh, file, masker);
  }

  /** Appends one entry and waits until it is on disk; a failure is a JournalError. */
  write(entry: JournalEntry): Promise<void> {
    const line = JSON.stringify(this.masker.value(entry)) + '\n';
    const next = this.chain.then(async () => {
      try {
        // After a failed write a torn line may end the file: start on a fresh line so it stays alone.
        const buf = Buffer.from(this.torn ? `\n${line}` : line, 'utf8');
        // One write(2) may take only part of it (a disk nearly full): go on until all is there.
        for (let at = 0; at < buf.length; ) {
          const { bytesWritten } = await this.fh.write(buf, at, buf.length - at);
          if (bytesWritten <= 0) throw new Error('the disk took none of the entry');
          at += bytesWritten;
        }
        await this.fh.datasync();
        this.torn = false;
      } catch (e) {
        this.torn = true;
        throw new JournalError(this.file, e);
      }
    });
    this.chain = next.catch(() => {});
    return next;
  }

  async close(): Promise<void> {
    await this.chain;
    await this.fh.close();
  }
}

export async function readRun(stateDir: string, runId: string): Promise<JournalEntry[]> {
  if (!/^[A-Za-z0-9T_.-]+$/.test(runId)) throw new InputError(`"${runId}" is not a run id (see hostsmith history)`);
  const file = join(runsDir(stateDir), `${runId}.ndjson`);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new InputError(`no run "${runId}" in ${runsDir(stateDir)} (see hostsmith history)`);
  }
  const entries: JournalEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      entries.push(JSON.parse(line) as JournalEntry);
    } catch {
      // A crash can cut the last line short; everything before it still counts.
    }
  }
  return entries;
}

export async function listRunIds(stateDir: string): Promise<string[]> {
  try {
    const files = await readdir(runsDir(stateDir));
    return files.filter((f) => f.endsWith('.ndjson')).map((f) => f.slice(0, -'.ndjson'.length)).sort();
  } catch {
    return [];
  }
}
