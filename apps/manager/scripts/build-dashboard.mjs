// Builds the web dashboard into dist/dashboard: esbuild bundles src/dashboard/main.ts into one
// ES module (the TypeScript is type-checked by `tsc -p src/dashboard` before this runs), and the
// static files are copied as they are.
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const app = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(app, 'src/dashboard');
const out = join(app, 'dist/dashboard');
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [join(src, 'main.ts')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
});
for (const f of ['index.html', 'app.css', 'favicon.svg']) copyFileSync(join(src, f), join(out, f));
