#!/usr/bin/env node
// The `pullman-manager` bin. A committed shim, not dist/server.js itself: npm links a bin only if its
// file exists at install time, and dist/ does not exist yet right after `npm ci`.
try {
  await import('../dist/server.js');
} catch (err) {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/server.js')) {
    process.stderr.write('pullman-manager: not built yet: run `npm run build` in the repository first\n');
    process.exit(2);
  }
  throw err;
}
