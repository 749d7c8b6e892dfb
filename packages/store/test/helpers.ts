import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect } from 'vitest';
import { parseJobId, parseTaskId, type ExecutionReport, type HelloMessage, type TaskAssignment, type TaskState } from '@pullman/protocol';
import { TaskStore, type LeaseRef, type SessionRef } from '../src/index.js';
import type { QueueClasses } from '../src/queue-classes.js';

export const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
export const TTL = 30_000;

export interface FakeClock {
  now(): number;
  set(ms: number): void;
  advance(ms: number): void;
}

export function fakeClock(start = T0): FakeClock {
  let t = start;
  return { now: () => t, set: (ms) => { t = ms; }, advance: (ms) => { t += ms; } };
}

export interface Harness {
  store: TaskStore;
  clock: FakeClock;
  dir: string;
  path: string;
}

const open: Harness[] = [];

afterEach(() => {
  for (const h of open.splice(0)) {
    h.store.close();
    rmSync(h.dir, { recursive: true, force: true });
  }
});

/**
 * A store on a real SQLite file in a fresh temp dir, closed and removed after the test.
 * Every public method of the returned store checks the job counters against the task table
 * (and a few other invariants) after it returns, so each test checks them after every operation.
 */
export function openStore(leaseTtlMs = TTL): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'pullman-store-test-'));
  const path = join(dir, 'pullman.db');
  const clock = fakeClock();
  const raw = new TaskStore({ path, leaseTtlMs, clock });
  const store = checked(raw);
  const h = { store, clock, dir, path };
  open.push({ ...h, store: raw });
  return h;
}

/** Opens another store on an existing file (not closed automatically). */
export function reopen(path: string, clock: FakeClock = fakeClock()): TaskStore {
  return new TaskStore({ path, leaseTtlMs: TTL, clock });
}

const UNCHECKED = new Set(['close', 'transaction', 'db']);

function checked(store: TaskStore): TaskStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function' || typeof prop !== 'string' || UNCHECKED.has(prop)) return value;
      return (...args: unknown[]) => {
        const out = (value as (...a: unknown[]) => unknown).apply(target, args);
        assertConsistent(target);
        return out;
      };
    },
  });
}

type Counts = Record<TaskState, number>;
const zero = (): Counts => ({ queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 });

/** Job counters equal a count of the task table; leases, attempts and job states agree with task states. */
export function assertConsistent(store: TaskStore): void {
  const db = store.db;
  const jobs = db.prepare('SELECT * FROM jobs ORDER BY id').all() as Array<Record<string, number | string | null>>;
  const actual = new Map<number, Counts>();
  for (const r of db.prepare('SELECT job_id, state, count(*) AS n FROM tasks GROUP BY job_id, state').all() as Array<{ job_id: number; state: TaskState; n: number }>) {
    const c = actual.get(r.job_id) ?? zero();
    c[r.state] = r.n;
    actual.set(r.job_id, c);
  }
  for (const j of jobs) {
    const id = j.id as number;
    const want = actual.get(id) ?? zero();
    const job = store.getJob(id)!;
    const { total, ...counts } = job.counts;
    expect(counts, `counters of job-${id}`).toEqual(want);
    expect(total).toBe(Object.values(want).reduce((a, b) => a + b, 0));
    if (job.state !== 'active') {
      expect(want.queued + want.running, `job-${id} is ${job.state} with live tasks`).toBe(0);
      expect(job.finishedAt).not.toBeNull();
    } else {
      expect(job.finishedAt).toBeNull();
      if (job.sealed) expect(want.queued + want.running, `job-${id} is sealed and active with no live tasks`).toBeGreaterThan(0);
    }
  }
  // Leases exist exactly on running tasks.
  const badLeases = db.prepare(`
    SELECT id, state, lease_id FROM tasks
    WHERE (state = 'running') <> (lease_id IS NOT NULL AND lease_expires_at IS NOT NULL AND session_id IS NOT NULL)`).all();
  expect(badLeases, 'tasks whose lease does not match their state').toEqual([]);
  // Attempt rows are written when attempts end: none is open, and a task has one per attempt
  // but the one it is running or that succeeded (which is the task row's own), and none says
  // succeeded.
  const badAttempts = db.prepare(`
    SELECT t.id, t.state, t.attempts, (SELECT count(*) FROM attempts a WHERE a.task_id = t.id) AS n_rows
    FROM tasks t
    WHERE (SELECT count(*) FROM attempts a WHERE a.task_id = t.id) <> t.attempts - (t.state IN ('running', 'succeeded'))
       OR EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.id AND (a.outcome IN ('running', 'succeeded') OR a.ended_at IS NULL))
       OR EXISTS (SELECT 1 FROM attempts a WHERE a.task_id = t.id AND a.attempt > t.attempts)`).all();
  expect(badAttempts, 'tasks whose attempts disagree with their state').toEqual([]);
  // The claim walks only the classes in its set (TaskStore.queueClasses, private): the set must
  // hold every class with queued tasks, or be unknown (null, read again at the next claim).
  // A class missing from it would never be claimed again.
  const classes = (store as unknown as { queueClasses: QueueClasses | null }).queueClasses;
  if (classes) {
    const queued = db.prepare(`SELECT DISTINCT slots, requires FROM tasks WHERE state = 'queued'`).all() as Array<{ slots: number; requires: string | null }>;
    expect(queued.filter((c) => !classes.has(c.requires, c.slots)), 'queued classes no claim would walk').toEqual([]);
  }
}

export function taskStates(store: TaskStore, jobSeq: number): Record<string, TaskState> {
  const out: Record<string, TaskState> = {};
  for (const r of store.db.prepare('SELECT id, key, state FROM tasks WHERE job_id = ? ORDER BY id').all(jobSeq) as Array<{ id: number; key: string | null; state: TaskState }>) {
    out[r.key ?? `task-${r.id}`] = r.state;
  }
  return out;
}

export const session = (workerId = 'w-1', sessionId = 's-1'): SessionRef => ({ workerId, sessionId });

export const jobSeq = (jobId: string): number => parseJobId(jobId)!;
export const taskSeq = (taskId: string): number => parseTaskId(taskId)!;
export const lease = (a: TaskAssignment): LeaseRef => ({ taskSeq: taskSeq(a.taskId), leaseId: a.leaseId });

export function report(over: Partial<ExecutionReport> = {}): ExecutionReport {
  return {
    exitCode: 0,
    signal: null,
    timedOut: false,
    cancelled: false,
    durationMs: 100,
    stdoutTail: 'out',
    stderrTail: '',
    output: null,
    error: null,
    ...over,
  };
}

export const failed = (exitCode = 1): ExecutionReport => report({ exitCode, stderrTail: 'boom' });

export function hello(over: Partial<HelloMessage> = {}): HelloMessage {
  return {
    type: 'hello',
    protocol: 1,
    name: 'vm-0',
    hostname: 'vm-0.local',
    slots: 4,
    labels: [],
    version: '0.1.0',
    vm: null,
    running: [],
    ...over,
  };
}

/** A snapshot of everything a stale report must not change. */
export function snapshot(store: TaskStore): unknown {
  const db = store.db;
  return {
    tasks: db.prepare('SELECT * FROM tasks ORDER BY id').all(),
    jobs: db.prepare('SELECT * FROM jobs ORDER BY id').all(),
    attempts: db.prepare('SELECT * FROM attempts ORDER BY task_id, attempt').all(),
    workers: db.prepare('SELECT * FROM workers ORDER BY id').all(),
  };
}
