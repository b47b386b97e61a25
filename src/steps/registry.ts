import type { StepType } from './step.js';
import { commandStep } from './command/command.js';
import { cronStep } from './cron/cron.js';
import { downloadStep } from './download/download.js';
import { unarchiveStep } from './unarchive/unarchive.js';
import { hostnameStep } from './hostname/hostname.js';
import { timezoneStep } from './timezone/timezone.js';
import { fileStep } from './file/file.js';
import { groupStep } from './group/group.js';
import { lineStep } from './line/line.js';
import { blockStep } from './block/block.js';
import { replaceStep } from './replace/replace.js';
import { packageStep } from './package/package.js';
import { serviceStep } from './service/service.js';
import { templateStep } from './template/template.js';
import { userStep } from './user/user.js';
import { sysctlStep } from './sysctl/sysctl.js';
import { authorizedKeyStep } from './authorized_key/authorized_key.js';
import { aptRepositoryStep } from './apt_repository/apt_repository.js';

/** Every step type, by the recipe key that selects it, in the order SPEC §3 lists them. */
export const stepTypes: Record<string, StepType> = {
  command: commandStep,
  file: fileStep,
  template: templateStep,
  package: packageStep,
  cron: cronStep,
  service: serviceStep,
  line: lineStep,
  block: blockStep,
  replace: replaceStep,
  user: userStep,
  group: groupStep,
  sysctl: sysctlStep,
  authorized_key: authorizedKeyStep,
  download: downloadStep,
  unarchive: unarchiveStep,
  hostname: hostnameStep,
  timezone: timezoneStep,
  apt_repository: aptRepositoryStep,
};

export function stepType(key: string): StepType | undefined {
  return Object.prototype.hasOwnProperty.call(stepTypes, key) ? stepTypes[key] : undefined;
}
