/**
 * What `npm pack` would publish: every source map in it must stand on its own (the TypeScript it
 * points at is inside the map, since src/ is not shipped), and the JSON Schemas editors use are in.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');

describe('the published package', () => {
  it.skipIf(!existsSync(join(ROOT, 'dist')))('ships no source map that points at a file it does not ship', () => {
    const packed = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as Array<{
      files: Array<{ path: string }>;
    }>;
    const files = new Set(packed[0]!.files.map((f) => f.path));
    const maps = [...files].filter((f) => f.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(10);
    const dangling: string[] = [];
    for (const m of maps) {
      const map = JSON.parse(readFileSync(join(ROOT, m), 'utf8')) as { sources: string[]; sourcesContent?: Array<string | null> };
      map.sources.forEach((src, i) => {
        const shipped = files.has(join(m, '..', src).replace(/^\.\//, ''));
        if (!shipped && typeof map.sourcesContent?.[i] !== 'string') dangling.push(`${m} → ${src}`);
      });
    }
    expect(dangling).toEqual([]);
    for (const f of ['schema/recipe.schema.json', 'schema/inventory.schema.json', 'bin/hostsmith.js', 'LICENSE', 'README.md']) expect(files.has(f), f).toBe(true);
  });
});
