import { describe, expect, it } from 'vitest';
import type { TaskSpec } from '@pullman/protocol';
import { MAX_LOSSES } from '../src/index.js';
import { failed, lease, openStore, report, session, snapshot, T0, TTL } from './helpers.js';

const sh = (key: string, over: Partial<TaskSpec> = {}): TaskSpec => ({ key, shell: 'true', ...over });

describe('fencing', () => {
  it('requeues a task whose lease expired, without spending a retry', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a', { retries: 0 })] });
    const [a] = store.claimTasks(session(), [], 1);
    clock.advance(TTL - 1);
    expect(store.requeueExpired()).toEqual({ requeued: 0, failed: 0 });
    expect(store.getTask(1)!.state).toBe('running');
    clock.advance(1);
    expect(store.requeueExpired()).toEqual({ requeued: 1, failed: 0 });
    const task = store.getTask(1)!;
    expect(task.state).toBe('queued');
    expect(task.history).toEqual([
      { attempt: 1, workerId: 'w-1', startedAt: new Date(T0).toISOString(), endedAt: new Date(T0 + TTL).toISOString(), outcome: 'lost', exitCode: null, error: { code: 'WORKER_LOST', message: expect.stringContaining('w-1') } },
    ]);
    const row = store.db.prepare('SELECT failures, losses, lease_id FROM tasks WHERE id = 1').get();
    expect(row).toEqual({ failures: 0, losses: 1, lease_id: null });
    // Another worker picks it up as attempt 2 with a new lease.
    const [again] = store.claimTasks(session('w-2', 's-2'), [], 1);
    expect(again).toMatchObject({ taskId: a!.taskId, attempt: 2 });
    expect(again!.leaseId).not.toBe(a!.leaseId);
  });

  it('answers stale to every report on the old lease and changes nothing', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a', { retries: 3 })] });
    const [old] = store.claimTasks(session(), [], 1);
    clock.advance(TTL);
    store.requeueExpired();
    const [current] = store.claimTasks(session('w-1', 's-2'), [], 1);

    const before = snapshot(store);
    const job = store.getJob(1);
    expect(store.completeTask('w-1', lease(old!), report())).toEqual({ status: 'stale' });
    expect(store.failTask('w-1', lease(old!), failed())).toEqual({ status: 'stale' });
    expect(store.reportExecution('w-1', lease(old!), report())).toEqual({ status: 'stale' });
    expect(store.releaseTask('w-1', lease(old!), 'drain')).toEqual({ status: 'stale' });
    expect(snapshot(store)).toEqual(before);
    expect(store.getJob(1)).toEqual(job);
    expect(store.getTask(1)!.history!.map((h) => h.outcome)).toEqual(['lost', 'running']);

    // The current lease still works.
    expect(store.completeTask('w-1', lease(current!), report())).toMatchObject({ status: 'recorded', taskState: 'succeeded' });
    // And once recorded, a second report on the same lease is stale too (exactly once).
    const after = snapshot(store);
    expect(store.completeTask('w-1', lease(current!), report())).toEqual({ status: 'stale' });
    expect(store.failTask('w-1', lease(current!), failed())).toEqual({ status: 'stale' });
    expect(snapshot(store)).toEqual(after);
  });

  it('answers stale to a queued task reported on its expired lease', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [old] = store.claimTasks(session(), [], 1);
    clock.advance(TTL + 1);
    store.requeueExpired();
    const before = snapshot(store);
    expect(store.completeTask('w-1', lease(old!), report())).toEqual({ status: 'stale' });
    expect(store.failTask('w-1', lease(old!), failed())).toEqual({ status: 'stale' });
    expect(store.releaseTask('w-1', lease(old!), 'shutdown')).toEqual({ status: 'stale' });
    expect(snapshot(store)).toEqual(before);
    expect(store.getTask(1)!.state).toBe('queued');
  });

  it('answers stale to a completion from another worker', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const w1 = store.registerWorker(helloFor('first'), 's-1');
    const w2 = store.registerWorker(helloFor('second'), 's-2');
    const [a] = store.claimTasks(session(w1, 's-1'), [], 1);
    const before = snapshot(store);
    expect(store.completeTask(w2, lease(a!), report())).toEqual({ status: 'stale' });
    expect(store.failTask(w2, lease(a!), failed())).toEqual({ status: 'stale' });
    expect(store.releaseTask(w2, lease(a!), 'drain')).toEqual({ status: 'stale' });
    expect(snapshot(store)).toEqual(before);
    expect(store.getWorker(w2)).toMatchObject({ tasksSucceeded: 0, tasksFailed: 0 });
    expect(store.completeTask(w1, lease(a!), report())).toMatchObject({ status: 'recorded' });
    expect(store.getWorker(w1)).toMatchObject({ tasksSucceeded: 1, tasksFailed: 0 });
  });

  it('answers stale to a wrong lease id or task id', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b')] });
    const [a, b] = store.claimTasks(session(), [], 2);
    const before = snapshot(store);
    expect(store.completeTask('w-1', { taskSeq: 1, leaseId: b!.leaseId }, report())).toEqual({ status: 'stale' });
    expect(store.completeTask('w-1', { taskSeq: 1, leaseId: 'nonsense' }, report())).toEqual({ status: 'stale' });
    expect(store.completeTask('w-1', { taskSeq: 99, leaseId: a!.leaseId }, report())).toEqual({ status: 'stale' });
    expect(snapshot(store)).toEqual(before);
  });

  it('accepts a report from the same worker after it reconnected with a new session', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session('w-1', 's-old'), [], 1);
    expect(store.completeTask('w-1', lease(a!), report())).toMatchObject({ status: 'recorded', taskState: 'succeeded', jobId: 'job-1', requeued: false });
  });
});

describe('extendLeases', () => {
  it('keeps a lease alive past the original TTL', () => {
    const { store, clock } = openStore();
    const w = store.registerWorker(helloFor('first'), 's-1');
    store.createJob({ tasks: [sh('a'), sh('b')] });
    const [a] = store.claimTasks(session(w, 's-1'), [], 1);
    for (let i = 0; i < 10; i++) {
      clock.advance(TTL / 2);
      expect(store.extendLeases(session(w, 's-1'))).toBe(1);
      expect(store.requeueExpired()).toEqual({ requeued: 0, failed: 0 });
    }
    expect(clock.now() - T0).toBeGreaterThan(TTL * 4);
    expect(store.getTask(1)!.state).toBe('running');
    expect(store.getWorker(w)!.lastHeartbeatAt).toBe(new Date(clock.now()).toISOString());
    expect(store.completeTask(w, lease(a!), report())).toMatchObject({ status: 'recorded' });
  });

  it('extends only the leases of that worker session', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c')] });
    store.claimTasks(session('w-1', 's-1'), [], 1);
    store.claimTasks(session('w-1', 's-0'), [], 1); // an older session of the same worker
    store.claimTasks(session('w-2', 's-2'), [], 1);
    clock.advance(TTL - 10);
    expect(store.extendLeases(session('w-1', 's-1'))).toBe(1);
    clock.advance(20);
    expect(store.requeueExpired()).toEqual({ requeued: 2, failed: 0 });
    expect(store.getTask(1)!.state).toBe('running');
    expect(store.getTask(2)!.state).toBe('queued');
    expect(store.getTask(3)!.state).toBe('queued');
  });

  it('does not resurrect an expired and requeued lease', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a')] });
    store.claimTasks(session(), [], 1);
    clock.advance(TTL);
    store.requeueExpired();
    expect(store.extendLeases(session())).toBe(0);
    expect(store.getTask(1)!.state).toBe('queued');
  });
});

describe('requeueExpired', () => {
  it('after MAX_LOSSES requeues, the next loss fails the task with WORKER_LOST', () => {
    const { store, clock } = openStore();
    expect(MAX_LOSSES).toBe(10);
    store.createJob({ tasks: [sh('a', { retries: 5 })] });
    for (let i = 1; i <= MAX_LOSSES; i++) {
      const [a] = store.claimTasks(session(`w-${i}`, 's'), [], 1);
      expect(a!.attempt).toBe(i);
      clock.advance(TTL);
      expect(store.requeueExpired()).toEqual({ requeued: 1, failed: 0 });
      expect(store.getTask(1)!.state).toBe('queued');
    }
    store.claimTasks(session('w-last', 's'), [], 1);
    clock.advance(TTL);
    expect(store.requeueExpired()).toEqual({ requeued: 0, failed: 1 });
    const task = store.getTask(1)!;
    expect(task.state).toBe('failed');
    expect(task.attempts).toBe(MAX_LOSSES + 1);
    expect(task.finishedAt).toBe(new Date(clock.now()).toISOString());
    expect(task.result!.error!.code).toBe('WORKER_LOST');
    expect(task.result).toMatchObject({ exitCode: null, signal: null, output: null });
    expect(task.history).toHaveLength(MAX_LOSSES + 1);
    expect(task.history!.every((h) => h.outcome === 'lost' && h.error?.code === 'WORKER_LOST')).toBe(true);
    expect(store.getJob(1)).toMatchObject({ state: 'failed', counts: { failed: 1, total: 1 } });
  });

  it('counts releases as losses too', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    for (let i = 0; i < MAX_LOSSES; i++) {
      const [a] = store.claimTasks(session(), [], 1);
      expect(store.releaseTask('w-1', lease(a!), 'preempt')).toEqual({ status: 'recorded', taskState: 'queued', jobId: 'job-1', requeued: true });
    }
    const [a] = store.claimTasks(session(), [], 1);
    expect(store.releaseTask('w-1', lease(a!), 'drain')).toEqual({ status: 'recorded', taskState: 'failed', jobId: 'job-1', requeued: false });
    const task = store.getTask(1)!;
    expect(task.result!.error!.code).toBe('WORKER_LOST');
    expect(task.history!.map((h) => h.outcome)).toEqual(Array(MAX_LOSSES + 1).fill('released'));
    expect(task.history![0]!.error!.message).toContain('preempt');
  });

  it('handles many expired leases at once, in lease order, up to the limit', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: Array.from({ length: 6 }, (_, i) => sh(`k${i}`)) });
    store.claimTasks(session('w-1', 's'), [], 2);
    clock.advance(1000);
    store.claimTasks(session('w-2', 's'), [], 2);
    clock.advance(1000);
    store.claimTasks(session('w-3', 's'), [], 2);
    clock.advance(TTL - 1000);
    expect(store.requeueExpired(1)).toEqual({ requeued: 1, failed: 0 });
    expect(store.requeueExpired()).toEqual({ requeued: 3, failed: 0 });
    expect(store.getJob(1)!.counts).toMatchObject({ queued: 4, running: 2 });
    expect(store.getTask(5)!.state).toBe('running');
  });

  it('does not touch finished tasks', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(a!), report());
    clock.advance(TTL * 10);
    expect(store.requeueExpired()).toEqual({ requeued: 0, failed: 0 });
    expect(store.getTask(1)!.state).toBe('succeeded');
  });
});

describe('requeueWorkerTasks', () => {
  it('takes back every task a worker holds as losses', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c')] });
    store.claimTasks(session('w-1', 's'), [], 2);
    store.claimTasks(session('w-2', 's'), [], 1);
    expect(store.requeueWorkerTasks('w-1', 'worker said bye')).toEqual({ requeued: 2, failed: 0 });
    expect(store.getJob(1)!.counts).toMatchObject({ queued: 2, running: 1 });
    expect(store.getTask(1)!.history![0]).toMatchObject({ outcome: 'lost', error: { code: 'WORKER_LOST' } });
    expect(store.requeueWorkerTasks('w-1', 'again')).toEqual({ requeued: 0, failed: 0 });
  });

  it('counts a task past MAX_LOSSES as failed, not requeued', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    store.claimTasks(session('w-1', 's'), [], 1);
    store.db.prepare('UPDATE tasks SET losses = ? WHERE id = 1').run(MAX_LOSSES);
    expect(store.requeueWorkerTasks('w-1', 'worker said bye')).toEqual({ requeued: 0, failed: 1 });
    expect(store.getTask(1)!.state).toBe('failed');
  });
});

describe('requeueUnheld', () => {
  it('takes back the worker\'s leases of its other sessions only, as losses', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('old-1'), sh('old-2'), sh('new'), sh('other')] });
    store.claimTasks(session('w-1', 's-old'), [], 2);
    store.claimTasks(session('w-1', 's-new'), [], 1);
    store.claimTasks(session('w-2', 's-old'), [], 1);
    expect(store.requeueUnheld(session('w-1', 's-new'))).toEqual({ requeued: 2, failed: 0 });
    expect(store.getJob(1)!.counts).toMatchObject({ queued: 2, running: 2 });
    expect(store.getTask(1)!.state).toBe('queued');
    expect(store.db.prepare('SELECT losses, failures FROM tasks WHERE id = 1').get()).toEqual({ losses: 1, failures: 0 }); // no retry spent
    expect(store.getTask(1)!.history![0]).toMatchObject({ outcome: 'lost', error: { code: 'WORKER_LOST', message: 'not on its worker when it reconnected' } });
    expect(store.getTask(3)!.state).toBe('running'); // this session's
    expect(store.getTask(4)!.state).toBe('running'); // another worker's
    expect(store.requeueUnheld(session('w-1', 's-new'))).toEqual({ requeued: 0, failed: 0 });
  });
});

describe('requeueUndelivered', () => {
  it('takes back the named current leases of that worker as losses, and leaves the rest', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c'), sh('other')] });
    const [a, b, c] = store.claimTasks(session('w-1', 's-1'), [], 3);
    const [other] = store.claimTasks(session('w-2', 's-2'), [], 1);
    store.completeTask('w-1', lease(c!), report());
    const named = [lease(a!), { ...lease(b!), leaseId: 'not-its-lease' }, lease(c!), lease(other!)];
    expect(store.requeueUndelivered('w-1', named)).toEqual({ requeued: 1, failed: 0 });
    expect([1, 2, 3, 4].map((id) => store.getTask(id)!.state)).toEqual(['queued', 'running', 'succeeded', 'running']);
    expect(store.db.prepare('SELECT losses, failures FROM tasks WHERE id = 1').get()).toEqual({ losses: 1, failures: 0 }); // no retry spent
    expect(store.getTask(1)!.history).toMatchObject([{ outcome: 'lost', error: { code: 'WORKER_LOST', message: 'not delivered: its session closed before the task was sent' } }]);
  });
});

describe('resumeLeases', () => {
  it('resumes current leases for the same worker and reports lost ones', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c'), sh('d')] });
    const [a, b, c] = store.claimTasks(session('w-1', 's-1'), [], 3);
    const [d] = store.claimTasks(session('w-2', 's-9'), [], 1);
    // b's lease expires and is requeued; c is cancelled.
    clock.advance(TTL - 1);
    store.extendLeases(session('w-1', 's-1'));
    store.db.prepare('UPDATE tasks SET lease_expires_at = ? WHERE id = 2').run(clock.now());
    store.requeueExpired();
    store.cancelTask(3);
    clock.advance(10);
    const out = store.resumeLeases(session('w-1', 's-2'), [
      { taskSeq: 1, taskId: a!.taskId, leaseId: a!.leaseId },
      { taskSeq: 2, taskId: b!.taskId, leaseId: b!.leaseId },
      { taskSeq: 3, taskId: c!.taskId, leaseId: c!.leaseId },
      { taskSeq: 4, taskId: d!.taskId, leaseId: d!.leaseId }, // another worker's
      { taskSeq: null, taskId: 'bogus', leaseId: 'x' },
      { taskSeq: 1, taskId: a!.taskId, leaseId: 'wrong' },
    ]);
    expect(out).toEqual({ resumed: [a!.taskId], lost: [b!.taskId, c!.taskId, d!.taskId, 'bogus', a!.taskId] });
    const row = store.db.prepare('SELECT session_id, lease_expires_at, lease_id FROM tasks WHERE id = 1').get();
    expect(row).toEqual({ session_id: 's-2', lease_expires_at: clock.now() + TTL, lease_id: a!.leaseId });
    // The new session's heartbeats now keep it; the old session's do not.
    expect(store.extendLeases(session('w-1', 's-1'))).toBe(0);
    expect(store.extendLeases(session('w-1', 's-2'))).toBe(1);
    // w-2's task is untouched.
    expect(store.db.prepare('SELECT session_id FROM tasks WHERE id = 4').get()).toEqual({ session_id: 's-9' });
    expect(store.completeTask('w-1', lease(a!), report())).toMatchObject({ status: 'recorded' });
  });
});

function helloFor(name: string) {
  return { type: 'hello' as const, protocol: 1, name, hostname: `${name}.local`, slots: 4, labels: [], version: '1', vm: null, running: [] };
}

describe('extendAllLeasesForRestart', () => {
  it('gives every running lease at least one more TTL, never shortening one', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c')] });
    store.claimTasks(session('w-1', 's'), [], 1);
    clock.advance(TTL - 5);
    store.claimTasks(session('w-2', 's'), [], 1);
    // A manager restart after a long pause: task 1's lease has already expired.
    clock.advance(TTL);
    const now = clock.now();
    store.db.prepare('UPDATE tasks SET lease_expires_at = ? WHERE id = 2').run(now + 10 * TTL);
    expect(store.extendAllLeasesForRestart()).toBe(2);
    const leases = store.db.prepare('SELECT id, lease_expires_at FROM tasks ORDER BY id').all();
    expect(leases).toEqual([
      { id: 1, lease_expires_at: now + TTL },
      { id: 2, lease_expires_at: now + 10 * TTL },
      { id: 3, lease_expires_at: null },
    ]);
    expect(store.requeueExpired()).toEqual({ requeued: 0, failed: 0 });
    clock.advance(TTL);
    expect(store.requeueExpired()).toEqual({ requeued: 1, failed: 0 });
  });
});
