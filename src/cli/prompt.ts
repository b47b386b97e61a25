/**
 * The prompts, loaded only when one is asked: a run that never asks (plan, apply --yes, cron
 * jobs) does not load inquirer at start-up. The prompts themselves are in prompt-ui.ts.
 */
import type { VarSpec } from '../recipe/types.js';
import type { Choice, Suggestion } from './prompt-ui.js';

export type { Choice, Suggestion } from './prompt-ui.js';

const ui = () => import('./prompt-ui.js');

export function interactive(): boolean {
  return Boolean(process.stdin.isTTY && process.stderr.isTTY);
}

export async function askYesNo(message: string, dflt = false): Promise<boolean> {
  return (await ui()).askYesNo(message, dflt);
}

export async function askVars(specs: VarSpec[]): Promise<Record<string, string>> {
  return (await ui()).askVars(specs);
}

export async function askPick<T>(message: string, choices: Array<Choice<T>>, dflt?: T): Promise<T> {
  return (await ui()).askPick(message, choices, dflt);
}

export async function askText(message: string, o: { default?: string; validate?: (s: string) => true | string; clearOnError?: boolean } = {}): Promise<string> {
  return (await ui()).askText(message, o);
}

export async function askSecret(message: string, validate: (s: string) => true | string | Promise<true | string>, o: { mask?: boolean } = {}): Promise<string> {
  return (await ui()).askSecret(message, validate, o);
}

export async function askWithSuggestions(message: string, o: { default?: string; suggestions: Suggestion[]; validate: (s: string) => true | string }): Promise<string> {
  return (await ui()).askWithSuggestions(message, o);
}

export async function askVarValue(v: VarSpec, dflt: unknown, check: (text: string) => true | string): Promise<string | undefined> {
  return (await ui()).askVarValue(v, dflt, check);
}
