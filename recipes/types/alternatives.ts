/**
 * `alternatives`: which program a Debian alternatives name points at (update-alternatives --set),
 * as a custom step type a recipe loads with `types: [./types/alternatives.ts]`.
 *
 *   - name: vim is the editor
 *     alternatives: { name: editor, path: /usr/bin/vim.basic }
 *
 * The choice is pinned (manual mode): a package installed later with a higher priority does not
 * take the name over. Rollback puts back the choice that was there, or auto mode when the name
 * followed the priorities.
 */
import { defineStepType, quote, runOk, StepError, z } from 'hostsmith';

const schema = z
  .object({
    /** The alternatives name: editor, x-www-browser, java… (what `update-alternatives --get-selections` lists). */
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.+-]*$/, 'an alternatives name is letters, digits, ".", "_", "+" and "-"'),
    /** The program it should point at: one of the name's alternatives, an absolute path. */
    path: z.string().regex(/^\/[^\0\n]*$/, 'the alternative is an absolute path'),
  })
  .strict();

type Params = z.output<typeof schema>;

/** What update-alternatives --query says of a name. */
interface State {
  /** auto: the highest priority wins; manual: pinned by --set. */
  status: 'auto' | 'manual';
  /** The alternative the name points at now (null when it points at none). */
  value: string | null;
  /** Every alternative the name has. */
  alternatives: string[];
}

interface Undo {
  name: string;
  status: 'auto' | 'manual';
  value: string | null;
}

/** The fields of update-alternatives --query (Debian's update-alternatives(1), QUERY FORMAT). */
export function parseQuery(out: string): State {
  const field = (key: string) => new RegExp(`^${key}: (.*)$`, 'm').exec(out)?.[1]?.trim();
  const value = field('Value');
  return {
    status: field('Status') === 'manual' ? 'manual' : 'auto',
    value: value && value !== 'none' ? value : null,
    alternatives: [...out.matchAll(/^Alternative: (.*)$/gm)].map((m) => m[1]!.trim()),
  };
}

const described = (s: Pick<State, 'status' | 'value'>) => `${s.value ?? 'none'} (${s.status})`;

export default defineStepType<Params, State, Undo>({
  type: 'alternatives',
  schema,

  async check(ctx, p) {
    // Exit 2 with "no alternatives for …" when the name does not exist: said as the step's error.
    const r = await ctx.exec(`LC_ALL=C update-alternatives --query ${quote(p.name)}`);
    if (r.code !== 0) throw new StepError(`no alternatives named ${p.name} on this host (update-alternatives --query exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()})`);
    return parseQuery(r.stdout);
  },

  plan(p, s) {
    if (!s.alternatives.includes(p.path)) {
      throw new StepError(`${p.path} is not an alternative for ${p.name} (its alternatives: ${s.alternatives.join(', ') || 'none'}); install the program's package first`);
    }
    if (s.status === 'manual' && s.value === p.path) return { changed: false, summary: `${p.name}: ${p.path} (manual)`, undo: null };
    return {
      changed: true,
      summary: `${p.name}: ${described(s)} → ${p.path} (manual)`,
      diff: `--- ${p.name}\n+++ ${p.name}\n@@ -1 +1 @@\n-${described(s)}\n+${p.path} (manual)\n`,
      undo: { name: p.name, status: s.status, value: s.value },
    };
  },

  async apply(ctx, p) {
    await runOk(ctx, `update-alternatives --set ${quote(p.name)} ${quote(p.path)}`, `setting ${p.name} to ${p.path}`);
    return {};
  },

  async rollback(ctx, _p, undo) {
    if (undo.status === 'auto' || undo.value === null) await runOk(ctx, `update-alternatives --auto ${quote(undo.name)}`, `putting ${undo.name} back in auto mode`);
    else await runOk(ctx, `update-alternatives --set ${quote(undo.name)} ${quote(undo.value)}`, `putting ${undo.name} back to ${undo.value}`);
  },

  // The link in /etc/alternatives and dpkg's record of the choice; the log (/var/log) is not state.
  footprint: (p) => ({
    reads: [`path:/etc/alternatives/${p.name}`, `path:/var/lib/dpkg/alternatives/${p.name}`],
    writes: [`path:/etc/alternatives/${p.name}`, `path:/var/lib/dpkg/alternatives/${p.name}`],
  }),

  undoSummary: (u) => (u.status === 'auto' || u.value === null ? `put ${String(u.name)} back in auto mode` : `set ${String(u.name)} back to ${String(u.value)}`),

  // undo and recover act from the journal alone: undo data for another name is not acted on.
  undoMismatch: (p, u) => (u.name === p.name ? undefined : `its undo data is for alternatives name ${JSON.stringify(u.name)}, not ${p.name}`),
});
