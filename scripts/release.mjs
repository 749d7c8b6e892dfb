#!/usr/bin/env node
/**
 * Builds release/pullman-<version>.tgz: everything the manager's machine (the jumpbox) needs,
 * installed there with `npm ci --omit=dev` (deploy/install-manager.sh does it). Run after
 * `npm run build` (the root `npm run release` does both).
 *
 *   pullman-<version>/
 *     pullman-manager.mjs   the manager, bundled by esbuild (run: node pullman-manager.mjs)
 *     pullman-worker.cjs    the single-file worker, served to VMs at GET /v1/worker/bundle
 *     pullman.mjs           the `pullman` CLI, bundled (when apps/cli is built)
 *     package.json          only the manager's two dependencies that cannot be bundled:
 *     package-lock.json       better-sqlite3 (native) and @fastify/swagger-ui (serves its files)
 *     deploy/  docs/  README.md
 *
 * The lockfile is the subtree of the repository's package-lock.json that those two need, so the
 * jumpbox installs exactly the versions the test suite ran against, and building a release
 * needs no registry.
 */
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, posix, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const version = rootPkg.version;
const name = `pullman-${version}`;
// PULLMAN_RELEASE_DIR: where to write the tarball (the tests use a temp dir).
const outDir = process.env.PULLMAN_RELEASE_DIR ? resolvePath(process.env.PULLMAN_RELEASE_DIR) : join(root, 'release');
const stage = join(outDir, name);

/** Kept out of the bundle: they need their own files on disk. */
const EXTERNAL = ['better-sqlite3', '@fastify/swagger-ui'];

const need = (path, hint) => {
  if (!existsSync(path)) throw new Error(`${path} is missing: ${hint}`);
  return path;
};

rmSync(stage, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });

// 1. The manager as one ES module. CommonJS dependencies call require(), which an ES module
//    lacks: the banner gives the bundle a real one (resolving from the release directory).
await build({
  entryPoints: [need(join(root, 'apps/manager/dist/server.js'), 'run `npm run build` first')],
  outfile: join(stage, 'pullman-manager.mjs'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  external: [...EXTERNAL, 'bufferutil', 'utf-8-validate'],
  banner: { js: `// pullman-manager ${version}: bundled by esbuild\nimport { createRequire as __pullmanCreateRequire } from 'node:module';\nconst require = __pullmanCreateRequire(import.meta.url);` },
  legalComments: 'none',
  logLevel: 'warning',
});
chmodSync(join(stage, 'pullman-manager.mjs'), 0o755);

// 1b. The CLI, so `pullman workers` works on the jumpbox (install-manager.sh links it).
const cliEntry = join(root, 'apps/cli/dist/main.js');
if (existsSync(cliEntry)) {
  await build({
    entryPoints: [cliEntry],
    outfile: join(stage, 'pullman.mjs'),
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    banner: { js: `// pullman ${version} (CLI): bundled by esbuild\nimport { createRequire as __pullmanCreateRequire } from 'node:module';\nconst require = __pullmanCreateRequire(import.meta.url);` },
    legalComments: 'none',
    logLevel: 'warning',
  });
  chmodSync(join(stage, 'pullman.mjs'), 0o755);
}

// 2. The worker bundle, beside the manager (its default --worker-bundle there).
cpSync(need(join(root, 'apps/worker/dist/pullman-worker.cjs'), 'run `npm run build` first'), join(stage, 'pullman-worker.cjs'));

// 3. Deploy kit and documentation.
cpSync(join(root, 'deploy'), join(stage, 'deploy'), { recursive: true });
cpSync(join(root, 'docs'), join(stage, 'docs'), { recursive: true });
cpSync(join(root, 'README.md'), join(stage, 'README.md'));

// 4. package.json and the lockfile subtree for the external dependencies.
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
const packages = lock.packages;
const dependencies = {};
const picked = {};
/** Node's resolution inside the lockfile: from `from`, walk up the node_modules chain. */
const resolveIn = (from, dep) => {
  for (let dir = from; ; dir = posix.dirname(dir)) {
    const candidate = dir === '.' || dir === '' ? `node_modules/${dep}` : `${dir}/node_modules/${dep}`;
    if (packages[candidate] && !packages[candidate].link) return candidate;
    if (dir === '.' || dir === '') return null;
  }
};
const visit = (path, target) => {
  if (picked[target]) return;
  const entry = packages[path];
  const { dev, devOptional, peer, extraneous, ...kept } = entry;
  void dev, devOptional, peer, extraneous;
  picked[target] = kept;
  for (const dep of Object.keys({ ...(entry.dependencies ?? {}), ...(entry.optionalDependencies ?? {}) })) {
    const found = resolveIn(path, dep);
    if (!found) {
      if (entry.optionalDependencies?.[dep]) continue;
      throw new Error(`package-lock.json: cannot resolve ${dep} from ${path}`);
    }
    // Dependencies nested under a workspace folder are hoisted to the top in the release.
    const rel = found.startsWith('node_modules/') ? found : found.slice(found.indexOf('node_modules/'));
    visit(found, rel);
  }
};
for (const dep of EXTERNAL) {
  const found = resolveIn('apps/manager', dep) ?? resolveIn('packages/store', dep);
  if (!found) throw new Error(`package-lock.json has no ${dep}`);
  dependencies[dep] = packages[found].version;
  visit(found, `node_modules/${dep}`);
}
const pkg = {
  name: 'pullman-manager-release',
  version,
  private: true,
  description: 'Pullman manager release: run `npm ci --omit=dev`, then `node pullman-manager.mjs`',
  type: 'module',
  license: rootPkg.license,
  engines: rootPkg.engines,
  bin: { 'pullman-manager': './pullman-manager.mjs', ...(existsSync(join(stage, 'pullman.mjs')) ? { pullman: './pullman.mjs' } : {}) },
  scripts: { start: 'node pullman-manager.mjs' },
  dependencies,
  allowScripts: { 'better-sqlite3': true },
};
writeFileSync(join(stage, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
const sorted = Object.fromEntries(Object.keys(picked).sort().map((k) => [k, picked[k]]));
const releaseLock = {
  name: pkg.name,
  version,
  lockfileVersion: 3,
  requires: true,
  packages: { '': { name: pkg.name, version, license: pkg.license, dependencies, bin: pkg.bin, engines: pkg.engines }, ...sorted },
};
writeFileSync(join(stage, 'package-lock.json'), `${JSON.stringify(releaseLock, null, 2)}\n`);

// 5. The tarball.
const tgz = join(outDir, `${name}.tgz`);
rmSync(tgz, { force: true });
execFileSync('tar', ['-czf', tgz, '--owner=0', '--group=0', '-C', outDir, name]);
rmSync(stage, { recursive: true, force: true });
process.stdout.write(`${tgz}\n`);
