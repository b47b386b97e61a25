/**
 * The shape of src/ that keeps the engine easy to see: no import cycle (type imports count, as a
 * reader follows them too), and the low layers — steps, transport, render — import nothing from
 * the layers above them. TypeScript's own pre-processor lists each file's imports.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '../src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Each source file (relative to src/) and the source files it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const f of files(SRC)) {
    const info = ts.preProcessFile(readFileSync(f, 'utf8'), true, true);
    const deps = info.importedFiles
      .map((i) => i.fileName)
      .filter((n) => n.startsWith('.'))
      .map((n) => relative(SRC, resolve(dirname(f), n.replace(/\.js$/, '.ts'))));
    graph.set(relative(SRC, f), deps);
  }
  return graph;
}

/** Every cycle's files, found by Tarjan's strongly connected components. */
export function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(comp.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out;
}

describe('the shape of src/', () => {
  const graph = importGraph();

  it('has no import cycle', () => {
    expect(cycles(graph)).toEqual([]);
  });

  it.each([
    ['steps', ['engine', 'recipe', 'cli']],
    ['transport', ['engine', 'recipe', 'cli', 'steps']],
    ['render', ['engine', 'recipe', 'cli', 'steps']],
    // The one home of host shell text: below everything but the transport's exec types.
    ['shell', ['engine', 'recipe', 'cli', 'steps', 'render']],
  ])('%s/ imports nothing from %j', (layer, above) => {
    const bad = [...graph].flatMap(([f, deps]) => (f.startsWith(`${layer}/`) ? deps.filter((d) => above.some((a) => d.startsWith(`${a}/`))).map((d) => `${f} -> ${d}`) : []));
    expect(bad).toEqual([]);
  });

  it('finds a cycle when there is one (the check itself works)', () => {
    const g = new Map([
      ['a.ts', ['b.ts']],
      ['b.ts', ['c.ts']],
      ['c.ts', ['a.ts']],
      ['d.ts', ['a.ts']],
    ]);
    expect(cycles(g)).toEqual([['a.ts', 'b.ts', 'c.ts']]);
    expect(graph.size).toBeGreaterThan(50);
  });
});
