/**
 * A step as planned on one host: what it would do, why, and what applying it takes. A value the
 * planner makes and the run, the plan file and the renderers read.
 */
import type { StepSpec } from '../recipe/types.js';
import type { Plan, PlanAction, StepContext, StepType } from '../steps/step.js';

export type PlannedStatus = 'planned' | 'unchanged' | 'skipped' | 'failed';

export interface PlannedStep {
  spec: StepSpec;
  status: PlannedStatus;
  summary: string;
  diff?: string;
  irreversible: boolean;
  /** For a planned change: create (+), change (~) or remove (-), as its type says. */
  action?: PlanAction;
  /** Salted digest of the rendered params: the same recipe, vars and facts give the same digest. */
  paramsDigest?: string;
  /** Fingerprint of the state the check read (the type's stateKey); absent when not checked. */
  pre?: string;
  /** Earlier steps that would change what this one reads or renders: its state is known only after apply. */
  dependsOn?: string[];
  error?: string;
  /** For apply: what it takes to make the change. Absent unless status is planned. */
  work?: { type: StepType; ctx: StepContext; params: unknown; plan: Plan<unknown>; state: unknown };
}
