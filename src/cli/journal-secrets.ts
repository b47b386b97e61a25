/**
 * Secret var values that undo and recover need to act on steps whose journal entries hold them
 * masked: from --var, --vars-file or a prompt; each checked against the digest the run journaled;
 * kept in memory only.
 */
import { resolve } from 'node:path';
import { InputError } from '../errors.js';
import { secretMatches, type SecretDigests } from '../engine/undo.js';
import { loadVarsFile, parseVarArgs } from '../recipe/vars.js';
import { askSecret } from './prompt.js';

export async function journalSecrets(
  o: { var?: string[]; varsFile?: string },
  need: { names: string[]; secrets: SecretDigests; runId: string; command: string; tty: boolean },
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  if (!need.names.length) return out;
  const file = o.varsFile ? await loadVarsFile(resolve(o.varsFile)) : {};
  const cli = parseVarArgs(o.var ?? []);
  const target = { secrets: need.secrets };
  for (const name of need.names) {
    const raw = cli[name] ?? file[name];
    if (raw !== undefined) {
      const value = typeof raw === 'string' ? raw : JSON.stringify(raw);
      if (!secretMatches(target, name, value))
        throw new InputError(`${cli[name] !== undefined ? '--var' : '--vars-file'} ${name}=***: not the value run ${need.runId} was applied with (it does not match the digest the run journaled)`);
      out[name] = value;
    } else if (need.tty) {
      out[name] = await askSecret(`${name} (secret; the value run ${need.runId} was applied with, needed to take back its steps)`, (s) =>
        secretMatches(target, name, s) ? true : `not the value run ${need.runId} was applied with`,
      );
    } else {
      throw new InputError(`the steps to ${need.command} hold the secret var ${name}, masked in the journal: give its value with --var ${name}=… or --vars-file (nothing was contacted or changed)`);
    }
  }
  return out;
}
