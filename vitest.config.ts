import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // forks, not threads: sandbox hosts are tied to the process that started them (pdeathsig)
    pool: 'forks',
    // Real-host tests mostly wait (ssh, apt, the mirror, sleeps): two at once on two cores left a
    // tenth of the machine idle; a third uses it.
    maxWorkers: 3,
    minWorkers: 1,
    // Two real-host files run side by side: a heavy test can take twice its usual time.
    testTimeout: 300_000,
    hookTimeout: 300_000, // a first run builds the Debian rootfs (~1 min) in the global setup
    globalSetup: ['test/hosts/global-setup.ts'],
  },
});
