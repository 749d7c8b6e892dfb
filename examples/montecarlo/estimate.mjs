#!/usr/bin/env node
// Reads `pullman results` NDJSON (a file, or stdin) and prints the π estimate.
//
//   node examples/montecarlo/estimate.mjs results.ndjson
//   node_modules/.bin/pullman results job-1 | node examples/montecarlo/estimate.mjs
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

const input = process.argv[2] ? createReadStream(process.argv[2]) : process.stdin;
let inside = 0;
let total = 0;
let tasks = 0;
for await (const line of createInterface({ input, crlfDelay: Infinity })) {
  if (!line.trim()) continue;
  const r = JSON.parse(line);
  if (r.state !== 'succeeded' || !r.output) continue;
  inside += r.output.inside;
  total += r.output.total;
  tasks++;
}
if (total === 0) {
  console.error('no succeeded tasks with {"inside","total"} output in the input');
  process.exit(1);
}
const pi = (4 * inside) / total;
console.log(`π ≈ ${pi.toFixed(6)} from ${total.toLocaleString('en-US')} samples in ${tasks} tasks (error ${Math.abs(pi - Math.PI).toExponential(1)})`);
