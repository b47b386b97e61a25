/** hostsmith as a library: load a recipe, plan it, run it; the CLI uses exactly this. */
export { loadRecipe } from './recipe/load.js';
export { resolveVars, loadVarsFile, parseVarArgs } from './recipe/vars.js';
export type { Recipe, StepSpec, VarSpec } from './recipe/types.js';
export { runRecipe, newRunId, type HostTarget, type RunRecipeOptions, type RunReport, type HostReport } from './engine/fleet.js';
export type { RunEvent, Emit, HostStatus, StepStatus, Counts } from './engine/events.js';
export { Journal, readRun, listRunIds, type JournalEntry } from './engine/journal.js';
export { gatherFacts, type Facts } from './engine/facts.js';
export { LocalTransport } from './transport/local.js';
export { SshTransport, type SshTarget } from './transport/ssh.js';
export type { Transport, ExecResult, ExecOptions } from './transport/transport.js';
export { resolveTargets, loadInventory, type TargetSpec } from './transport/targets.js';
export { stepTypes } from './steps/registry.js';
export type { StepType, StepContext, Plan } from './steps/step.js';

// ---- writing a step type of your own (docs/reference.md, "Writing your own step type") ----
/** Checks a custom step type's shape and returns it, typed: the default export of a recipe's `types:` module. */
export { defineStepType } from './steps/define.js';
/** The zod hostsmith validates with: a custom type's `schema` made with it reports file:line:col like the built-ins. */
export { z } from 'zod';
export type { PlanEnv, PlanAction, ApplyResult, HostEnv, StaticEnv, StaticProblem, UndoData, Footprint } from './steps/step.js';
/** Runs a script on the host for a step; a non-zero exit becomes a StepError with what the host said. */
export { runOk } from './steps/step.js';
/** The one quoting function: every value that reaches a host's shell goes through it. */
export { quote } from './shell/quote.js';
/** Footprint items: `ANYTHING` (may touch anything), the account files, and how items meet. */
export { ANYTHING, ACCOUNT_FILES, meets, overlaps } from './steps/footprint.js';
// ---- typed TypeScript recipes (docs/reference.md, "Recipes in TypeScript") ----
/** A recipe to `export default` from a .ts file: typed from the schemas that check YAML recipes. */
export { defineRecipe, type RecipeInput, type RecipeStep, type RecipeItem, type BuiltinStepParams, type CustomParams, type Templated, type VarDecl } from './recipe/define.js';
export * from './errors.js';
