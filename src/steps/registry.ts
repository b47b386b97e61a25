import { AsyncLocalStorage } from 'node:async_hooks';
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
import { localeStep } from './locale/locale.js';
import { systemdUnitStep } from './systemd_unit/systemd_unit.js';
import { gitStep } from './git/git.js';
import { firewallStep } from './firewall/firewall.js';
import { rebootStep } from './reboot/reboot.js';

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
  locale: localeStep,
  systemd_unit: systemdUnitStep,
  git: gitStep,
  firewall: firewallStep,
  reboot: rebootStep,
};

/** A built-in step type by its key, whatever custom types are in scope. */
export function builtinStepType(key: string): StepType | undefined {
  return Object.prototype.hasOwnProperty.call(stepTypes, key) ? stepTypes[key] : undefined;
}

/**
 * A recipe's custom types (its `types:` modules) are registered for one run only, as the async
 * context of that run: an apply, an undo or a recover calls `withStepTypes` once at its top, and
 * every `stepType()` below it — planning, journaling, rollback, undo summaries, a dozen places deep
 * in the engine — sees that recipe's types and no other's. Two recipes run in one process (a
 * library caller, the tests) each see their own, and a lookup outside any run sees the built-ins
 * alone. Passing a registry to every one of those places would thread it through most of the
 * engine's signatures for a value that never changes during a run.
 */
const scoped = new AsyncLocalStorage<Readonly<Record<string, StepType>>>();

/** Runs `fn` with `custom` types known to `stepType()` (beside the built-ins, which they cannot shadow). */
export function withStepTypes<T>(custom: Readonly<Record<string, StepType>> | undefined, fn: () => T): T {
  // Always a scope of its own, even empty: a run of a recipe without types started inside another's
  // run (a library caller) must not see the other's.
  return scoped.run(custom ?? {}, fn);
}

export function stepType(key: string): StepType | undefined {
  const custom = scoped.getStore();
  return builtinStepType(key) ?? (custom && Object.prototype.hasOwnProperty.call(custom, key) ? custom[key] : undefined);
}
