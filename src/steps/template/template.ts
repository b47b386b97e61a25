import { z } from 'zod';
import type { StepType } from '../step.js';
import { modeSchema } from '../modes.js';
import { absolutePath, ownerName } from '../paths.js';
import { applyPath, pathStepParts, planPath, renderSource, sourceProblems, type FileUndo, type PathState, type Wanted } from '../file-state.js';

export const templateSchema = z
  .object({
    src: z.string().min(1),
    dest: absolutePath,
    vars: z.record(z.unknown()).optional(),
    mode: modeSchema.optional(),
    owner: ownerName('owner').optional(),
    group: ownerName('group').optional(),
  })
  .strict();

export type TemplateParams = z.output<typeof templateSchema> & { rendered?: string };

function wanted(p: TemplateParams): Wanted {
  if (p.rendered === undefined) throw new Error(`template ${p.src} was not rendered before use`);
  return { path: p.dest, state: 'present', content: Buffer.from(p.rendered, 'utf8'), mode: p.mode, owner: p.owner, group: p.group };
}

export const templateStep: StepType<TemplateParams, PathState, FileUndo> = {
  type: 'template',
  schema: templateSchema,
  async prepare(ctx, p) {
    return { ...p, rendered: await renderSource(ctx, 'template', p.src, p.vars) };
  },
  ...pathStepParts<TemplateParams>((p) => p.dest),
  plan: (p, s, env) => planPath(wanted(p), s, env),
  apply: async (ctx, p, plan, s) => ({ state: await applyPath(ctx, wanted(p), plan, s) }),
  // The template's own vars are names it may use beyond the recipe's.
  staticCheck: (raw, env) => sourceProblems(raw, env, 'templates', 'template', raw.vars && typeof raw.vars === 'object' && !Array.isArray(raw.vars) ? Object.keys(raw.vars) : []),
};
