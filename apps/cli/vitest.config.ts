import { defineConfig } from 'vitest/config';

// The built binary against real manager and worker processes on a loaded 2-core CI machine:
// generous safety timeouts (never an assertion about speed), one file at a time.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
