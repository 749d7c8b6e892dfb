import { defineConfig } from 'vitest/config';

// `npm run chaos`: the large chaos scenarios (minutes, not seconds). Not part of `npm test`.
export default defineConfig({
  test: {
    include: ['chaos/**/*.chaos.ts'],
    testTimeout: 1_200_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
