import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // forks, not threads: sandbox hosts are tied to the process that started them (pdeathsig)
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000, // a first run builds the Debian rootfs (~1 min) in the global setup
    globalSetup: ['test/hosts/global-setup.ts'],
  },
});
