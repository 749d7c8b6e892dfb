#!/usr/bin/env node
// Prints N Monte Carlo π TaskSpecs as NDJSON, one per line, for `pullman submit`.
//
//   node examples/montecarlo/make-tasks.mjs [TASKS=100] [SAMPLES=1000000] > pi.ndjson
//
// Each task runs pi.mjs with its own seed (so results are reproducible) by absolute path,
// because a task runs in a fresh scratch directory on the worker.
import { fileURLToPath } from 'node:url';

const tasks = Number(process.argv[2] ?? 100);
const samples = Number(process.argv[3] ?? 1_000_000);
const script = fileURLToPath(new URL('./pi.mjs', import.meta.url));
for (let seed = 1; seed <= tasks; seed++) {
  console.log(JSON.stringify({ key: `pi-${seed}`, command: ['node', script, String(samples), String(seed)], timeout: '5m' }));
}
