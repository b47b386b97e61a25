/** Events as SPEC §5 names them; the CLI renders them, `--json` prints them as they are. */

export type StepStatus = 'changed' | 'unchanged' | 'skipped' | 'failed' | 'planned';
/**
 * `stale`: the host is not as the plan being applied expects (read, nothing changed);
 * `not-started`: the run never got to this host (another host's problem stopped it first).
 */
export type HostStatus = 'ok' | 'failed' | 'rolled-back' | 'rollback-incomplete' | 'unreachable' | 'stale' | 'not-started' | 'interrupted';
export type RunStatus = HostStatus;

export interface Counts {
  changed: number;
  unchanged: number;
  skipped: number;
  failed: number;
  rolledBack: number;
}

/**
 * Why a host that did not fail itself was rolled back (`--rollback-scope batch|fleet`) or never
 * started (`--max-fail`): the host whose failure it was, the step that failed there, and its error.
 * No host: the user interrupted the run.
 */
export interface Cause {
  host?: string;
  step?: string;
  error: string;
}

interface Base {
  runId: string;
  time: string;
}

export type RunEvent =
  | (Base & { event: 'run-started'; recipe: string; mode: 'plan' | 'apply' | 'undo' | 'recover'; hosts: string[]; undoes?: string })
  | (Base & { event: 'host-connected'; host: string; facts: unknown })
  /** `--batch`: a batch starts (1-based `batch` of `of`), with its hosts in order. */
  | (Base & { event: 'batch-started'; batch: number; of: number; hosts: string[] })
  /** `index` of `of`: the step's place in the recipe (1-based); handlers have none. */
  | (Base & { event: 'step-started'; host: string; step: string; type: string; index?: number; of?: number })
  | (Base & {
      event: 'step-finished';
      host: string;
      step: string;
      type: string;
      status: StepStatus;
      summary: string;
      diff?: string;
      irreversible: boolean;
      durationMs: number;
      error?: string;
      /** Planned, but its state is known only after the steps it depends on have run. */
      dynamic?: boolean;
      /** What kind of change (planned or made): create, change or remove. */
      action?: 'create' | 'change' | 'remove';
      dependsOn?: string[];
      handler?: boolean;
    })
  /** Lockout protection (--confirm): the watchdog armed, confirmed, disarmed, fired, or waited for. */
  | (Base & { event: 'watchdog'; host: string; what: 'armed' | 'confirmed' | 'disarmed' | 'fired' | 'waiting'; message: string })
  | (Base & { event: 'rollback-finished'; host: string; step: string; type: string; status: 'rolled-back' | 'rollback-failed'; error?: string; note?: string })
  | (Base & { event: 'host-finished'; host: string; status: HostStatus; error?: string; cause?: Cause; durationMs: number } & Counts)
  | (Base & {
      event: 'run-finished';
      status: RunStatus;
      exitCode: number;
      durationMs: number;
      hosts: Record<string, { status: HostStatus } & Counts>;
    });

export type Emit = (e: RunEvent) => void;

export const EXIT_FOR: Record<HostStatus, number> = {
  ok: 0,
  failed: 1,
  'rolled-back': 1,
  'rollback-incomplete': 3,
  unreachable: 4,
  stale: 5,
  'not-started': 1,
  interrupted: 130,
};

/** The worst host wins: 3, 4, 5, 1, 0 — and 130 when the user interrupted. */
export function worstStatus(statuses: HostStatus[], interrupted: boolean): { status: RunStatus; exitCode: number } {
  const order: HostStatus[] = ['rollback-incomplete', 'unreachable', 'stale', 'rolled-back', 'failed', 'not-started', 'ok'];
  if (interrupted) {
    return statuses.includes('rollback-incomplete') ? { status: 'rollback-incomplete', exitCode: 3 } : { status: 'interrupted', exitCode: 130 };
  }
  for (const s of order) if (statuses.includes(s)) return { status: s, exitCode: EXIT_FOR[s] };
  return { status: 'ok', exitCode: 0 };
}
