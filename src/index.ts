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
export * from './errors.js';
