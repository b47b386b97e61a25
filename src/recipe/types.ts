/** A recipe after loading and validation: what the engine runs. */
import type { CustomTypes } from './custom-types.js';

export type VarType = 'string' | 'number' | 'boolean' | 'list' | 'map';

export interface VarSpec {
  name: string;
  type: VarType;
  default?: unknown;
  required: boolean;
  pattern?: string;
  secret: boolean;
  prompt: boolean;
  description?: string;
}

export interface RetrySpec {
  attempts: number;
  delayMs: number;
  backoff: number;
}

export interface SourceLoc {
  file: string;
  /** 0 (and col 0) for a recipe written as a module: it has no line of the step's own. */
  line: number;
  col: number;
}

export interface StepSpec {
  /** Unique in the recipe; included steps are prefixed "<included recipe name>/". */
  name: string;
  /** The step type key: command, file, template, ... */
  type: string;
  /** The type's params as written (strings still templates); validated against the type's schema. */
  params: unknown;
  when?: string;
  unless?: string;
  fatal: boolean;
  /** Only when the step or a recipe `defaults:` sets it; else the config file's (SPEC §7), else one attempt. */
  retry?: RetrySpec;
  timeoutMs?: number;
  /** Resolved: explicit `needs`, else the step before it (none for the first). */
  needs: string[];
  notify: string[];
  sudo?: boolean;
  loc: SourceLoc;
  /** Folder of the recipe file the step came from (src files resolve from here). */
  dir: string;
  /** Vars that apply only to this step's scope (an include's vars and its recipe's defaults); templates. */
  scopeVars?: Record<string, unknown>;
}

export interface Recipe {
  name: string;
  description?: string;
  /** Absolute path of the recipe file. */
  file: string;
  dir: string;
  sudo: boolean;
  vars: Record<string, VarSpec>;
  steps: StepSpec[];
  handlers: StepSpec[];
  defaults: { timeoutMs?: number; retry?: RetrySpec; sudo?: boolean; parallel: number; confirmMs?: number };
  /** The recipe's `verify:` commands (templates), run over a new connection under lockout protection. */
  verify: string[];
  /** `test:` — for `hostsmith test`: more residue paths to leave out, and the kind of sandbox host and its network. */
  test?: { ignore?: string[]; host?: 'plain' | 'systemd'; net?: 'shared' | 'private'; parallel?: number };
  /** Custom step types from the recipe's `types:` modules: known to this recipe's runs only. */
  types?: CustomTypes;
}
