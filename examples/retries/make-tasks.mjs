#!/usr/bin/env node
// Prints the TaskSpecs of the retries-and-timeouts example as NDJSON (see README.md).
//   node examples/retries/make-tasks.mjs > /tmp/retries.ndjson
import { fileURLToPath } from 'node:url';

const flaky = fileURLToPath(new URL('./flaky.sh', import.meta.url));
const tasks = [];
// Transient failures: 50% fail each attempt; 3 retries make 4 attempts, so most succeed.
for (let i = 1; i <= 20; i++) tasks.push({ key: `flaky-${i}`, command: ['sh', flaky, '50'], retries: 3 });
// A task that hangs: killed (with its whole process group) after 2s, retried once, then failed.
tasks.push({ key: 'hangs', shell: 'echo starting; sleep 600', timeout: '2s', retries: 1 });
// A task that is slow but within its timeout.
tasks.push({ key: 'slow-but-ok', shell: 'sleep 1; echo done', timeout: '30s' });
for (const t of tasks) console.log(JSON.stringify(t));
