/**
 * Independent verification: runs commands on sandbox hosts with the plain
 * OpenSSH client (/usr/bin/ssh), never with hostsmith's own transport.
 */
import { run, type RunResult } from './util.js';

export interface SshTarget {
  address: string;
  port: number;
  keyPath: string;
  knownHostsPath: string;
}

export function sshArgs(t: SshTarget, user: string, o: { connectTimeout?: number } = {}): string[] {
  return [
    '-F',
    'none',
    '-i',
    t.keyPath,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `UserKnownHostsFile=${t.knownHostsPath}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    `ConnectTimeout=${o.connectTimeout ?? 10}`,
    '-o',
    'LogLevel=ERROR',
    '-p',
    String(t.port),
    `${user}@${t.address}`,
  ];
}

/** Runs `cmd` (a shell command line) on the target; never throws for a non-zero exit. */
export function sshExec(t: SshTarget, cmd: string, o: { user?: string; input?: string; connectTimeout?: number } = {}): Promise<RunResult> {
  return run('/usr/bin/ssh', [...sshArgs(t, o.user ?? 'root', o), '--', cmd], { input: o.input ?? '' });
}

/** What reaching a sandbox host takes: its key and known_hosts (not the sandbox's whole type, which would import hosts.ts back). */
type Reach = { keyPath: string; knownHostsPath: string };
type Where = { name: string; address: string; port: number };

export function sshRun(sb: Reach, host: Where, cmd: string, o: { user?: string; input?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return sshExec({ address: host.address, port: host.port, keyPath: sb.keyPath, knownHostsPath: sb.knownHostsPath }, cmd, o);
}

/** sshRun that throws (with stderr) unless the command exits 0; returns stdout. */
export async function sshOk(sb: Reach, host: Where, cmd: string, o: { user?: string; input?: string } = {}): Promise<string> {
  const r = await sshRun(sb, host, cmd, o);
  if (r.code !== 0) {
    throw new Error(`ssh ${o.user ?? 'root'}@${host.name} (${host.address}:${host.port}) \`${cmd}\` exited ${r.code}:\n${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}
