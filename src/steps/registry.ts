import type { StepType } from './step.js';
import { commandStep } from './command.js';
import { fileStep } from './file.js';
import { templateStep } from './template.js';

/** Every step type, by the recipe key that selects it. */
export const stepTypes: Record<string, StepType> = {
  command: commandStep,
  file: fileStep,
  template: templateStep,
};

export function stepType(key: string): StepType | undefined {
  return Object.prototype.hasOwnProperty.call(stepTypes, key) ? stepTypes[key] : undefined;
}
