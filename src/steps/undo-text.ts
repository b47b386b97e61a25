/**
 * Reading undo data as the journal keeps it (plain JSON, maybe from another hostsmith): small
 * helpers each step type's undo summary uses, tolerant of fields that are missing or of another type.
 */
export type UndoData = Record<string, unknown>;

export const str = (u: UndoData, k: string): string | undefined => (typeof u[k] === 'string' ? (u[k] as string) : undefined);

/** A list field as names (items that are objects give their `name`). */
export const names = (u: UndoData, k: string): string[] => (Array.isArray(u[k]) ? (u[k] as unknown[]).map((x) => (x && typeof x === 'object' ? (x as { name?: unknown }).name : x)).map(String) : []);

/** Mode and owner, as a rollback puts them back. */
export function metaText(u: UndoData): string {
  const m: string[] = [];
  if (typeof u.mode === 'number') m.push(`mode ${u.mode.toString(8).padStart(4, '0')}`);
  if (str(u, 'owner') || str(u, 'group')) m.push(`owner ${str(u, 'owner') ?? '?'}:${str(u, 'group') ?? '?'}`);
  return m.join(', ');
}

/** Undo data no summary reads: shown compact. */
export function compact(u: unknown): string {
  const s = JSON.stringify(u);
  return `undo data ${s.length > 200 ? `${s.slice(0, 200)}…` : s}`;
}

/** What restoring account entries from a backup puts back (group; a user's `accounts`). */
export function accountsText(a: unknown): string | undefined {
  if (!a || typeof a !== 'object' || typeof (a as { backup?: unknown }).backup !== 'string') return undefined;
  const t = (a as { touched?: Record<string, unknown> }).touched ?? {};
  const files = Object.keys(t).map((f) => `/etc/${f}`);
  return `put back the entries of ${files.join(', ') || 'the account files'} from the backup ${(a as { backup: string }).backup}`;
}
