/**
 * What one host's run has done so far, as plain data: the steps planned and completed, their
 * results for later templates, the counts, the handlers notified, what is changing, why the run
 * stops. A leaf: it knows no transport, journal or renderer; the functions that change it are
 * handed the few fields they change.
 */
import type { StepSpec } from '../recipe/types.js';
import type { StepContext, StepType } from '../steps/step.js';
import type { Counts } from './events.js';
import type { PlannedStep } from './planned-step.js';

/** What `steps.<name>` gives later templates. */
export interface StepResult {
  status: string;
  changed: boolean;
  stdout: string;
  stderr: string;
}

/** A step the run changed the host with: what rolling it back takes. */
export interface Completed {
  spec: StepSpec;
  type: StepType;
  params: unknown;
  undo: unknown;
  summary: string;
  ctx: StepContext;
}

/** A step that will change (planned) or changed, with what it writes. */
export interface Changing {
  name: string;
  writes: string[];
}

/** A step whose apply is under way; `mark.journaled`: its step-started entry is written. */
export interface Applying {
  planned: PlannedStep;
  mark: { journaled: boolean };
}

export interface HostState {
  counts: Counts;
  /** Every finished step's result, by name, for later templates. */
  results: Record<string, StepResult>;
  completed: Completed[];
  /** Handlers a changed step notified. */
  notified: Set<string>;
  /** Steps that will change (planned) or changed, with what they write: what later checks may depend on. */
  changing: Changing[];
  /** Planned steps whose results a template read while rendering the current step. */
  touched: Set<string>;
  /** Every step's plan, in the order the steps took their turn. */
  planned: PlannedStep[];
  /** Why the run stops (a fatal step failure); undefined while it goes on. */
  fatal?: string;
  /** The step whose failure set `fatal`, when a step's did (not a lost link, nor another host's failure). */
  fatalStep?: string;
  /** The journal could not be written: nothing more may change. */
  journalBroken?: string;
  /** Steps whose apply is under way (a lost link leaves them undecided until the host is read again). */
  applying: Map<string, Applying>;
}

export const KNOWN_AFTER_APPLY = '(known after apply)';

export function newHostState(): HostState {
  return {
    counts: { changed: 0, unchanged: 0, skipped: 0, failed: 0, rolledBack: 0 },
    results: {},
    completed: [],
    notified: new Set(),
    changing: [],
    touched: new Set(),
    planned: [],
    applying: new Map(),
  };
}

/**
 * In a plan, a step that would change has no output yet: its stdout and stderr are known after
 * apply, and a template that reads them makes the reading step dynamic (noted in `touched`).
 */
export function plannedResult(touched: Set<string>, name: string): StepResult {
  const unknown = () => {
    touched.add(name);
    return KNOWN_AFTER_APPLY;
  };
  return Object.defineProperties({ status: 'changed', changed: true } as StepResult, {
    stdout: { get: unknown, enumerable: true },
    stderr: { get: unknown, enumerable: true },
  });
}
