export interface ExecOptions {
  /** Run through `sudo -n` (ignored when already root). */
  sudo?: boolean;
  /** Run as this user (through sudo). */
  user?: string;
  stdin?: string | Buffer;
  timeoutMs?: number;
  signal?: AbortSignal;
  cwd?: string;
  env?: Record<string, string>;
}

/** A non-zero exit is a value, not an exception; a broken connection is an exception. */
export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout as raw bytes (file reads). */
  stdoutRaw: Buffer;
  timedOut?: boolean;
}

export interface WriteOptions {
  mode?: number;
  owner?: string;
  group?: string;
  sudo?: boolean;
}

export interface Transport {
  /** How this host is named in messages and events. */
  readonly name: string;
  exec(cmd: string, o?: ExecOptions): Promise<ExecResult>;
  /** null when the file does not exist. */
  readFile(path: string, o?: { sudo?: boolean }): Promise<Buffer | null>;
  /** Atomic: written to a temporary file in the same directory, then renamed. */
  writeFile(path: string, data: Buffer, o?: WriteOptions): Promise<void>;
  close(): Promise<void>;
}
