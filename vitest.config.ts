import { defineConfig } from 'vitest/config';

// Unit and integration tests run in Node; browser tests (test/browser) drive Debian's chromium via playwright-core.
// 2-core machines: run files in a small fork pool and give model-building tests room.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
