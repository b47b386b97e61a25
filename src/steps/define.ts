/**
 * Custom step types: the contract the built-ins follow (step.ts), opened to a recipe's own
 * modules. `defineStepType` adds nothing to a type at run time; it is there so an author's editor
 * infers params, state and undo data from the schema and check, and so a mistake in the shape is
 * caught where the type is written rather than when a recipe first loads it.
 */
import type { StepType } from './step.js';

/** A custom type's name: it becomes a recipe key beside name, when, needs…, so it is a plain word. */
export const CUSTOM_TYPE_NAME = /^[a-z][a-z0-9_]*$/;

const REQUIRED_FUNCTIONS = ['check', 'plan', 'apply', 'rollback', 'footprint'] as const;
const OPTIONAL_FUNCTIONS = ['prepare', 'stateKey', 'wrote', 'gone', 'undoSummary', 'undoMismatch', 'runsAs', 'staticCheck', 'hostRollback', 'hostRun'] as const;

/**
 * Why `value` is not a step type the engine can run, or undefined when it is one. Judged by its
 * shape rather than by a mark `defineStepType` leaves, so a module that built its type by hand
 * (or against another copy of hostsmith) is judged the same way.
 */
export function stepTypeProblem(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return `it is ${value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`}, not a step type object`;
  const t = value as Record<string, unknown>;
  if (typeof t.type !== 'string') return 'it has no `type` (the recipe key that selects it, a string)';
  if (!CUSTOM_TYPE_NAME.test(t.type)) return `its type name ${JSON.stringify(t.type)} is not a lowercase word (letters, digits and _, starting with a letter)`;
  const schema = t.schema as { safeParse?: unknown } | null | undefined;
  if (!schema || typeof schema !== 'object' || typeof schema.safeParse !== 'function') return `step type "${t.type}": its \`schema\` is not a zod schema`;
  const missing = REQUIRED_FUNCTIONS.filter((f) => typeof t[f] !== 'function');
  if (missing.length) return `step type "${t.type}": ${missing.map((f) => `\`${f}\``).join(', ')} ${missing.length > 1 ? 'are' : 'is'} missing or not a function`;
  const odd = OPTIONAL_FUNCTIONS.filter((f) => t[f] !== undefined && typeof t[f] !== 'function');
  if (odd.length) return `step type "${t.type}": ${odd.map((f) => `\`${f}\``).join(', ')} must be a function when given`;
  if (t.guarded !== undefined && typeof t.guarded !== 'boolean' && typeof t.guarded !== 'function') return `step type "${t.type}": \`guarded\` must be a boolean or a function`;
  return undefined;
}

/**
 * A step type for a recipe's `types:` modules (export it as the module's default, alone or in an
 * array). The same contract as the built-in types: `type`, a zod `schema` for the params, `check`
 * (reads only), a pure `plan` with its undo data, `apply`, `rollback` from the undo data alone
 * (it may come from the journal, in another process) and a `footprint`; the rest is optional.
 * Throws a TypeError when the definition is not a step type.
 */
export function defineStepType<P, S, U>(def: StepType<P, S, U>): StepType<P, S, U> {
  const why = stepTypeProblem(def);
  if (why) throw new TypeError(`defineStepType: ${why}`);
  return def;
}
