#!/usr/bin/env node
/**
 * Bundles the compiled worker (dist/main.js, written by `tsc -b`) and everything it imports into
 * ONE file, dist/pullman-worker.cjs, that runs under plain `node` 20 with no node_modules. This
 * is what a VM downloads at boot (GET /v1/worker/bundle on the manager) and what the systemd
 * unit runs as /opt/pullman/pullman-worker.cjs.
 *
 * - CommonJS: the Azure SDK and msal-node load some modules with require(); a CJS bundle needs
 *   no createRequire shims.
 * - Optional modules stay external, each loaded inside try/catch with a fallback: ws's native
 *   accelerators (bufferutil, utf-8-validate) and supports-color (debug, under the Azure SDK's
 *   proxy agents). On a bare VM they are absent and the fallbacks run.
 */
import { build } from 'esbuild';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, '..');
const outfile = join(pkgDir, 'dist', 'pullman-worker.cjs');
const { version } = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));

const result = await build({
  entryPoints: [join(pkgDir, 'dist', 'main.js')],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['bufferutil', 'utf-8-validate', 'supports-color'],
  // The entry's `#!/usr/bin/env node` line is kept by esbuild as the first line of the bundle.
  banner: { js: `// pullman-worker ${version}: single-file bundle (esbuild). Run with: node pullman-worker.cjs run` },
  legalComments: 'none',
  sourcemap: false,
  minify: false,
  logLevel: 'warning',
  metafile: true,
});
chmodSync(outfile, 0o755);
const inputs = Object.keys(result.metafile.inputs).length;
process.stdout.write(`bundled ${inputs} modules into ${outfile} (${Math.round(statSync(outfile).size / 1024)} KiB)\n`);
