// Preload for the first-run profile (test/bench/profile.ts), loaded with `node --import` into the
// real CLI: records every exec channel (host, start, end, command head, bytes) and every journal
// fsync, one JSON line each, into BENCH_TRACE_OUT. It changes nothing hostsmith does.
// BENCH_TRACE_DIST: the dist/ folder of the CLI being traced (the module the CLI itself loads).
import { appendFileSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const out = process.env.BENCH_TRACE_OUT;
const dist = process.env.BENCH_TRACE_DIST;
if (out && dist) {
  writeFileSync(out, '');
  const now = () => performance.timeOrigin + performance.now();
  const lines = [];
  const flush = () => {
    if (lines.length) appendFileSync(out, lines.splice(0).join(''));
  };
  const note = (o) => {
    lines.push(`${JSON.stringify(o)}\n`);
    if (lines.length > 500) flush();
  };
  process.on('exit', flush);
  note({ kind: 'start', t: now(), pid: process.pid });

  const { SshTransport } = await import(pathToFileURL(join(dist, 'transport/ssh.js')).href);
  // A probe batch's lines `r <i> '<framed stdin, base64>' '<cmdline>'`: each item's own script, shortened.
  // One item per read of a batch (engine/probe.ts batchLine): `s=<quoted script> … sh -c` or
  // `printf %s <base64 framed stdin> | base64 -d | ( eval … )`; the label is the script's start.
  const batchItems = (script) =>
    [...script.matchAll(/(?:^|\n)(?:s=('(?:[^']|'\\'')*')|printf %s '?([A-Za-z0-9+/=]*)'? \| base64 -d)/g)].map((m) => {
      let text;
      if (m[1] !== undefined) text = m[1].slice(1, -1).replace(/'\\''/g, "'");
      else {
        const framed = Buffer.from(m[2], 'base64');
        const nl = framed.indexOf(10);
        text = framed.subarray(nl + 1, nl + 1 + Number(framed.subarray(0, nl).toString())).toString('utf8');
      }
      return text.replace(/^unset n s;( export HOSTSMITH_RUN=\S+;)? /, '').slice(0, 400);
    });
  const connect = SshTransport.connect;
  SshTransport.connect = async function (target, ...rest) {
    const t0 = now();
    try {
      return await connect.call(this, target, ...rest);
    } finally {
      note({ kind: 'connect', host: target?.name, t0, t1: now() });
    }
  };
  const raw = SshTransport.prototype.raw;
  SshTransport.prototype.raw = async function (cmdline, o) {
    const t0 = now();
    // The command line is a fixed bootstrap; the script travels first on stdin: `<bytes>\n<script><data>`.
    const buf = o?.stdin === undefined ? Buffer.alloc(0) : Buffer.isBuffer(o.stdin) ? o.stdin : Buffer.from(o.stdin);
    const nl = buf.indexOf(10);
    const len = nl > 0 ? Number(buf.subarray(0, nl).toString()) : NaN;
    const script = Number.isFinite(len) ? buf.subarray(nl + 1, nl + 1 + len).toString('utf8') : '';
    const rec = { kind: 'exec', host: this.name, t0, cmd: script.replace(/^unset n s;( export HOSTSMITH_RUN=\S+;)? /, '').slice(0, 1200), cmdLen: script.length, stdin: buf.length, wrapper: cmdline.slice(0, 120) };
    try {
      const r = await raw.call(this, cmdline, o);
      note({ ...rec, t1: now(), code: r.code, out: r.stdoutRaw?.length ?? 0, ...(script.includes('hostsmith-probe.') ? { items: batchItems(script) } : {}) });
      return r;
    } catch (e) {
      note({ ...rec, t1: now(), error: String(e?.message ?? e) });
      throw e;
    }
  };

  // Journal fsyncs: FileHandle.sync / datasync (the class is reached through an open handle).
  const fh = await open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(fh);
  await fh.close();
  for (const name of ['sync', 'datasync']) {
    const orig = proto[name];
    proto[name] = async function () {
      const t0 = now();
      try {
        return await orig.call(this);
      } finally {
        note({ kind: 'fsync', how: name, t0, t1: now() });
      }
    };
  }
}
