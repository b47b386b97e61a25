/**
 * What a person types for a run: its full id, a unique prefix of it (as git takes a commit), or
 * `last` for the newest run in the state dir. Run ids sort by time, so the newest is the last.
 */
import { InputError } from '../errors.js';
import { listRunIds } from '../engine/journal.js';

export async function resolveRunId(stateDir: string, given: string): Promise<string> {
  const ids = await listRunIds(stateDir);
  if (given === 'last') {
    const newest = ids.at(-1);
    if (!newest) throw new InputError(`no runs in ${stateDir} yet (see hostsmith history)`);
    return newest;
  }
  if (ids.includes(given)) return given;
  const matches = ids.filter((id) => id.startsWith(given));
  if (matches.length === 1) return matches[0]!;
  if (matches.length > 1) throw new InputError(`run id "${given}" is ambiguous: it starts ${matches.length} runs (${matches.slice(-5).join(', ')}${matches.length > 5 ? ', …' : ''}); give more of it`);
  // Unknown: left to the command, which says so with where it looked (and notes a pruned run).
  return given;
}
