#!/usr/bin/env node
// One Monte Carlo task: samples SAMPLES random points in the unit square and counts those inside
// the quarter circle. Writes {"inside":N,"total":SAMPLES,"seed":SEED} to $PULLMAN_OUTPUT (which
// becomes the task's result.output), or to stdout when run by hand.
//
//   node pi.mjs [SAMPLES=1000000] [SEED=1]
//
// The generator is seeded (mulberry32), so a task gives the same counts on every run and every
// machine: a retried or resubmitted task reproduces its result exactly.
import { writeFileSync } from 'node:fs';

const samples = Number(process.argv[2] ?? 1_000_000);
const seed = Number(process.argv[3] ?? 1);
if (!Number.isSafeInteger(samples) || samples <= 0 || !Number.isSafeInteger(seed)) {
  console.error('usage: node pi.mjs [SAMPLES] [SEED]  (positive integer samples, integer seed)');
  process.exit(2);
}

function mulberry32(a) {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = mulberry32(seed);
let inside = 0;
for (let i = 0; i < samples; i++) {
  const x = random();
  const y = random();
  if (x * x + y * y <= 1) inside++;
}

const result = JSON.stringify({ inside, total: samples, seed });
if (process.env.PULLMAN_OUTPUT) writeFileSync(process.env.PULLMAN_OUTPUT, result);
else console.log(result);
