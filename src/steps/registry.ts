import type { StepType } from './step.js';
import { commandStep } from './command.js';
import { cronStep } from './cron.js';
import { fileStep } from './file.js';
import { groupStep } from './group.js';
import { lineStep } from './line.js';
import { packageStep } from './package.js';
import { serviceStep } from './service.js';
import { templateStep } from './template.js';
import { userStep } from './user.js';

/** Every step type, by the recipe key that selects it, in the order SPEC §3 lists them. */
export const stepTypes: Record<string, StepType> = {
  command: commandStep,
  file: fileStep,
  template: templateStep,
  package: packageStep,
  cron: cronStep,
  service: serviceStep,
  line: lineStep,
  user: userStep,
  group: groupStep,
};

export function stepType(key: string): StepType | undefined {
  return Object.prototype.hasOwnProperty.call(stepTypes, key) ? stepTypes[key] : undefined;
}
