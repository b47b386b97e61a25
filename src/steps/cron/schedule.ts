/**
 * The cron step's own static check of a schedule: crontab's five fields, as cron-parser reads
 * them. The loader and `schedule add` ask it before any host is contacted.
 */
import { CronExpressionParser } from 'cron-parser';

export const CRON_NAMES: readonly string[] = ['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@hourly'];
const CRON_FIELDS = ['minute', 'hour', 'day of month', 'month', 'day of week'];
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

/**
 * Why `expr` is not a crontab schedule, or undefined when it is one. cron-parser also accepts
 * seconds and Quartz extensions (L, W, #, ?, H) that crontab rejects, so those are refused first.
 */
export function cronProblem(expr: string): string | undefined {
  // Asked once per cron step and host (each host's params are parsed): the answer depends on the text alone.
  if (cronAnswers.has(expr)) return cronAnswers.get(expr);
  const why = cronProblemOf(expr);
  if (cronAnswers.size >= 1000) cronAnswers.clear();
  cronAnswers.set(expr, why);
  return why;
}

const cronAnswers = new Map<string, string | undefined>();

function cronProblemOf(expr: string): string | undefined {
  const s = expr.trim();
  if (s.startsWith('@')) {
    if (CRON_NAMES.includes(s)) return undefined;
    if (s === '@reboot') return '@reboot has no run times and is not supported; give a time schedule';
    return `unknown schedule "${s}" (use five fields or one of ${CRON_NAMES.join(', ')})`;
  }
  const fields = s.split(/\s+/);
  if (fields.length !== 5) return `a cron schedule has five fields (${CRON_FIELDS.join(', ')}), got ${fields.length}`;
  for (const [i, f] of fields.entries()) {
    const names = i === 3 ? MONTHS : i === 4 ? DAYS : [];
    const bad = /[^\dA-Za-z*,/-]/.exec(f)?.[0] ?? (f.match(/[A-Za-z]+/g) ?? []).find((w) => !names.includes(w.toLowerCase()));
    if (bad !== undefined) return `invalid cron schedule "${s}": "${bad}" is not allowed in the ${CRON_FIELDS[i]} field`;
  }
  try {
    CronExpressionParser.parse(s);
    return undefined;
  } catch (e) {
    return `invalid cron schedule "${s}": ${e instanceof Error ? e.message : String(e)}`;
  }
}
