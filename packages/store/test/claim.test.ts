import { describe, expect, it } from 'vitest';
import type { TaskSpec } from '@pullman/protocol';
import type { ClaimRequest, ClaimedTask } from '../src/store.js';
import { QueueClasses } from '../src/queue-classes.js';
import { failed, jobSeq, lease, openStore, reopen, report, session, T0, taskStates, TTL } from './helpers.js';

const sh = (key: string, over: Partial<TaskSpec> = {}): TaskSpec => ({ key, shell: `echo ${key}`, ...over });

describe('claimTasks', () => {
  it('takes higher priority first, then FIFO within a priority', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b', { priority: 5 }), sh('c'), sh('d', { priority: 5 }), sh('e', { priority: -1 }), sh('f', { priority: 10 })] });
    const keys = store.claimTasks(session(), [], 100).map((t) => t.key);
    expect(keys).toEqual(['f', 'b', 'd', 'a', 'c', 'e']);
  });

  it('orders FIFO across jobs', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('j1-a'), sh('j1-b')] });
    store.createJob({ tasks: [sh('j2-a', { priority: 1 }), sh('j2-b')] });
    store.createJob({ open: true });
    expect(store.claimTasks(session(), [], 10).map((t) => t.key)).toEqual(['j2-a', 'j1-a', 'j1-b', 'j2-b']);
  });

  it('claims one at a time in order', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c', { priority: 1 })] });
    expect(store.claimTasks(session(), [], 1).map((t) => t.key)).toEqual(['c']);
    expect(store.claimTasks(session(), [], 1).map((t) => t.key)).toEqual(['a']);
    expect(store.claimTasks(session(), [], 1).map((t) => t.key)).toEqual(['b']);
    expect(store.claimTasks(session(), [], 1)).toEqual([]);
  });

  it('returns a well-formed assignment and marks the task running with a lease', () => {
    const { store, clock } = openStore();
    const { job } = store.createJob({ tasks: [sh('a', { env: { X: '1' } })] });
    clock.advance(500);
    const [a] = store.claimTasks(session('w-9', 's-9'), [], 1);
    expect(a).toMatchObject({ taskId: 'task-1', jobId: job.id, key: 'a', attempt: 1, spec: { key: 'a', shell: 'echo a', env: { X: '1' } } });
    expect(a!.leaseId).toMatch(/^[0-9a-f]{32}$/); // 128 random bits
    const task = store.getTask(1)!;
    expect(task).toMatchObject({ state: 'running', attempts: 1, workerId: 'w-9', startedAt: new Date(T0 + 500).toISOString(), finishedAt: null });
    expect(task.history).toEqual([{ attempt: 1, workerId: 'w-9', startedAt: new Date(T0 + 500).toISOString(), endedAt: null, outcome: 'running', exitCode: null, error: null }]);
    const row = store.db.prepare('SELECT lease_id, lease_expires_at, session_id FROM tasks WHERE id = 1').get();
    expect(row).toEqual({ lease_id: a!.leaseId, lease_expires_at: T0 + 500 + TTL, session_id: 's-9' });
    expect(store.getJob(1)!.counts).toMatchObject({ queued: 0, running: 1, total: 1 });
  });

  it('gives each claim a fresh lease id', () => {
    const { store } = openStore();
    store.createJob({ tasks: Array.from({ length: 20 }, (_, i) => sh(`k${i}`)) });
    const ids = store.claimTasks(session(), [], 20).map((t) => t.leaseId);
    expect(new Set(ids).size).toBe(20);
  });

  it('claims nothing with no free slots or an empty queue', () => {
    const { store } = openStore();
    expect(store.claimTasks(session(), [], 4)).toEqual([]);
    store.createJob({ tasks: [sh('a')] });
    expect(store.claimTasks(session(), [], 0)).toEqual([]);
    expect(store.claimTasks(session(), [], -1)).toEqual([]);
    expect(store.getTask(1)!.state).toBe('queued');
  });

  it('skips a task needing more slots than are free and takes lower-priority ones that fit', () => {
    const { store } = openStore();
    const { job } = store.createJob({ tasks: [sh('big', { slots: 4, priority: 10 }), sh('s1'), sh('s2'), sh('s3')] });
    const got = store.claimTasks(session(), [], 2);
    expect(got.map((t) => t.key)).toEqual(['s1', 's2']);
    expect(taskStates(store, jobSeq(job.id))).toEqual({ big: 'queued', s1: 'running', s2: 'running', s3: 'queued' });
    // A worker with 4 free slots gets the big one first.
    expect(store.claimTasks(session('w-2', 's-2'), [], 4).map((t) => t.key)).toEqual(['big']);
  });

  it('never claims more slots than are free', () => {
    const { store } = openStore();
    const slots = [3, 2, 2, 1, 4, 1, 1, 2, 3, 1, 5, 1];
    store.createJob({ tasks: slots.map((n, i) => sh(`k${i}`, { slots: n, priority: i % 3 })) });
    for (const free of [1, 2, 3, 4, 5, 7]) {
      const got = store.claimTasks(session(`w-${free}`, 's'), [], free);
      const used = got.reduce((sum, t) => sum + (t.spec.slots ?? 1), 0);
      expect(used).toBeLessThanOrEqual(free);
      // Every claimed task's slots come from the claimed spec and row.
      for (const t of got) expect(store.getTask(Number(t.taskId.slice(5)))!.slots).toBe(t.spec.slots ?? 1);
    }
  });

  it('fills the free slots exactly when small tasks are available', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a', { slots: 3 }), sh('b', { slots: 3 }), sh('c', { slots: 1 }), sh('d', { slots: 1 })] });
    const got = store.claimTasks(session(), [], 4);
    expect(got.map((t) => t.key)).toEqual(['a', 'c']);
  });

  it('respects maxTasks', () => {
    const { store } = openStore();
    store.createJob({ tasks: Array.from({ length: 10 }, (_, i) => sh(`k${i}`)) });
    expect(store.claimTasks(session(), [], 8, 3)).toHaveLength(3);
    expect(store.getJob(1)!.counts).toMatchObject({ queued: 7, running: 3 });
  });

  it('gives a task that requires a label only to a worker with that label', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('gpu', { requires: ['gpu'], priority: 1 }), sh('plain')] });
    expect(store.claimTasks(session('cpu-box', 's'), ['cpu', 'zone=1'], 4).map((t) => t.key)).toEqual(['plain']);
    expect(store.claimTasks(session('cpu-box', 's'), ['cpu'], 4)).toEqual([]);
    expect(store.claimTasks(session('gpu-box', 's'), ['gpu'], 4).map((t) => t.key)).toEqual(['gpu']);
  });

  it('needs every required label for a multi-label requirement', () => {
    const { store } = openStore();
    const { job } = store.createJob({ tasks: [sh('both', { requires: ['gpu', 'big-mem'] }), sh('dup', { requires: ['gpu', 'gpu'] })] });
    expect(store.claimTasks(session('a', 's'), ['gpu'], 4).map((t) => t.key)).toEqual(['dup']);
    expect(store.claimTasks(session('b', 's'), ['big-mem'], 4)).toEqual([]);
    expect(store.claimTasks(session('c', 's'), ['big-mem', 'x', 'gpu'], 4).map((t) => t.key)).toEqual(['both']);
    expect(taskStates(store, jobSeq(job.id))).toEqual({ both: 'running', dup: 'running' });
  });

  it('treats an empty requires list like none', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a', { requires: [] })] });
    expect(store.claimTasks(session(), [], 1).map((t) => t.key)).toEqual(['a']);
  });

  it('does not let a labelled task block unlabelled ones behind it', () => {
    const { store } = openStore();
    store.createJob({ tasks: [...Array.from({ length: 5 }, (_, i) => sh(`gpu${i}`, { requires: ['gpu'], priority: 9 })), sh('plain')] });
    expect(store.claimTasks(session(), [], 1).map((t) => t.key)).toEqual(['plain']);
  });

  it('updates counters of every job it claims from', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b')] });
    store.createJob({ tasks: [sh('c'), sh('d')] });
    expect(store.claimTasks(session(), [], 3)).toHaveLength(3);
    expect(store.getJob(1)!.counts).toMatchObject({ queued: 0, running: 2 });
    expect(store.getJob(2)!.counts).toMatchObject({ queued: 1, running: 1 });
    expect(store.taskCounts()).toEqual({ queued: 1, running: 3, succeeded: 0, failed: 0, cancelled: 0 });
    expect(store.hasQueued()).toBe(true);
    store.claimTasks(session(), [], 3);
    expect(store.hasQueued()).toBe(false);
  });
});

describe('claimBatch', () => {
  it('deals tasks round-robin in queue order across the workers of one batch', () => {
    const { store } = openStore();
    store.createJob({ tasks: ['a', 'b', 'c', 'd', 'e'].map((k) => sh(k)) });
    const [w1, w2] = store.claimBatch([
      { session: session('w-1', 's-1'), labels: [], freeSlots: 2 },
      { session: session('w-2', 's-2'), labels: [], freeSlots: 2 },
    ]);
    expect(w1!.map((t) => t.key)).toEqual(['a', 'c']);
    expect(w2!.map((t) => t.key)).toEqual(['b', 'd']);
    expect(store.getTask(1)!.workerId).toBe('w-1');
    expect(store.getTask(2)!.workerId).toBe('w-2');
    expect(store.getTask(5)!.state).toBe('queued');
    // The spec travels as the stored JSON text.
    expect(JSON.parse(w1![0]!.specJson)).toEqual({ key: 'a', shell: 'echo a' });
  });

  it('matches labels and slots per worker within one batch', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('gpu', { requires: ['gpu'] }), sh('wide', { slots: 4 }), sh('plain')] });
    const [cpu, gpu] = store.claimBatch([
      { session: session('w-cpu', 's-1'), labels: [], freeSlots: 1 },
      { session: session('w-gpu', 's-2'), labels: ['gpu'], freeSlots: 4 },
    ]);
    expect(cpu!.map((t) => t.key)).toEqual(['plain']);
    expect(gpu!.map((t) => t.key)).toEqual(['gpu']);
    expect(gpu!.reduce((n, t) => n + t.slots, 0)).toBeLessThanOrEqual(4);
    expect(store.getTask(2)!.state).toBe('queued'); // 'wide' needs 4 slots; the gpu worker had 3 left
  });

  it('finds a one-slot task for a one-slot worker behind a run of wide tasks its group-mate takes', () => {
    // The merged candidates used to be cut at the round's limit, which the wide run filled: the
    // one-slot worker got nothing and was then left idle as starved.
    const { store } = openStore();
    store.createJob({ tasks: [...Array.from({ length: 30 }, (_, i) => sh(`wide${i}`, { slots: 8 })), sh('narrow')] });
    const [s, t] = store.claimBatch([
      { session: session('w-s', 's-s'), labels: [], freeSlots: 1, maxTasks: 64 },
      { session: session('w-t', 's-t'), labels: [], freeSlots: 8, maxTasks: 64 },
    ]);
    expect(t!.map((x) => x.key)).toEqual(['wide0']);
    expect(s!.map((x) => x.key)).toEqual(['narrow']);
  });

  it('gives nothing to requests without free slots and respects maxTasks', () => {
    const { store } = openStore();
    store.createJob({ tasks: ['a', 'b', 'c'].map((k) => sh(k)) });
    const [none, capped] = store.claimBatch([
      { session: session('w-1', 's-1'), labels: [], freeSlots: 0 },
      { session: session('w-2', 's-2'), labels: [], freeSlots: 3, maxTasks: 2 },
    ]);
    expect(none).toEqual([]);
    expect(capped!.map((t) => t.key)).toEqual(['a', 'b']);
  });
});

describe('queue classes (tasks with the same labels and slots)', () => {
  const gpu = (key: string, over: Partial<TaskSpec> = {}) => sh(key, { requires: ['gpu'], ...over });

  it('walks every class a worker can take and merges them into queue order', () => {
    const { store } = openStore();
    store.createJob({
      tasks: [sh('plain-0'), gpu('gpu-5', { priority: 5 }), sh('wide-0', { slots: 2 }), sh('plain-5', { priority: 5 }), gpu('gpu-0'), sh('huge-9', { slots: 8, priority: 9 })],
    });
    expect(store.claimTasks(session('w-gpu', 's'), ['gpu'], 7).map((t) => t.key)).toEqual(['gpu-5', 'plain-5', 'plain-0', 'wide-0', 'gpu-0']);
    expect(store.getTask(6)!.state).toBe('queued'); // 8 slots: no class of it fits 7
  });

  it('finds the classes already queued when a store opens on an existing file', () => {
    const { store, path } = openStore();
    const classes: Array<Partial<TaskSpec>> = [{}, { slots: 2 }, { slots: 4 }, { requires: ['a'] }, { requires: ['a'], slots: 3 }, { requires: ['b'] }, { requires: ['a', 'b'], slots: 2 }];
    store.createJob({ tasks: classes.flatMap((c, i) => [sh(`${i}-x`, c), sh(`${i}-y`, { ...c, priority: 1 })]) });
    const reopened = reopen(path);
    try {
      const keys = reopened.claimTasks(session(), ['b', 'a'], 100).map((t) => t.key);
      expect(keys).toEqual([...classes.map((_, i) => `${i}-y`), ...classes.map((_, i) => `${i}-x`)]);
      expect(reopened.hasQueued()).toBe(false);
    } finally {
      reopened.close();
    }
  });

  it('takes a task from behind a backlog of classes the worker cannot take', () => {
    const { store } = openStore();
    store.createJob({ tasks: [...Array.from({ length: 300 }, (_, i) => gpu(`gpu${i}`, { priority: 9 })), ...Array.from({ length: 300 }, (_, i) => sh(`wide${i}`, { slots: 4 })), sh('plain')] });
    expect(store.claimTasks(session(), [], 1).map((t) => t.key)).toEqual(['plain']);
    expect(store.claimTasks(session(), [], 1)).toEqual([]);
    expect(store.getJob(1)!.counts).toMatchObject({ queued: 600, running: 1 });
    expect(store.claimTasks(session('w-gpu', 's'), ['gpu'], 2).map((t) => t.key)).toEqual(['gpu0', 'gpu1']);
  });

  it('forgets the classes a cancelled job leaves empty, and only those', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('plain')] });
    expect(store.claimTasks(session(), [], 1)).toHaveLength(1); // the class set is in use now
    const { job } = store.createJob({ tasks: [...Array.from({ length: 3 }, (_, i) => sh(`pinned${i}`, { requires: [`host=${i}`] })), sh('plain-2')] });
    store.createJob({ tasks: [sh('other', { requires: ['host=1'] })] });
    const classes = () => (store as unknown as { queueClasses: QueueClasses }).queueClasses;
    expect(classes().has('["host=0"]', 1)).toBe(true);
    store.cancelJob(jobSeq(job.id));
    expect(classes().has('["host=0"]', 1)).toBe(false);
    expect(classes().has('["host=1"]', 1)).toBe(true); // another job's task is still queued there
    expect(store.claimTasks(session('w-h1', 's'), ['host=1'], 1).map((t) => t.key)).toEqual(['other']);
  });

  it('reads the queue by index seeks only: no scan of it, no sort', () => {
    // Why a plan test: the point of the classes is what the claim does not read (a backlog of
    // 100,000 tasks no waiting worker can take cost ~5 ms per claim when it was scanned), and
    // a plan is what can be checked without timing anything.
    const { store } = openStore();
    const statements = (store as unknown as { s: Record<string, { source: string }> }).s;
    const plan = (name: string) => {
      const sql = statements[name]!.source;
      const params = Array.from({ length: (sql.match(/\?/g) ?? []).length }, () => 1);
      return (store.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as Array<{ detail: string }>).map((r) => r.detail).join('; ');
    };
    expect(plan('queueOfClass')).toBe('SEARCH tasks USING COVERING INDEX tasks_queue_class (requires=? AND slots=?)');
    expect(plan('nextQueueClassSlots')).toBe('SEARCH tasks USING COVERING INDEX tasks_queue_class (requires=? AND slots>?)');
    expect(plan('nextQueueClassRequires')).toBe('SEARCH tasks USING COVERING INDEX tasks_queue_class (requires>?)');
    // The first class: the first entry of the index (LIMIT 1 stops the scan there).
    expect(plan('firstQueueClass')).toBe('SCAN tasks USING COVERING INDEX tasks_queue_class');
  });

  it("reads a job's tasks by the job indexes, each state by its own where it has one", () => {
    // Why: since migration 7 the state is in no index key; a query that does not name its
    // state as a literal cannot use that state's partial index and walks the whole job.
    const { store } = openStore();
    const statements = (store as unknown as { s: Record<string, { source: string } | Record<string, { source: string }>> }).s;
    const plan = (sql: string) => {
      const params = Array.from({ length: (sql.match(/\?/g) ?? []).length }, () => 1);
      return (store.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as Array<{ detail: string }>).map((r) => r.detail).join('; ');
    };
    const source = (name: string, state?: string) => (state ? (statements[name] as Record<string, { source: string }>)[state]! : (statements[name] as { source: string })).source;
    expect(plan(source('listTasks'))).toBe('SEARCH tasks USING INDEX tasks_job (job_id=? AND id>?)');
    for (const state of ['queued', 'running', 'succeeded', 'failed', 'cancelled']) {
      expect(plan(source('listTasksIn', state))).toBe(`SEARCH tasks USING INDEX tasks_job_${state} (job_id=? AND id>?)`);
    }
    for (const state of ['succeeded', 'failed', 'cancelled']) {
      expect(plan(source('terminalOfJobIn', state))).toBe(`SEARCH tasks USING INDEX tasks_job_${state} (job_id=? AND id>?)`);
    }
    // Not a job's: the first entry of a queued-only index (LIMIT 1 stops the scan there).
    expect(plan(source('anyQueued'))).toMatch(/^SCAN tasks USING COVERING INDEX tasks_(job_queued|queue_class)$/);
    expect(plan(source('runningTasksOfJob'))).toBe('SEARCH tasks USING INDEX tasks_job_running (job_id=?)');
    expect(plan(source('cancelRunningOfJob'))).toBe('SEARCH tasks USING INDEX tasks_job_running (job_id=?)');
    expect(plan(source('cancelQueuedOfJob'))).toBe('SEARCH tasks USING INDEX tasks_job_queued (job_id=?)');
    expect(plan(source('queuedClassesOfJob'))).toMatch(/^SEARCH tasks USING INDEX tasks_job_queued \(job_id=\?\)/);
    expect(plan(source('requeueOfJobIn', 'failed'))).toBe('SEARCH tasks USING INDEX tasks_job_failed (job_id=?)');
    expect(plan(source('requeueOfJobIn', 'cancelled'))).toBe('SEARCH tasks USING INDEX tasks_job_cancelled (job_id=?)');
  });

  describe('a class a claim found empty is claimable again when a task re-enters the queue', () => {
    /** Claims the only gpu task, then claims again so the emptied class is dropped. */
    function drainGpuClass(retries = 0) {
      const h = openStore();
      h.store.createJob({ tasks: [gpu('g', { retries }), sh('plain')] });
      const [taken] = h.store.claimTasks(session('w-gpu', 's-1'), ['gpu'], 1);
      expect(taken!.key).toBe('g');
      expect(h.store.claimTasks(session('w-gpu2', 's-2'), ['gpu'], 1).map((t) => t.key)).toEqual(['plain']);
      expect(h.store.claimTasks(session('w-gpu2', 's-2'), ['gpu'], 1)).toEqual([]);
      return { ...h, taken: taken! };
    }
    const claimGpu = (store: ReturnType<typeof openStore>['store']) => store.claimTasks(session('w-gpu3', 's-3'), ['gpu'], 1).map((t) => t.key);

    it('after a failure with retries left', () => {
      const { store, taken } = drainGpuClass(1);
      expect(store.reportExecution('w-gpu', lease(taken), failed())).toMatchObject({ taskState: 'queued' });
      expect(claimGpu(store)).toEqual(['g']);
    });

    it('after a release', () => {
      const { store, taken } = drainGpuClass();
      expect(store.releaseTask('w-gpu', lease(taken), 'drain')).toMatchObject({ taskState: 'queued' });
      expect(claimGpu(store)).toEqual(['g']);
    });

    it('after its lease expired', () => {
      const { store, clock } = drainGpuClass();
      clock.advance(TTL + 1);
      expect(store.requeueExpired()).toEqual({ requeued: 2, failed: 0 });
      expect(claimGpu(store)).toEqual(['g']);
    });

    it('after its worker was declared gone', () => {
      const { store } = drainGpuClass();
      expect(store.requeueWorkerTasks('w-gpu', 'gone')).toEqual({ requeued: 1, failed: 0 });
      expect(claimGpu(store)).toEqual(['g']);
    });

    it('after a retry of the failed tasks of its job', () => {
      const { store, taken } = drainGpuClass();
      expect(store.reportExecution('w-gpu', lease(taken), failed())).toMatchObject({ taskState: 'failed' });
      expect(store.retryJob(1)).toBe(1);
      expect(claimGpu(store)).toEqual(['g']);
    });

    it('after a rollback put back the task whose claim emptied it', () => {
      const { store } = openStore();
      store.createJob({ tasks: [gpu('g')] });
      expect(() =>
        store.transaction(() => {
          expect(claimGpu(store)).toEqual(['g']);
          expect(claimGpu(store)).toEqual([]); // the class is found empty here, and dropped
          throw new Error('the commit fails');
        }),
      ).toThrow('the commit fails');
      expect(store.getTask(1)!.state).toBe('queued');
      expect(claimGpu(store)).toEqual(['g']);
    });
  });
});

describe('QueueClasses', () => {
  it('offers a worker only the classes whose labels it all has and whose slots fit', () => {
    const classes = new QueueClasses();
    const all: Array<[string | null, number]> = [[null, 1], [null, 4], ['["gpu"]', 1], ['["gpu","big-mem"]', 2], ['["big-mem","gpu"]', 1], ['["host=a"]', 1], ['["host=b"]', 1]];
    for (const [requires, slots] of all) classes.add(requires, slots);
    classes.add(null, 1); // again: no second entry
    expect(classes.size).toBe(all.length);
    const takeable = (labels: string[], free: number) => classes.takeable(new Set(labels), free).map((c) => `${c.slots}:${c.requires}`).sort();
    expect(takeable([], 8)).toEqual(['1:null', '4:null']);
    expect(takeable([], 1)).toEqual(['1:null']);
    expect(takeable(['gpu'], 8)).toEqual(['1:["gpu"]', '1:null', '4:null']);
    expect(takeable(['big-mem', 'gpu', 'host=b'], 2)).toEqual(['1:["big-mem","gpu"]', '1:["gpu"]', '1:["host=b"]', '1:null', '2:["gpu","big-mem"]']);
    classes.delete('["host=b"]', 1);
    expect(classes.has('["host=b"]', 1)).toBe(false);
    expect(classes.has('["host=a"]', 1)).toBe(true);
    expect(takeable(['host=b'], 1)).toEqual(['1:null']);
    expect(classes.size).toBe(all.length - 1);
  });
});

describe('QueueClasses filing', () => {
  it('files a class under its least crowded label, so a common label does not gather every class', () => {
    const classes = new QueueClasses();
    for (let h = 0; h < 50; h++) classes.add(JSON.stringify(['linux', `host=${h}`]), 1);
    const filed = (labels: string[]) => classes.takeable(new Set(labels), 1);
    // A worker with only the common label looks at (at most) the one class filed under it,
    // and can take none of them: every class also needs a host.
    expect(filed(['linux'])).toEqual([]);
    expect(filed(['linux', 'host=7']).map((c) => c.requires)).toEqual(['["linux","host=7"]']);
    expect(filed(['linux', 'host=0']).map((c) => c.requires)).toEqual(['["linux","host=0"]']);
    const everything = filed(['linux', ...Array.from({ length: 50 }, (_, h) => `host=${h}`)]);
    expect(everything).toHaveLength(50);
    expect(everything.filter((c) => c.filedUnder === 'linux').length).toBeLessThanOrEqual(1);
    const c7 = filed(['linux', 'host=7'])[0]!;
    expect(c7.filedUnder).toBe('host=7');
    classes.delete(c7.requires, c7.slots);
    expect(filed(['linux', 'host=7'])).toEqual([]);
    expect(classes.size).toBe(49);
  });
});

describe('a submission hands its tasks to waiting workers (handoff)', () => {
  const waiting = (workerId: string, over: Partial<ClaimRequest> = {}): ClaimRequest => ({ session: session(workerId, `s-${workerId}`), labels: [], freeSlots: 1, ...over });
  const keys = (tasks: readonly ClaimedTask[] | null | undefined) => tasks?.map((t) => t.key) ?? null;

  it('inserts a task a waiting worker can take already leased to it, as a claim would have', () => {
    const { store, clock } = openStore();
    const { job } = store.createJob({ open: true });
    clock.advance(250);
    const out = store.submitTasks(jobSeq(job.id), [sh('a', { env: { X: '1' } })], [waiting('w-1')]);
    expect(out.accepted).toBe(1);
    expect(out.duplicates).toBe(0);
    const [a] = out.handed[0]!;
    expect(a).toMatchObject({ taskId: 'task-1', jobId: job.id, key: 'a', attempt: 1, slots: 1, queuedAt: T0 + 250 });
    expect(a!.leaseId).toMatch(/^[0-9a-f]{32}$/);
    expect(JSON.parse(a!.specJson)).toEqual({ key: 'a', shell: 'echo a', env: { X: '1' } });
    expect(store.getTask(1)).toMatchObject({ state: 'running', workerId: 'w-1', attempts: 1, startedAt: new Date(T0 + 250).toISOString() });
    expect(store.db.prepare('SELECT session_id, lease_id, lease_expires_at FROM tasks WHERE id = 1').get()).toEqual({ session_id: 's-w-1', lease_id: a!.leaseId, lease_expires_at: T0 + 250 + TTL });
    expect(store.getJob(jobSeq(job.id))!.counts).toMatchObject({ total: 1, queued: 0, running: 1 });
    // The lease is a lease like any other: the worker's result settles it.
    expect(store.settleReports([{ workerId: 'w-1', lease: { taskSeq: 1, leaseId: a!.leaseId }, report: report() }])[0]!.status).toBe('recorded');
    expect(store.getJob(jobSeq(job.id))!.counts).toMatchObject({ running: 0, succeeded: 1 });
    expect(store.hasQueued()).toBe(false);
  });

  it('deals as a claim does: queue order, each label set in turn, within slots and maxTasks; the rest is queued', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true });
    const out = store.submitTasks(jobSeq(job.id), [
      sh('low', { priority: -1 }), sh('a'), sh('gpu', { requires: ['gpu'] }), sh('wide', { slots: 2 }), sh('urgent', { priority: 9 }), sh('b'), sh('c'),
    ], [waiting('w-1', { freeSlots: 2 }), waiting('w-2', { labels: ['gpu'], freeSlots: 4, maxTasks: 2 })]);
    expect(out.accepted).toBe(7);
    expect(keys(out.handed[0])).toEqual(['urgent', 'a']);
    expect(keys(out.handed[1])).toEqual(['gpu', 'wide']); // 3 of its 4 slots, its 2 tasks
    expect(taskStates(store, jobSeq(job.id))).toEqual({ low: 'queued', a: 'running', gpu: 'running', wide: 'running', urgent: 'running', b: 'queued', c: 'queued' });
    expect(store.getJob(jobSeq(job.id))!.counts).toMatchObject({ queued: 3, running: 4 });
    // Ids follow the submission, whoever got the tasks; the queue keeps its order.
    expect(store.claimTasks(session('w-3', 's-3'), [], 10).map((t) => t.key)).toEqual(['b', 'c', 'low']);
  });

  it('hands nothing to a worker that a queued task fits: it claims that one first', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('old')] });
    const { job } = store.createJob({ open: true });
    const out = store.submitTasks(jobSeq(job.id), [sh('new', { priority: 5 })], [waiting('w-1')]);
    expect(out.handed).toEqual([null]);
    expect(taskStates(store, jobSeq(job.id))).toEqual({ new: 'queued' });
  });

  it('hands new work past a queue that holds only tasks the worker cannot take', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('gpu-1', { requires: ['gpu'] }), sh('wide', { slots: 8 })] });
    const { job } = store.createJob({ open: true });
    const out = store.submitTasks(jobSeq(job.id), [sh('cpu')], [waiting('w-1', { freeSlots: 4 })]);
    expect(keys(out.handed[0])).toEqual(['cpu']);
  });

  it('hands nothing for a duplicate key, and nothing to workers without free slots', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true, tasks: [sh('a')] });
    store.claimTasks(session('w-0', 's-0'), [], 1); // 'a' is running: the queue is empty
    expect(store.claimTasks(session('w-0', 's-0'), [], 1)).toEqual([]); // and a claim has seen it empty
    const out = store.submitTasks(jobSeq(job.id), [sh('a'), sh('b')], [waiting('w-1'), waiting('w-2', { freeSlots: 0 })]);
    expect(out).toMatchObject({ accepted: 1, duplicates: 1 });
    // 'a' was dealt to w-1 and turned out a duplicate; 'b' went to the queue, for a claim.
    expect(out.handed).toEqual([[], null]);
    expect(taskStates(store, jobSeq(job.id))).toEqual({ a: 'running', b: 'queued' });
    expect(store.getTask(1)!.workerId).toBe('w-0');
  });

  it('deals round-robin across the workers of one label set', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true });
    const out = store.submitTasks(jobSeq(job.id), ['a', 'b', 'c', 'd', 'e'].map((k) => sh(k)), [waiting('w-1', { freeSlots: 2 }), waiting('w-2', { freeSlots: 2 })]);
    expect(keys(out.handed[0])).toEqual(['a', 'c']);
    expect(keys(out.handed[1])).toEqual(['b', 'd']);
    expect(taskStates(store, jobSeq(job.id))).toMatchObject({ e: 'queued' });
  });

  it('goes on dealing other classes after one finds no worker with room for it', () => {
    const { store } = openStore();
    const { job } = store.createJob({ open: true });
    const out = store.submitTasks(jobSeq(job.id), [sh('wide', { slots: 2 }), sh('gpu', { requires: ['gpu'] }), sh('wide2', { slots: 2 }), sh('a'), sh('b')], [waiting('w-1', { freeSlots: 1 }), waiting('w-2', { freeSlots: 1 })]);
    expect(keys(out.handed[0])).toEqual(['a']);
    expect(keys(out.handed[1])).toEqual(['b']);
    expect(taskStates(store, jobSeq(job.id))).toEqual({ wide: 'queued', gpu: 'queued', wide2: 'queued', a: 'running', b: 'running' });
  });

  it('hands the tasks of a job created with them, and counts them running', () => {
    const { store } = openStore();
    const out = store.createJob({ tasks: [sh('a'), sh('b')] }, [waiting('w-1')]);
    expect(keys(out.handed[0])).toEqual(['a']);
    expect(out.job.counts).toMatchObject({ total: 2, queued: 1, running: 1 });
    expect(out.job.state).toBe('active');
  });
});
