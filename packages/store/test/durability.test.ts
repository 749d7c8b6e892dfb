import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { assertConsistent, openStore, reopen } from './helpers.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/crash-writer.mjs', import.meta.url));
const BUILT = fileURLToPath(new URL('../dist/index.js', import.meta.url));
const WANT_ACKS = 1500;

interface Acked {
  submitted: Set<number>;
  claims: Map<number, string[]>; // task seq -> lease ids in order
  completed: Set<number>;
  count: number;
}

/** Runs the fixture until it has acknowledged `want` operations, SIGKILLs it, and returns every acknowledgement it printed. */
async function runAndKill(dbPath: string, want: number, checkpoint: string): Promise<Acked> {
  const child = spawn(process.execPath, [FIXTURE, dbPath, checkpoint], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const acked: Acked = { submitted: new Set(), claims: new Map(), completed: new Set(), count: 0 };
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const [word, op, taskId, leaseId] = line.split(' ');
    if (word === 'job') continue;
    expect(word, `unexpected line ${JSON.stringify(line)}`).toBe('ack');
    const seq = Number(taskId!.slice('task-'.length));
    if (op === 'submit') acked.submitted.add(seq);
    else if (op === 'claim') acked.claims.set(seq, [...(acked.claims.get(seq) ?? []), leaseId!]);
    else if (op === 'complete') acked.completed.add(seq);
    else throw new Error(`unexpected line ${JSON.stringify(line)}`);
    // Kill once enough has been acknowledged, but keep reading to the end: every line the
    // child printed before it died stands for a committed operation.
    if (++acked.count === want) child.kill('SIGKILL');
  }
  const { code, signal } = await exited;
  expect({ code, signal, stderr }).toEqual({ code: null, signal: 'SIGKILL', stderr: '' });
  return acked;
}

describe('durability', () => {
  // `background`: a thread checkpoints the WAL while the writer writes; the kill can land
  // in the middle of a checkpoint.
  it.each([
    { checkpoint: 'inline', want: WANT_ACKS },
    { checkpoint: 'background', want: 4 * WANT_ACKS },
  ])('keeps every acknowledged operation when the writer is killed with SIGKILL (checkpoint $checkpoint)', async ({ checkpoint, want }) => {
    expect(existsSync(BUILT), 'build the store first: npx tsc -b packages/store').toBe(true);
    // A fresh temp dir, closed and removed by the harness; the child writes to the same file.
    const { store: first, path } = openStore();
    first.close();

    const acked = await runAndKill(path, want, checkpoint);
    expect(acked.count).toBeGreaterThanOrEqual(want);
    expect(acked.submitted.size).toBeGreaterThan(100);
    expect(acked.claims.size).toBeGreaterThan(100);
    expect(acked.completed.size).toBeGreaterThan(10);
    expect(existsSync(`${path}-wal`), 'the kill left a WAL to recover').toBe(true);

    const store = reopen(path);
    try {
      expect(store.db.pragma('integrity_check', { simple: true })).toBe('ok');
      assertConsistent(store);

      for (const seq of acked.submitted) {
        const task = store.getTask(seq, false);
        expect(task, `acknowledged task-${seq} is missing`).not.toBeNull();
        expect(task!.jobId).toBe('job-1');
        expect(task!.spec.shell).toBe(`echo ${task!.key}`);
      }
      const inFlight: number[] = [];
      for (const [seq, leases] of acked.claims) {
        expect(acked.submitted.has(seq), `task-${seq} claimed before its submit was acknowledged`).toBe(true);
        expect(leases, `task-${seq} claimed twice`).toHaveLength(1);
        const row = store.db.prepare('SELECT state, lease_id, worker_id, attempts FROM tasks WHERE id = ?').get(seq);
        if (acked.completed.has(seq)) {
          expect(row, `task-${seq}`).toEqual({ state: 'succeeded', lease_id: null, worker_id: 'w-crash', attempts: 1 });
        } else if ((row as { state: string }).state === 'succeeded') {
          // Committed but killed before the ack was printed: allowed for the one completion in flight.
          inFlight.push(seq);
        } else {
          expect(row, `task-${seq}`).toEqual({ state: 'running', lease_id: leases[0], worker_id: 'w-crash', attempts: 1 });
        }
      }
      expect(inFlight.length, `completions committed without an ack: ${inFlight.join(', ')}`).toBeLessThanOrEqual(1);
      for (const seq of acked.completed) expect(acked.claims.has(seq)).toBe(true);

      // Counters match the task table, and at least what was acknowledged.
      const job = store.getJob(1)!;
      expect(job.counts.total).toBeGreaterThanOrEqual(acked.submitted.size);
      expect(job.counts.succeeded).toBeGreaterThanOrEqual(acked.completed.size);
      expect(job.counts.running + job.counts.succeeded).toBeGreaterThanOrEqual(acked.claims.size);

      // The recovered store still works.
      expect(store.submitTasks(1, [{ key: 'after-crash', shell: 'true', priority: 100 }])).toEqual({ accepted: 1, duplicates: 0, handed: [] });
      const [recovered] = store.claimTasks({ workerId: 'w-after', sessionId: 's' }, [], 1);
      expect(recovered!.key).toBe('after-crash');
      assertConsistent(store);
    } finally {
      store.close();
    }
  }, 60_000);
});
