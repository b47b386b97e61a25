/**
 * Batched probes: every step's reads for a host in one round trip.
 *
 * A step's check reads the host with commands that follow from its params alone (and, for a
 * check that reads twice, from what the first read said). So before the steps take their turns,
 * each remaining step is planned once against a recording transport that runs nothing: it notes
 * the exact framed command (command line + stdin) the step would send, and stops the step there.
 * All noted commands go to the host in one exec — a script that runs each exactly as its own exec
 * would (same bootstrap, sudo, user and timeout) and prints each result framed as
 * `<nonce> <index> <exit code> <base64 stdout> <base64 stderr>` on one line, so no output can
 * break the framing. The results wait on the transport; when the step then really plans, each of
 * its commands framed the same way gets its result without a round trip. A check that reads again
 * from what it read is planned again against the results so far, and its next commands join a
 * second batch (at most MAX_ROUNDS).
 *
 * Results are only good until the run changes the host: every apply and rollback drops them
 * (`Probes.drop`), and the next step to plan batches the remaining steps again, so a step is never
 * planned from what the host was before a change that came ahead of it.
 */
import { randomBytes } from 'node:crypto';
import { ShellTransport } from '../transport/base.js';
import { BOOTSTRAP, SCRIPT_END, quote } from '../shell/script.js';
import type { ExecResult, Transport } from '../transport/transport.js';
import type { StepSpec } from '../recipe/types.js';
import { MEMO_MARK } from '../steps/package/apt.js';
import { overlaps } from '../steps/footprint.js';
import { askKey, PATH_BATCH_FILES, type PathAsk, pathAnswers, pathAskOf, pathBatchScript } from '../steps/path-batch.js';

/** Rounds of discovery per batch: a check reads at most this many times in a row from one batch. */
const MAX_ROUNDS = 3;

class Noted extends Error {
  constructor() {
    super('noted for the batch');
  }
}

const keyOf = (cmdline: string, stdin: Buffer) => `${cmdline}\0${stdin.toString('base64')}`;

/** A read whose script names the stamp of everything its output depends on (apt.ts MEMO_MARK). */
const MEMO_LINE = new RegExp(`(?:\\n|; )${MEMO_MARK} \\d+ \\d+\\n`);
const isMemo = (stdin: Buffer): boolean => MEMO_LINE.test(stdin.toString('latin1'));

/**
 * Results of batched commands, by framed form. Served as often as asked (two steps reading the
 * same file read the same bytes); a change drops the results of what it may have written. A
 * stamped read (a package's apt dry run) is kept through every drop: its command names the stamp
 * its answer depends on, so once the host moves the step asks with another stamp, another key.
 */
class Prefetched {
  private readonly byKey = new Map<string, ExecResult>();
  private readonly memo = new Set<string>();
  /** What changes read back (seed), not yet claimed by a step planned from it. */
  readonly seeded = new Set<string>();
  take(cmdline: string, stdin: Buffer): ExecResult | undefined {
    return this.byKey.get(keyOf(cmdline, stdin));
  }
  peek(key: string): ExecResult | undefined {
    return this.byKey.get(key);
  }
  put(key: string, r: ExecResult, stdin: Buffer): void {
    this.byKey.set(key, r);
    if (r.code === 0 && isMemo(stdin)) this.memo.add(key);
  }
  drop(key: string): void {
    if (!this.memo.has(key)) this.byKey.delete(key);
  }
  /**
   * A change's read-back of the state it left, under the key of the read that prints it: the step
   * after it that reads the same (the next line in that file, the next entry in that crontab) plans
   * from it without a round trip.
   */
  seed(cmdline: string, stdin: Buffer, r: ExecResult): void {
    const key = keyOf(cmdline, stdin);
    this.byKey.set(key, r);
    this.seeded.add(key);
  }
}

/** Runs nothing: notes each command a step would send, serving what earlier rounds fetched. */
class NotingTransport extends ShellTransport {
  readonly name: string;
  readonly noted: Array<{ key: string; cmdline: string; stdin: Buffer }> = [];
  constructor(real: ShellTransport, have: Prefetched) {
    super();
    this.name = real.name;
    this.sameAs(real);
    this.usePrefetched({
      take: (cmdline, stdin) => {
        const key = keyOf(cmdline, stdin);
        const r = have.peek(key);
        if (r) this.served.push({ key });
        return r;
      },
    });
  }
  /** Commands answered from earlier batches (the step reads them too). */
  readonly served: Array<{ key: string }> = [];
  protected async raw(cmdline: string, options: { stdin?: string | Buffer }): Promise<ExecResult> {
    const stdin = Buffer.isBuffer(options.stdin) ? options.stdin : Buffer.from(options.stdin ?? '', 'utf8');
    this.noted.push({ key: keyOf(cmdline, stdin), cmdline, stdin });
    throw new Noted();
  }
  async close(): Promise<void> {}
}

/** The steps a step's reads are batched with, and how to plan one without running anything. */
export interface BatchWith {
  /** The steps after it that have not planned yet (those whose reads already wait are skipped here). */
  later(): StepSpec[];
  /** Plans a step over another transport, on a copy of the host's state. */
  planOver(spec: StepSpec, transport: ShellTransport): Promise<unknown>;
  /** What a step reads (resources): a change to any of it drops the step's batched reads. */
  readsOf(spec: StepSpec): string[];
}

/**
 * One host's batched reads: the results waiting on the transport, and the steps they cover (with
 * the cache keys each read and the resources it reads).
 */
export class Probes {
  private readonly cache = new Prefetched();
  private readonly covered = new Map<string, { keys: string[]; reads: string[] }>();

  /**
   * The run is about to change the host (`writes`: what the change may write; undefined: anything).
   * Batched reads of steps that read any of it are dropped, and those steps are batched again
   * before they plan; the reads of steps the change cannot touch stay.
   */
  drop(writes?: string[]): void {
    const w = writes ?? ['*'];
    for (const [name, c] of this.covered) {
      if (!w.some((x) => c.reads.some((r) => overlaps(x, r)))) continue;
      this.covered.delete(name);
      for (const k of c.keys) this.cache.drop(k);
    }
    // A read-back no step has planned from yet says nothing of what it reads: any change may move
    // it. One a step planned from is that step's now, and dropped as its reads are.
    const claimed = new Set([...this.covered.values()].flatMap((c) => c.keys));
    for (const k of this.cache.seeded) if (!claimed.has(k)) this.cache.drop(k);
    this.cache.seeded.clear();
  }

  /**
   * Is the step about to plan from batched reads? The engine then reads a step that would change
   * the host once more, on its own, right before applying it: a change made meanwhile by someone
   * else is caught at the step's turn (the plan issue's rule), while an unchanged step costs nothing.
   */
  fromBatch(spec: StepSpec): boolean {
    return this.covered.has(spec.name);
  }

  /** Forgets the step's batched reads: its next check goes to the host itself. */
  readLive(spec: StepSpec): void {
    const c = this.covered.get(spec.name);
    if (!c) return;
    for (const k of c.keys) this.cache.drop(k);
    this.covered.delete(spec.name);
  }

  /**
   * Before `spec` plans: unless its reads are already waiting, batch the reads of it and of the
   * steps `with.later()` gives. With `carry` (the host's facts, not read yet this run), the first
   * batch takes its script along, and always goes, however few reads it holds: the round trip is
   * paid for by the facts either way.
   */
  async prefetch(real: Transport, spec: StepSpec, batch: BatchWith, carry?: Carry): Promise<void> {
    if (process.env.HOSTSMITH_NO_BATCH === '1') return;
    if (!(real instanceof ShellTransport)) return;
    real.usePrefetched(this.cache);
    if (this.covered.has(spec.name)) return;
    // This step and every later one not planned yet whose reads are not waiting.
    const rest = [spec, ...batch.later().filter((s) => !this.covered.has(s.name))];
    const keys = new Map<string, Set<string>>(rest.map((s) => [s.name, new Set()]));
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const wanted = new Map<string, { cmdline: string; stdin: Buffer }>();
      for (const step of rest) {
        const noting = new NotingTransport(real, this.cache);
        await batch.planOver(step, noting).catch(() => undefined);
        for (const n of [...noting.noted, ...noting.served]) keys.get(step.name)!.add(n.key);
        for (const n of noting.noted) if (!this.cache.peek(n.key)) wanted.set(n.key, n);
      }
      if (!wanted.size) break;
      const mine = [...keys.get(spec.name)!].some((k) => wanted.has(k));
      if (round === 0 && !carry && (wanted.size === 1 || !mine)) {
        // One read to make: its own exec costs the host less than a batch around it. The step that
        // wants it reads on its own; the others plan from what is already here. And when this
        // step wants nothing (what it reads is here: batched before, or a change's read-back),
        // the later steps' reads wait for the first step that needs one: a change before then
        // could drop them again (a command's reads go with every change), and each such batch
        // would be an exec for nothing.
        for (const step of rest) if (![...keys.get(step.name)!].some((k) => wanted.has(k))) this.covered.set(step.name, { keys: [...keys.get(step.name)!], reads: batch.readsOf(step) });
        return;
      }
      await runBatch(real, [...wanted.entries()], this.cache, round === 0 ? carry : undefined);
    }
    for (const step of rest) this.covered.set(step.name, { keys: [...keys.get(step.name)!], reads: batch.readsOf(step) });
  }
}

/**
 * A script that goes along with a batch, in the same exec and before it, and what to do with
 * what it printed (its stdout, as text): the host's facts on a run's first contact.
 */
export interface Carry {
  script: string;
  took(out: string): void;
}

/** One exec: every noted command run as its own exec would be; their results are cached. */
async function runBatch(transport: ShellTransport, items: Array<[string, { cmdline: string; stdin: Buffer }]>, cache: Prefetched, carry?: Carry): Promise<void> {
  const results = await execBatch(
    transport,
    items.map(([, item]) => item),
    carry ? { carry } : {},
  );
  results.forEach((result, i) => {
    if (result) cache.put(items[i]![0], result, items[i]![1].stdin);
  });
}

/** `sh -c <bootstrap>` with at most a `timeout` before it (no sudo: sudo would drop the env). */
const PLAIN = new RegExp(`^((?:timeout -k \\d+ \\d+ )?)sh -c ${escapeRe(quote(BOOTSTRAP))}$`);

function escapeRe(x: string): string {
  return x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * A framed command with no stdin of its own and no sudo (at most a `timeout` before it): the
 * `timeout` words and the script its bootstrap would run.
 */
function plainScript(it: { cmdline: string; stdin: Buffer }): { timeout: string; script: string } | undefined {
  const plain = PLAIN.exec(it.cmdline);
  const nl = it.stdin.indexOf(0x0a);
  const len = nl > 0 ? Number(it.stdin.subarray(0, nl).toString('latin1')) : NaN;
  if (!plain || !Number.isInteger(len) || nl + 1 + len !== it.stdin.length) return undefined;
  const script = it.stdin.subarray(nl + 1).toString('utf8');
  return script.endsWith(SCRIPT_END) && Buffer.byteLength(script) === len ? { timeout: plain[1]!, script } : undefined;
}

/**
 * One command of a batch as the host's shell runs it, its output to `o<i>`/`e<i>` and its exit
 * code added to `hs_codes`. The framed stdin is `<bytes>\n<script><own stdin>`. A plain command
 * (plainScript) is evaluated as the bootstrap evaluates the script it reads (the script unsets
 * `s` first), in a subshell of the batch: a fork where its own exec was five processes, and a
 * fresh `sh` a whole process more. The subshell starts as that `sh` would: no EXIT or other trap
 * of the batch (a subshell resets them), none of the batch's own variables, stdin from
 * /dev/null, and its `exit`, `cd`, `umask` or `exec` end with it. One with a `timeout` needs a
 * program to time, and one that names `$$` its own shell's id (OWN_PID): each runs as
 * `[timeout …] sh -c 'eval "$s"'`. Any other goes through the very
 * bootstrap its own exec would, its stdin fed from base64.
 */
function batchLine(i: number, it: { cmdline: string; stdin: Buffer }): string {
  // In the login's own folder, as its own exec: the scratch folder is named by path, never entered.
  const out = `</dev/null >"$T/o${i}" 2>"$T/e${i}"`;
  const plain = plainScript(it);
  if (plain && (plain.timeout || OWN_PID.test(plain.script))) return `s=${quote(plain.script)} ${plain.timeout}sh -c 'eval "$s"' ${out}; hs_codes="$hs_codes ${i}:$?"`;
  if (plain) return `s=${quote(plain.script)}; ( unset T hs_codes; eval "$s" ) ${out}; hs_codes="$hs_codes ${i}:$?"`;
  return `printf %s ${quote(it.stdin.toString('base64'))} | base64 -d | ( eval ${quote(it.cmdline)} ) >"$T/o${i}" 2>"$T/e${i}"; hs_codes="$hs_codes ${i}:$?"`;
}

/**
 * A script that names its shell's process id: in a subshell `$$` is the batch's own (a `kill $$`
 * would end the batch), so such a script gets a shell of its own.
 */
const OWN_PID = /\$\$|\$\{\$\}/;

/**
 * A batched command that is exactly a path's read (file-state.ts checkScript) or a `test -e` of
 * one (path-batch.ts existsScript), with no timeout, sudo, cwd or environment of its own: what it asks.
 */
function pathItem(it: { cmdline: string; stdin: Buffer }): PathAsk | undefined {
  const plain = plainScript(it);
  const m = plain && !plain.timeout ? BARE.exec(plain.script) : null;
  return m ? pathAskOf(m[1]!) : undefined;
}

/** The script commandScript makes of a command run with nothing but the run's tag around it. */
const BARE = new RegExp(`^unset n s(?:; export HOSTSMITH_RUN=(?:[A-Za-z0-9_/.,:=@%+-]+|'[^']*'))?; ([^]*)\n${escapeRe(SCRIPT_END)}$`);

/**
 * Runs framed commands (exec command line + stdin, as ShellTransport.exec sends them) in one
 * exec, each exactly as its own exec would run, and gives back each one's result; undefined for
 * one whose result did not come back (the batch failed: such a command is run on its own later).
 * The answer is three header parts, each after a line holding the batch's nonce — the exit codes
 * (`<index>:<code>`), then `wc -c` of every output file — and then the files' bytes back to back,
 * cut by those sizes: nothing a command prints (a line like the frame, binary bytes, no final
 * newline) can shift another's output.
 *
 * Two or more such reads of paths are answered together from one look at the host
 * (steps/path-batch.ts); one that look cannot answer for certain runs its own script in a second batch.
 */
export async function execBatch(transport: ShellTransport, items: Array<{ cmdline: string; stdin: Buffer }>, o: { combine?: boolean; carry?: Carry } = {}): Promise<Array<ExecResult | undefined>> {
  const nonce = randomBytes(8).toString('hex');
  const paths = new Map<number, PathAsk>();
  if (o.combine !== false) {
    items.forEach((it, i) => {
      const p = pathItem(it);
      if (p !== undefined) paths.set(i, p);
    });
    if (paths.size < 2) paths.clear();
  }
  const own = items.map((_, i) => i).filter((i) => !paths.has(i));
  const files = [...own.flatMap((i) => [`o${i}`, `e${i}`]), ...(paths.size ? PATH_BATCH_FILES : [])];
  const lines = [
    // What goes along runs first, in a subshell (whatever it sets stays there), and prints before
    // the batch's first frame line: even a batch that fails at once leaves its answer whole.
    ...(o.carry
      ? [
          `( ${o.carry.script}
) </dev/null 2>/dev/null`,
        ]
      : []),
    // Named after the run (HOSTSMITH_RUN, set for every command): what a killed batch leaves, the
    // run's recover removes (journal-steps.ts stopLeftovers).
    'T=$(mktemp -d "${TMPDIR:-/tmp}/hostsmith-probe.${HOSTSMITH_RUN:-none}.XXXXXXXX") || exit 97',
    'trap \'rm -rf -- "$T"\' EXIT',
    // Stopped, or its controller gone (a write to the dead channel: SIGPIPE): still leave nothing behind.
    "trap 'exit 143' TERM INT HUP PIPE",
    // Exit codes, as `<index>:<code>` words: kept by the shell itself (a file of them took a `cat`).
    'hs_codes=',
    ...(paths.size ? [pathBatchScript([...paths.values()])] : []),
    ...own.map((i) => batchLine(i, items[i]!)),
    // Every command has run: the batch itself may stand in the scratch folder now (no subshells).
    `printf '%s\\n' ${nonce}; printf '%s\\n' $hs_codes; printf '%s\\n' ${nonce}; cd "$T" || exit 97; wc -c ${files.join(' ')} </dev/null; printf '%s\\n' ${nonce}; cat ${files.join(' ')}`,
  ];
  const r = await transport.exec(lines.join('\n'));
  const out: Array<ExecResult | undefined> = items.map(() => undefined);
  const raw = r.stdoutRaw;
  const mark = Buffer.from(`${nonce}\n`);
  const at0 = raw.indexOf(mark);
  o.carry?.took(raw.subarray(0, at0 < 0 ? raw.length : at0).toString('utf8'));
  if (r.code !== 0) return out;
  const at1 = at0 < 0 ? -1 : raw.indexOf(mark, at0 + mark.length);
  const at2 = at1 < 0 ? -1 : raw.indexOf(mark, at1 + mark.length);
  if (at2 < 0) return out;
  const codes = new Map<number, number>();
  for (const line of raw
    .subarray(at0 + mark.length, at1)
    .toString('latin1')
    .split('\n')) {
    const m = /^(\d+):(\d+)$/.exec(line);
    if (m) codes.set(Number(m[1]), Number(m[2]));
  }
  const sizes = new Map<string, number>();
  for (const line of raw
    .subarray(at1 + mark.length, at2)
    .toString('latin1')
    .split('\n')) {
    const m = /^\s*(\d+) ([oe]\d+|p[mfd])$/.exec(line);
    if (m) sizes.set(m[2]!, Number(m[1]));
  }
  if (files.some((f) => !sizes.has(f))) return out;
  let at = at2 + mark.length;
  const bytes = new Map<string, Buffer>();
  for (const f of files) {
    const n = sizes.get(f)!;
    if (at + n > raw.length) return out;
    bytes.set(f, raw.subarray(at, at + n));
    at += n;
  }
  for (const i of own) {
    const exit = codes.get(i);
    if (exit === undefined) continue;
    const stdoutRaw = Buffer.from(bytes.get(`o${i}`)!);
    out[i] = {
      code: exit,
      stdout: stdoutRaw.toString('utf8'),
      stderr: bytes.get(`e${i}`)!.toString('utf8'),
      stdoutRaw,
      timedOut: exit === 124 && items[i]!.cmdline.startsWith('timeout '),
    };
  }
  if (!paths.size) return out;
  const answers = pathAnswers([...paths.values()], { pm: bytes.get('pm')!, pf: bytes.get('pf')!, pd: bytes.get('pd')! });
  const unsure: number[] = [];
  for (const [i, p] of paths) {
    const a = answers?.get(askKey(p));
    if (!a) {
      unsure.push(i);
      continue;
    }
    const stdoutRaw = Buffer.from(a.stdout);
    out[i] = { code: a.code, stdout: stdoutRaw.toString('utf8'), stderr: a.stderr, stdoutRaw, timedOut: false };
  }
  if (unsure.length) {
    const again = await execBatch(
      transport,
      unsure.map((i) => items[i]!),
      { combine: false },
    );
    unsure.forEach((i, k) => {
      out[i] = again[k];
    });
  }
  return out;
}
