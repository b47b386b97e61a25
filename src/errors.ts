/**
 * Errors carry the exit code the CLI should use, so that only src/cli decides how to exit
 * but every layer can say what kind of failure it hit.
 */
export class HostsmithError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** One problem in user input, located as precisely as we can. */
export interface InputIssue {
  file?: string;
  line?: number;
  col?: number;
  path?: string;
  message: string;
}

export function formatIssue(i: InputIssue): string {
  const where = i.file ? `${i.file}${i.line ? `:${i.line}:${i.col ?? 1}` : ''}: ` : '';
  const path = i.path ? `${i.path}: ` : '';
  return `${where}${path}${i.message}`;
}

/** Invalid recipe, vars, inventory or options: nothing was contacted or changed (exit 2). */
export class InputError extends HostsmithError {
  readonly issues: InputIssue[];
  constructor(issues: InputIssue[] | string) {
    const list = typeof issues === 'string' ? [{ message: issues }] : issues;
    super(list.map(formatIssue).join('\n'), 2);
    this.issues = list;
  }
}

/** A host could not be reached, refused us, or presented an unknown or changed key (exit 4). */
export class ConnectError extends HostsmithError {
  readonly host: string;
  /**
   * The host was already waited for as long as it should be (a reboot step's timeout): the run
   * gives it up at once rather than trying to connect again for another budget.
   */
  readonly waited: boolean;
  constructor(host: string, message: string, options?: { cause?: unknown; waited?: boolean }) {
    super(`${host}: ${message}`, 4, options);
    this.host = host;
    this.waited = options?.waited === true;
  }
}

/**
 * The controller could not write its journal (a full disk, a lost state dir). Nothing may change
 * on a host without its journal entry, so the run stops before the change it would announce.
 */
export class JournalError extends HostsmithError {
  constructor(file: string, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`cannot write the journal ${file}: ${why}`, 3, { cause });
  }
}

/** Another run holds the lock on a host. */
export class LockedError extends HostsmithError {
  readonly host: string;
  constructor(host: string, message: string) {
    super(`${host}: ${message}`, 1);
    this.host = host;
  }
}

/** A step failed on a host; carries what the remote command said. */
export class StepError extends HostsmithError {
  readonly stderr: string | undefined;
  readonly code: number | undefined;
  constructor(message: string, o: { stderr?: string; code?: number; cause?: unknown } = {}) {
    super(message, 1, { cause: o.cause });
    this.stderr = o.stderr;
    this.code = o.code;
  }
}

/** A template referenced a name that does not exist, or failed to render. */
export class RenderError extends HostsmithError {
  constructor(message: string) {
    super(message, 2);
  }
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
