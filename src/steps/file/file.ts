import { z } from 'zod';
import { InputError } from '../../errors.js';
import type { StepType } from '../step.js';
import { modeSchema } from '../modes.js';
import { absolutePath, linkTarget, ownerName } from '../paths.js';
import { applyPath, pathStepParts, sourceProblems, planPath, type FileUndo, type PathState, type Wanted } from '../file-state.js';

export const fileSchema = z
  .object({
    path: absolutePath,
    content: z.string().optional(),
    src: z.string().optional(),
    state: z.enum(['present', 'absent', 'directory', 'link']).default('present'),
    target: linkTarget.optional(),
    mode: modeSchema.optional(),
    owner: ownerName('owner').optional(),
    group: ownerName('group').optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.content !== undefined && p.src !== undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'give either content or src, not both', path: ['src'] });
    }
    if (p.state === 'link' && !p.target) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'state: link needs a target', path: ['target'] });
    }
    if (p.state !== 'link' && p.target !== undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'target is only for state: link', path: ['target'] });
    }
    if (p.state === 'link' && p.mode !== undefined) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'mode does not apply to state: link (a symlink has no mode of its own)', path: ['mode'] });
    }
    if ((p.state === 'absent' || p.state === 'directory' || p.state === 'link') && (p.content !== undefined || p.src !== undefined)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `content/src make no sense with state: ${p.state}`, path: ['state'] });
    }
  });

export type FileParams = z.output<typeof fileSchema> & { resolvedContent?: string };

export function wantedOf(p: FileParams): Wanted {
  return {
    path: p.path,
    state: p.state,
    // Neither content nor src: the content is not managed (an absent file is created empty).
    content: p.state !== 'present' ? undefined : p.resolvedContent !== undefined ? Buffer.from(p.resolvedContent, 'base64') : p.content !== undefined ? Buffer.from(p.content, 'utf8') : undefined,
    target: p.target,
    mode: p.mode,
    owner: p.owner,
    group: p.group,
  };
}

export const fileStep: StepType<FileParams, PathState, FileUndo> = {
  type: 'file',
  schema: fileSchema,
  async prepare(ctx, p) {
    if (p.src === undefined) return p;
    // `src` files are copied as they are (not templates); carried as base64 so bytes survive.
    const { content } = await ctx.readSource(p.src, 'files').catch((e: unknown) => {
      throw new InputError(`step "${ctx.step}": file.src: ${(e as Error).message}`);
    });
    return { ...p, resolvedContent: content.toString('base64') };
  },
  ...pathStepParts<FileParams>((p) => p.path),
  plan: (p, s, env) => planPath(wantedOf(p), s, env),
  apply: async (ctx, p, plan, s) => ({ state: await applyPath(ctx, wantedOf(p), plan, s) }),
  staticCheck: (raw, env) => sourceProblems(raw, env, 'files', 'file'),
};
