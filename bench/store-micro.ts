/**
 * The store's dispatch hot path without a network: what one group commit costs per task when
 * `workers` workers of `slots` slots each report their results and get their next tasks, as the
 * manager does it (settleReports, then claimBatch, in one transaction). Prints the cost per task
 * of the settle, the claim and the commit, and of each prepared statement. A tool for working on
 * packages/store/src/store.ts, not part of `npm run bench`; hot-loop figures, 3-5 x below what
 * the same statements cost on an idle manager.
 *
 *   npx tsx bench/store-micro.ts [workers=64] [slots=1] [tasks=50000] [backlog=0]
 *
 * `backlog` queues that many tasks ahead of the work that need a label no worker here has
 * (a GPU backlog with only CPU workers waiting): what a claim costs behind tasks it cannot take.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionReport, HelloMessage } from '@pullman/protocol';
import { TaskStore, type ReportItem } from '@pullman/store';
import { rmDir } from './lib.js';

const [workers = 64, slots = 1, tasks = 50_000, backlog = 0] = process.argv.slice(2).map(Number);
const dir = mkdtempSync(join(tmpdir(), 'pullman-store-micro-'));
const store = new TaskStore({ path: join(dir, 'pullman.db'), leaseTtlMs: 60_000, checkpoint: 'background' });

// Time every prepared statement (the store keeps them in its private `s`).
const spent = new Map<string, number>();
for (const [name, stmt] of Object.entries((store as unknown as { s: Record<string, Record<string, (...a: unknown[]) => unknown>> }).s)) {
  for (const method of ['all', 'run', 'get']) {
    if (typeof stmt[method] !== 'function') continue; // batch statements (batch.ts) have no get
    const fn = stmt[method]!.bind(stmt);
    stmt[method] = (...args: unknown[]) => {
      const t = performance.now();
      try {
        return fn(...args);
      } finally {
        spent.set(name, (spent.get(name) ?? 0) + performance.now() - t);
      }
    };
  }
}

if (backlog > 0) {
  const { job: held } = store.createJob({ name: 'backlog', open: true });
  const heldSeq = Number(held.id.slice('job-'.length));
  for (let i = 0; i < backlog; i += 1_000) store.submitTasks(heldSeq, Array.from({ length: Math.min(1_000, backlog - i) }, () => ({ command: ['true'], requires: ['gpu'], priority: 1 })));
}
const { job } = store.createJob({ open: true });
const jobSeq = Number(job.id.slice('job-'.length));
for (let i = 0; i < tasks; i += 1_000) store.submitTasks(jobSeq, Array.from({ length: Math.min(1_000, tasks - i) }, () => ({ command: ['true'] })));
store.sealJob(jobSeq);
const hello = (i: number): HelloMessage => ({ type: 'hello', protocol: 1, name: `w${i}`, hostname: 'bench', slots, labels: [], version: 'bench', vm: null, running: [] });
const sessions = Array.from({ length: workers }, (_, i) => ({ workerId: store.registerWorker(hello(i), `s${i}`), sessionId: `s${i}` }));
spent.clear(); // setup is not measured

const report: ExecutionReport = { exitCode: 0, signal: null, timedOut: false, cancelled: false, durationMs: 1, stdoutTail: '', stderrTail: '', output: null, error: null };
let held: ReportItem[] = [];
let done = 0;
let settleMs = 0;
let claimMs = 0;
let flushMs = 0;
const t0 = performance.now();
while (done < tasks) {
  const start = performance.now();
  store.transaction(() => {
    const a = performance.now();
    store.settleReports(held);
    done += held.length;
    const b = performance.now();
    const claimed = store.claimBatch(sessions.map((session) => ({ session, labels: [], freeSlots: slots, maxTasks: 64 })));
    claimMs += performance.now() - b;
    settleMs += b - a;
    held = claimed.flatMap((list, i) => list.map((t) => ({ workerId: sessions[i]!.workerId, lease: { taskSeq: Number(t.taskId.slice('task-'.length)), leaseId: t.leaseId }, report })));
  });
  flushMs += performance.now() - start;
  if (held.length === 0 && done < tasks) throw new Error(`nothing claimed after ${done} tasks`);
}
const seconds = (performance.now() - t0) / 1000;
store.close();
rmDir(dir);

const us = (ms: number) => `${((ms * 1000) / tasks).toFixed(2)} µs`;
console.log(`${workers} x ${slots}${backlog > 0 ? ` behind a backlog of ${backlog.toLocaleString('en-US')}` : ''}: ${Math.round(tasks / seconds).toLocaleString('en-US')} tasks/s; per task: settle ${us(settleMs)}, claim ${us(claimMs)}, commit ${us(flushMs - settleMs - claimMs)}`);
for (const [name, ms] of [...spent].sort((x, y) => y[1] - x[1])) if (ms > 0) console.log(`  ${name.padEnd(28)} ${us(ms)}`);
