/**
 * Typed TypeScript recipes: `export default defineRecipe({...})` in a `.ts` file that `plan`,
 * `apply` and `test` load directly. The types come from the very zod schemas that check YAML
 * recipes (every built-in step type's params, the common step keys, includes, defaults), so an
 * editor completes a recipe and the type checker rejects a misspelled or mistyped param. At run
 * time the object goes through the same loader and checks as a YAML recipe.
 */
import type { z } from 'zod';
import type { aptRepositorySchema } from '../steps/apt_repository/apt_repository.js';
import type { authorizedKeySchema } from '../steps/authorized_key/authorized_key.js';
import type { blockSchema } from '../steps/block/block.js';
import type { commandSchema } from '../steps/command/command.js';
import type { cronSchema } from '../steps/cron/cron.js';
import type { downloadSchema } from '../steps/download/download.js';
import type { fileSchema } from '../steps/file/file.js';
import type { firewallSchema } from '../steps/firewall/firewall.js';
import type { gitSchema } from '../steps/git/git.js';
import type { groupSchema } from '../steps/group/group.js';
import type { hostnameSchema } from '../steps/hostname/hostname.js';
import type { lineSchema } from '../steps/line/line.js';
import type { localeSchema } from '../steps/locale/locale.js';
import type { packageSchema } from '../steps/package/package.js';
import type { rebootSchema } from '../steps/reboot/reboot.js';
import type { replaceSchema } from '../steps/replace/replace.js';
import type { serviceSchema } from '../steps/service/service.js';
import type { StepType } from '../steps/step.js';
import type { sysctlSchema } from '../steps/sysctl/sysctl.js';
import type { systemdUnitSchema } from '../steps/systemd_unit/systemd_unit.js';
import type { templateSchema } from '../steps/template/template.js';
import type { timezoneSchema } from '../steps/timezone/timezone.js';
import type { unarchiveSchema } from '../steps/unarchive/unarchive.js';
import type { userSchema } from '../steps/user/user.js';
import type { defaultsSchema, includeSchema, stepCommonSchema } from './schema.js';

/** Every built-in step type's params, as a recipe writes them (the schemas' input side). */
export interface BuiltinStepParams {
  command: z.input<typeof commandSchema>;
  file: z.input<typeof fileSchema>;
  template: z.input<typeof templateSchema>;
  package: z.input<typeof packageSchema>;
  cron: z.input<typeof cronSchema>;
  service: z.input<typeof serviceSchema>;
  line: z.input<typeof lineSchema>;
  block: z.input<typeof blockSchema>;
  replace: z.input<typeof replaceSchema>;
  user: z.input<typeof userSchema>;
  group: z.input<typeof groupSchema>;
  sysctl: z.input<typeof sysctlSchema>;
  authorized_key: z.input<typeof authorizedKeySchema>;
  download: z.input<typeof downloadSchema>;
  unarchive: z.input<typeof unarchiveSchema>;
  hostname: z.input<typeof hostnameSchema>;
  timezone: z.input<typeof timezoneSchema>;
  apt_repository: z.input<typeof aptRepositorySchema>;
  locale: z.input<typeof localeSchema>;
  systemd_unit: z.input<typeof systemdUnitSchema>;
  git: z.input<typeof gitSchema>;
  firewall: z.input<typeof firewallSchema>;
  reboot: z.input<typeof rebootSchema>;
}

/** A Handlebars text: wherever a recipe holds a value, it may hold a template that renders to it. */
export type Templated = `${string}{{${string}}}${string}`;

/** `T`, where every value may also be a template (as in YAML, where `port: "{{app_port}}"` is fine). */
export type Loose<T> = T extends string | number | boolean
  ? T | Templated
  : T extends ReadonlyArray<infer U>
    ? ReadonlyArray<Loose<U>> | Templated
    : T extends object
      ? { [K in keyof T]: Loose<T[K]> }
      : T;

/** One step: the common keys, and exactly one step type's key with its params. */
export type RecipeStep<M = BuiltinStepParams> = Loose<z.input<typeof stepCommonSchema>> & { [K in keyof M]: { [P in K]: Loose<M[K]> } & { [P in Exclude<keyof M, K>]?: never } }[keyof M];

/** An item of `steps:`: a step, or another recipe included in its place. */
export type RecipeItem<M = BuiltinStepParams> = RecipeStep<M> | z.input<typeof includeSchema>;

/** A var's declaration: its default alone, or the long form. */
export type VarDecl =
  | string
  | number
  | boolean
  | null
  | unknown[]
  | {
      default?: unknown;
      type?: 'string' | 'number' | 'boolean' | 'list' | 'map';
      required?: boolean;
      pattern?: string;
      secret?: boolean;
      prompt?: boolean;
      description?: string;
    };

/** A whole recipe, as the YAML form has it. */
export interface RecipeInput<M = BuiltinStepParams> {
  name: string;
  description?: string;
  sudo?: boolean;
  vars?: Record<string, VarDecl>;
  steps: ReadonlyArray<RecipeItem<M>>;
  handlers?: ReadonlyArray<RecipeStep<M>>;
  defaults?: z.input<typeof defaultsSchema>;
  verify?: readonly string[];
  /** Modules of custom step types, relative to the recipe file (as in YAML): pass the types themselves too, for their params' types. */
  types?: readonly string[];
  test?: { ignore?: readonly string[]; host?: 'plain' | 'systemd'; net?: 'shared' | 'private'; parallel?: number };
}

/** The params a custom step type's schema produces, by the key it is used under. */
export type CustomParams<T extends Record<string, StepType>> = { [K in keyof T]: T[K] extends StepType<infer P> ? P : never };

/**
 * A typed recipe, to `export default` from a `.ts` recipe file. Custom step types (listed under
 * `types:` by path, as in YAML) are typed when passed too, by the key they are used under:
 * `defineRecipe({ ..., types: ['./types/alternatives.ts'] }, { alternatives })`.
 * Returns the recipe unchanged: the loader checks it at run time as it checks YAML.
 */
export function defineRecipe<const T extends Record<string, StepType> = Record<never, StepType>>(
  recipe: RecipeInput<BuiltinStepParams & CustomParams<NoInfer<T>>>,
  _types?: T,
): RecipeInput<BuiltinStepParams & CustomParams<T>> {
  return recipe;
}
