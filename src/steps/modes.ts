import { z } from 'zod';

/**
 * File modes arrive as "0644", "644" or a YAML number. YAML 1.2 reads 0644 as decimal 644,
 * so a number whose digits are all octal is taken as written, like Ansible users expect.
 */
export const modeSchema = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const s = String(v).trim();
  if (!/^0?[0-7]{3,4}$/.test(s)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid mode "${s}": use octal digits such as "0644"` });
    return z.NEVER;
  }
  return parseInt(s, 8);
});

export function fmtMode(m: number | undefined): string {
  return m === undefined ? '?' : m.toString(8).padStart(4, '0');
}
