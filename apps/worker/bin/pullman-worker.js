#!/usr/bin/env node
// The `pullman-worker` bin. A committed shim, not dist/main.js itself: npm links a bin only if its
// file exists at install time, and dist/ does not exist yet right after `npm ci`.
try {
  await import('../dist/main.js');
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/main.js')) {
    process.stderr.write('pullman-worker: not built yet: run `npm run build` in the repository first\n');
    process.exit(2);
  }
  throw err;
}
