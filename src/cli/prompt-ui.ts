import { createPrompt, isEnterKey, isTabKey, makeTheme, useKeypress, usePrefix, useState } from '@inquirer/core';
import { confirm, input, password, select } from '@inquirer/prompts';
import { HostsmithError } from '../errors.js';
import type { VarSpec } from '../recipe/types.js';

/** The prompts themselves (inquirer), loaded on first use through prompt.ts. */

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
      v.secret ? password({ message, mask: '*', validate }, io) : input({ message, default: v.default === undefined || v.default === null ? undefined : String(v.default), validate }, io),
    );
  }
  return answers;
}

// ---- bootstrap's prompts ----

/** One pick in a list: what is shown, what it stands for, and a line said about it. */
export interface Choice<T> {
  name: string;
  value: T;
  description?: string;
}

export async function askPick<T>(message: string, choices: Array<Choice<T>>, dflt?: T): Promise<T> {
  return asked(select<T>({ message, choices, ...(dflt !== undefined ? { default: dflt } : {}), pageSize: 10 }, io));
}

/** A line of text; Enter takes the default. `validate` returns true or the reason to ask again. */
export async function askText(message: string, o: { default?: string; validate?: (s: string) => true | string; clearOnError?: boolean } = {}): Promise<string> {
  return asked(
    input(
      {
        message,
        ...(o.default !== undefined && o.default !== '' ? { default: o.default } : {}),
        ...(o.validate ? { validate: o.validate } : {}),
        ...(o.clearOnError ? { theme: { validationFailureMode: 'clear' as const } } : {}),
      },
      io,
    ),
  );
}

/**
 * Hidden input: nothing echoed (or `*` per character with `mask`). `validate` may be async (a
 * login attempt; the spinner shows meanwhile) and returns true or the reason; on a reason the line
 * is emptied, so the next try is typed afresh (nothing the person cannot see is kept in front of it).
 * This is the library's input, not its password prompt: password puts a refused answer back in the
 * field, unseen, and the next Enter sends it in front of the new typing ("wrongright"); input's
 * validationFailureMode 'clear' empties it, and the transformer is all that is shown.
 */
export async function askSecret(message: string, validate: (s: string) => true | string | Promise<true | string>, o: { mask?: boolean } = {}): Promise<string> {
  const theme = makeTheme({});
  // Once answered, not even the length stays on screen. Unmasked, the cursor is hidden as in the
  // library's password: where it stands would tell the length.
  const shown = (v: string, { isFinal }: { isFinal: boolean }) => (isFinal ? '' : o.mask ? '*'.repeat(v.length) : `${theme.style.help('[typing is not shown]')}\x1b[?25l`);
  return asked(input({ message, validate, transformer: shown, theme: { validationFailureMode: 'clear' } }, io));
}

export interface Suggestion {
  value: string;
  /** Said beside it: where the name comes from, what it stands for. */
  hint: string;
}

/**
 * Free text with suggestions: names matching what is typed are listed below the line; Tab
 * completes to the first of them; Enter takes exactly what is typed (or the default when nothing is).
 * Hand-written: the library's search returns the highlighted choice, which follows the typing only
 * once its (async) source has answered, so "web12" typed fast then Enter gives "web1"; free text
 * is taken only as a choice the source adds, with the same race.
 */
const suggestPrompt = createPrompt<string, { message: string; default?: string; suggestions: Suggestion[]; validate: (s: string) => true | string }>((config, done) => {
  const theme = makeTheme({});
  const [status, setStatus] = useState<'idle' | 'done'>('idle');
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const prefix = usePrefix({ status, theme });
  const matches = (v: string) => config.suggestions.filter((s) => s.value.toLowerCase().includes(v.toLowerCase())).slice(0, 8);
  useKeypress((key, rl) => {
    if (status !== 'idle') return;
    const typed = value.trim();
    if (isEnterKey(key)) {
      const answer = typed || config.default || '';
      const ok = config.validate(answer);
      if (ok !== true) {
        rl.write(value); // kept on the line, to be fixed
        setError(ok);
        return;
      }
      setValue(answer);
      setStatus('done');
      done(answer);
      return;
    }
    if (isTabKey(key)) {
      rl.clearLine(0);
      rl.write(matches(typed).find((s) => s.value !== typed)?.value ?? (typed || config.default || ''));
    }
    setValue(rl.line);
    setError(undefined);
  });
  const message = theme.style.message(config.message, status);
  if (status === 'done') return `${prefix} ${message} ${theme.style.answer(value)}`;
  const dflt = config.default && !value ? ` ${theme.style.defaultAnswer(config.default)}` : '';
  const list = matches(value.trim());
  const width = Math.max(0, ...list.map((s) => s.value.length));
  const below = [
    ...(error ? [theme.style.error(error)] : []),
    ...list.map((s) => `  ${s.value.padEnd(width)}  ${theme.style.help(s.hint)}`),
    ...(list.length ? [theme.style.help('  (Tab completes, Enter takes what is typed)')] : []),
  ];
  return [`${prefix} ${message}${dflt} ${value}`, below.join('\n')];
});

export async function askWithSuggestions(message: string, o: { default?: string; suggestions: Suggestion[]; validate: (s: string) => true | string }): Promise<string> {
  return asked(suggestPrompt({ message, suggestions: o.suggestions, validate: o.validate, ...(o.default ? { default: o.default } : {}) }, io));
}

/** How a var's value is shown as a default to edit: lists as a,b,c (JSON when an item has a comma), maps as JSON. */
export function varDefaultText(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (Array.isArray(v)) return v.every((x) => typeof x !== 'object' && !String(x).includes(',')) ? v.join(',') : JSON.stringify(v);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/**
 * bootstrap: one var, asked with its description, its default shown, its type and pattern
 * checked as typed (the reason shown, then asked again); secrets hidden. Returns the text to
 * give as --var, or undefined to leave the var unset (no answer, no default, not required).
 */
export async function askVarValue(v: VarSpec, dflt: unknown, check: (text: string) => true | string): Promise<string | undefined> {
  const what = v.description ?? v.name;
  const shown = varDefaultText(dflt);
  const hint = v.type === 'string' ? '' : v.type === 'list' ? ' [list: a,b,c]' : v.type === 'map' ? ' [map: JSON]' : ` [${v.type}]`;
  const message = `${what} (${v.name})${hint}`;
  const validate = (s: string): true | string => {
    if (s === '') {
      if (shown !== undefined) return true;
      return v.required ? `${v.name} is required: type a value` : true;
    }
    return check(s);
  };
  if (v.type === 'boolean' && !v.secret) {
    const yes = await asked(confirm({ message, default: dflt === undefined || dflt === null ? false : check(String(dflt)) === true && /^(true|yes|1)$/i.test(String(dflt)) }, io));
    return String(yes);
  }
  if (v.secret) {
    const s = await askSecret(`${message}${shown !== undefined ? ' (Enter keeps the default)' : ''}`, validate, { mask: true });
    return s === '' ? shown : s;
  }
  // Asked again from an empty line, the reason shown beneath.
  const s = await askText(message, { default: shown, validate, clearOnError: true });
  return s === '' ? shown : s;
}
