/** A run named as a person would: its id, a unique prefix, or `last`. */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveRunId } from '../../src/cli/run-ids.js';

describe('resolveRunId', () => {
  const state = mkdtempSync(join(tmpdir(), 'hostsmith-ids-'));
  mkdirSync(join(state, 'runs'));
  for (const id of ['20261201T100000Z-aaaaaa', '20261201T100000Z-abbbbb', '20261202T090000Z-cccccc']) writeFileSync(join(state, 'runs', `${id}.ndjson`), '');

  it.each([
    ['last', '20261202T090000Z-cccccc'],
    ['20261202', '20261202T090000Z-cccccc'],
    ['20261201T100000Z-ab', '20261201T100000Z-abbbbb'],
    ['20261201T100000Z-aaaaaa', '20261201T100000Z-aaaaaa'],
    ['20990101T000000Z-000000', '20990101T000000Z-000000'],
  ])('%j is %j', async (given, want) => {
    expect(await resolveRunId(state, given)).toBe(want);
  });

  it('an ambiguous prefix is exit 2, naming the runs it starts', async () => {
    await expect(resolveRunId(state, '20261201')).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/ambiguous: it starts 2 runs/) });
  });

  it('last with no runs says so', async () => {
    await expect(resolveRunId(mkdtempSync(join(tmpdir(), 'hostsmith-none-')), 'last')).rejects.toMatchObject({ exitCode: 2 });
  });
});
