import { confirm, input, password } from '@inquirer/prompts';
import { HostsmithError } from '../errors.js';
import type { VarSpec } from '../recipe/types.js';

/** Ctrl-C or Ctrl-D at a prompt: nothing has been changed yet, so say so and exit 130. */
async function asked<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof Error && (e.name === 'ExitPromptError' || e.name === 'AbortPromptError')) {
      throw new HostsmithError('stopped at the prompt; nothing was changed', 130);
    }
    throw e;
  }
}

/** Prompts write to stderr so that stdout stays clean (and JSON-only with --json). */
const io = { output: process.stderr };

export function interactive(): boolean {
  return Boolean(process.stdin.isTTY && process.stderr.isTTY);
}

export async function askYesNo(message: string, dflt = false): Promise<boolean> {
  return asked(confirm({ message, default: dflt }, io));
}

export async function askVars(specs: VarSpec[]): Promise<Record<string, string>> {
  const answers: Record<string, string> = {};
  for (const v of specs) {
    const message = `${v.description ?? v.name} (${v.name})`;
    const validate = (s: string) => {
      if (v.required && !s) return `${v.name} is required`;
      if (v.pattern && s && !new RegExp(v.pattern).test(s)) return `must match ${v.pattern}`;
      return true;
    };
    answers[v.name] = await asked(
      v.secret
        ? password({ message, mask: '*', validate }, io)
        : input({ message, default: v.default === undefined || v.default === null ? undefined : String(v.default), validate }, io),
    );
  }
  return answers;
}
