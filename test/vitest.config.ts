import { defineConfig } from 'vitest/config';

// Real processes on a loaded 2-core CI machine: generous safety timeouts, one file at a time.
export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**'],
    testTimeout: 180_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
