/**
 * What an apply or a plan says of each host and of the run: its own file, so the run's pieces
 * (fleet.ts, fleet-batches.ts) can all speak of it without importing each other.
 */
import type { Cause, Counts, HostStatus, RunStatus } from './events.js';
import type { Facts } from './facts.js';
import type { PlanStepValue } from './plan-value.js';

export interface HostReport extends Counts {
  status: HostStatus;
  error?: string;
  facts?: Facts;
  durationMs: number;
  /** Plan mode: every step as the plan value holds it. */
  steps?: PlanStepValue[];
  /** Plan mode: salted digests of the vars this host was planned with. */
  vars?: Record<string, string>;
  /** Apply of a plan: the steps that are not as planned. */
  stale?: string[];
  /** The link was lost and not made again: the host keeps the run's changes and lock; the run stays open for `recover`. */
  givenUp?: boolean;
  /** The step whose failure stopped the run on this host, when a step's did. */
  failedStep?: string;
  /** Rolled back, or not started, because of this failure on another host (fleet options). */
  cause?: Cause;
}

export interface RunReport {
  runId: string;
  mode: 'plan' | 'apply';
  status: RunStatus;
  exitCode: number;
  hosts: Record<string, HostReport>;
  journalFile?: string;
  durationMs: number;
  /** Local sources the steps read (templates, files): path → sha256. */
  sources: Record<string, string>;
}
