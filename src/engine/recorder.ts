/**
 * The one way a host's run tells the world what happened: the journal entry first (awaited,
 * fsynced), then the event. A journal that cannot be written stops the change it would announce.
 */
import type { Emit, RunEvent } from './events.js';
import type { Journal, JournalEntry } from './journal.js';

export class Recorder {
  /** Journal writes that failed; a run with any cannot claim a complete record. */
  readonly failedWrites: string[] = [];

  constructor(
    private readonly journal: Journal | undefined,
    private readonly emitFn: Emit,
  ) {}

  /** Writes one journal entry and waits until it is on disk; throws JournalError when it cannot. */
  async write(entry: JournalEntry): Promise<void> {
    if (!this.journal) return;
    try {
      await this.journal.write(entry);
    } catch (e) {
      this.failedWrites.push(entry.kind);
      throw e;
    }
  }

  emit(event: RunEvent): void {
    this.emitFn(event);
  }

  /** Journal entry, then event: what a person sees is always already on disk. */
  async record(entry: JournalEntry, event: RunEvent): Promise<void> {
    await this.write(entry);
    this.emit(event);
  }
}
