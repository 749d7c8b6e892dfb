import { defineConfig } from 'vitest/config';

// Timeouts are a safety net for a loaded 2-core CI machine, never an assertion about speed.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
