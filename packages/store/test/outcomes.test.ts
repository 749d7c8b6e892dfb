import { describe, expect, it } from 'vitest';
import type { TaskSpec } from '@pullman/protocol';
import { failed, lease, openStore, report, session, snapshot, T0, taskStates } from './helpers.js';

const sh = (key: string, over: Partial<TaskSpec> = {}): TaskSpec => ({ key, shell: 'true', ...over });

describe('completeTask and reportExecution', () => {
  it('records a success with its result', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    clock.advance(1234);
    const r = report({ durationMs: 1200, stdoutTail: 'hello', output: { pi: 3.14 } });
    expect(store.reportExecution('w-1', lease(a!), r)).toEqual({ status: 'recorded', taskState: 'succeeded', jobId: 'job-1', requeued: false });
    const task = store.getTask(1)!;
    expect(task).toMatchObject({ state: 'succeeded', attempts: 1, workerId: 'w-1', finishedAt: new Date(T0 + 1234).toISOString() });
    expect(task.result).toEqual({ exitCode: 0, signal: null, durationMs: 1200, stdoutTail: 'hello', stderrTail: '', output: { pi: 3.14 }, error: null });
    expect(task.history).toEqual([{ attempt: 1, workerId: 'w-1', startedAt: new Date(T0).toISOString(), endedAt: new Date(T0 + 1234).toISOString(), outcome: 'succeeded', exitCode: 0, error: null }]);
  });

  it('treats exit 0 with timedOut, cancelled or an error as a failure', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('t'), sh('c'), sh('e')] });
    const [t, c, e] = store.claimTasks(session(), [], 3);
    expect(store.reportExecution('w-1', lease(t!), report({ timedOut: true }))).toMatchObject({ taskState: 'failed' });
    expect(store.reportExecution('w-1', lease(c!), report({ cancelled: true }))).toMatchObject({ taskState: 'failed' });
    expect(store.reportExecution('w-1', lease(e!), report({ error: { code: 'SPAWN_FAILED', message: 'no such file' } }))).toMatchObject({ taskState: 'failed' });
    expect(store.getTask(3)!.result!.error).toEqual({ code: 'SPAWN_FAILED', message: 'no such file' });
    expect(store.getJob(1)!.state).toBe('failed');
  });

  it('drops an output larger than 1 MiB instead of storing it', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(a!), report({ output: { blob: 'x'.repeat(1024 * 1024 + 1) } }));
    expect(store.getTask(1)!.result!.output).toBeNull();
  });
});

describe('retries', () => {
  it('requeues a failed execution while retries remain, then fails; one history entry per attempt', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a', { retries: 2 })] });
    const outcomes = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [a] = store.claimTasks(session(`w-${attempt}`, 's'), [], 1);
      expect(a!.attempt).toBe(attempt);
      clock.advance(100);
      outcomes.push(store.reportExecution(`w-${attempt}`, lease(a!), failed(attempt)));
      if (attempt < 3) {
        expect(store.getTask(1)).toMatchObject({ state: 'queued', finishedAt: null });
        expect(store.getJob(1)!.state).toBe('active');
      }
    }
    expect(outcomes).toEqual([
      { status: 'recorded', taskState: 'queued', jobId: 'job-1', requeued: true },
      { status: 'recorded', taskState: 'queued', jobId: 'job-1', requeued: true },
      { status: 'recorded', taskState: 'failed', jobId: 'job-1', requeued: false },
    ]);
    const task = store.getTask(1)!;
    expect(task).toMatchObject({ state: 'failed', attempts: 3, workerId: 'w-3', finishedAt: new Date(T0 + 300).toISOString() });
    expect(task.result).toMatchObject({ exitCode: 3, error: { code: 'NONZERO_EXIT', message: 'exited with code 3' } });
    expect(task.history!.map((h) => [h.attempt, h.workerId, h.outcome, h.exitCode, h.error?.code])).toEqual([
      [1, 'w-1', 'failed', 1, 'NONZERO_EXIT'],
      [2, 'w-2', 'failed', 2, 'NONZERO_EXIT'],
      [3, 'w-3', 'failed', 3, 'NONZERO_EXIT'],
    ]);
    expect(task.history!.map((h) => h.endedAt)).toEqual([T0 + 100, T0 + 200, T0 + 300].map((t) => new Date(t).toISOString()));
    expect(store.getJob(1)).toMatchObject({ state: 'failed', counts: { failed: 1, total: 1 } });
  });

  it('succeeds on a retry after a failure', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a', { retries: 1 })] });
    const [first] = store.claimTasks(session(), [], 1);
    store.failTask('w-1', lease(first!), failed());
    // The requeued task keeps the failed attempt's result until the next one ends.
    expect(store.getTask(1)!.result!.exitCode).toBe(1);
    const [second] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(second!), report());
    expect(store.getTask(1)!.history!.map((h) => h.outcome)).toEqual(['failed', 'succeeded']);
    expect(store.getTask(1)!.result).toMatchObject({ exitCode: 0, error: null });
    expect(store.getJob(1)!.state).toBe('succeeded');
  });

  it('records a timeout as timed-out with TIMED_OUT', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a', { retries: 1, timeout: '1s' })] });
    for (let i = 0; i < 2; i++) {
      const [a] = store.claimTasks(session(), [], 1);
      store.reportExecution('w-1', lease(a!), report({ exitCode: null, signal: 'SIGKILL', timedOut: true, durationMs: 1000 }));
    }
    const task = store.getTask(1)!;
    expect(task.state).toBe('failed');
    expect(task.history!.map((h) => h.outcome)).toEqual(['timed-out', 'timed-out']);
    expect(task.history!.every((h) => h.error?.code === 'TIMED_OUT')).toBe(true);
    expect(task.result).toMatchObject({ exitCode: null, signal: 'SIGKILL', error: { code: 'TIMED_OUT' } });
  });

  it('describes a signal death', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    store.failTask('w-1', lease(a!), report({ exitCode: null, signal: 'SIGSEGV' }));
    expect(store.getTask(1)!.result!.error).toEqual({ code: 'NONZERO_EXIT', message: 'killed by SIGSEGV' });
  });

  it('does not spend retries on infrastructure losses', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a', { retries: 1 })] });
    for (let i = 0; i < 3; i++) {
      store.claimTasks(session(), [], 1);
      clock.advance(60_000);
      store.requeueExpired();
    }
    const [a] = store.claimTasks(session(), [], 1);
    expect(store.failTask('w-1', lease(a!), failed())).toMatchObject({ taskState: 'queued', requeued: true });
    const [b] = store.claimTasks(session(), [], 1);
    expect(store.failTask('w-1', lease(b!), failed())).toMatchObject({ taskState: 'failed' });
    expect(store.getTask(1)!.history!.map((h) => h.outcome)).toEqual(['lost', 'lost', 'lost', 'failed', 'failed']);
  });
});

describe('cancelTask', () => {
  it('cancels a queued task', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b')] });
    clock.advance(50);
    const out = store.cancelTask(1);
    expect(out.toCancel).toBeNull();
    expect(out.task).toMatchObject({ id: 'task-1', state: 'cancelled', finishedAt: new Date(T0 + 50).toISOString(), history: [] });
    expect(store.claimTasks(session(), [], 5).map((t) => t.key)).toEqual(['b']);
  });

  it('cancels a running task, voids its lease and returns it for the worker', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session('w-7', 's'), [], 1);
    const out = store.cancelTask(1);
    expect(out.toCancel).toEqual({ workerId: 'w-7', taskId: 'task-1', leaseId: a!.leaseId });
    expect(out.task.state).toBe('cancelled');
    expect(out.task.history).toMatchObject([{ outcome: 'cancelled', error: { code: 'CANCELLED' } }]);
    // The worker's late report is stale.
    const before = snapshot(store);
    expect(store.completeTask('w-7', lease(a!), report())).toEqual({ status: 'stale' });
    expect(snapshot(store)).toEqual(before);
    // The last task of a sealed job was cancelled: the job is over, and not succeeded.
    expect(store.getJob(1)).toMatchObject({ state: 'failed', counts: { cancelled: 1 } });
  });

  it('leaves a finished task as it is', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(a!), report());
    const before = snapshot(store);
    expect(store.cancelTask(1)).toMatchObject({ task: { state: 'succeeded' }, toCancel: null });
    expect(snapshot(store)).toEqual(before);
  });
});

describe('cancelJob', () => {
  it('cancels queued and running tasks and returns the leases to kill', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c'), sh('d')] });
    const [a, b] = store.claimTasks(session('w-1', 's'), [], 2);
    const [c] = store.claimTasks(session('w-2', 's'), [], 1);
    store.completeTask('w-2', lease(c!), report());
    clock.advance(10);
    const { job, toCancel } = store.cancelJob(1);
    expect(job).toMatchObject({ state: 'cancelled', finishedAt: new Date(T0 + 10).toISOString(), counts: { queued: 0, running: 0, succeeded: 1, cancelled: 3, total: 4 } });
    expect(toCancel).toEqual([
      { workerId: 'w-1', taskId: a!.taskId, leaseId: a!.leaseId },
      { workerId: 'w-1', taskId: b!.taskId, leaseId: b!.leaseId },
    ]);
    expect(taskStates(store, 1)).toEqual({ a: 'cancelled', b: 'cancelled', c: 'succeeded', d: 'cancelled' });
    expect(store.completeTask('w-1', lease(a!), report())).toEqual({ status: 'stale' });
    expect(store.claimTasks(session(), [], 10)).toEqual([]);
    // Cancelling again does nothing.
    expect(store.cancelJob(1)).toEqual({ job: store.getJob(1), toCancel: [] });
  });

  it('does not change a finished job', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(a!), report());
    expect(store.cancelJob(1)).toMatchObject({ job: { state: 'succeeded' }, toCancel: [] });
  });

  it('cancels only its own tasks', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    store.createJob({ tasks: [sh('a')] });
    store.claimTasks(session(), [], 2);
    store.cancelJob(1);
    expect(store.getJob(2)).toMatchObject({ state: 'active', counts: { running: 1 } });
  });
});

describe('retryJob', () => {
  it('requeues failed tasks, reactivates the job, and lets it finish again', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('ok'), sh('bad'), sh('bad2', { retries: 1 })] });
    const [ok, bad, bad2] = store.claimTasks(session(), [], 3);
    store.completeTask('w-1', lease(ok!), report());
    store.failTask('w-1', lease(bad!), failed());
    store.failTask('w-1', lease(bad2!), failed());
    const [bad2b] = store.claimTasks(session(), [], 1);
    store.failTask('w-1', lease(bad2b!), failed());
    expect(store.getJob(1)!.state).toBe('failed');

    clock.advance(1000);
    expect(store.retryJob(1)).toBe(2);
    expect(store.getJob(1)).toMatchObject({ state: 'active', finishedAt: null, counts: { queued: 2, succeeded: 1, failed: 0 } });
    expect(store.getTask(2)).toMatchObject({ state: 'queued', finishedAt: null });

    // A fresh retry budget: bad2 may fail once more and still be requeued.
    const again = store.claimTasks(session(), [], 2);
    expect(again.map((t) => [t.key, t.attempt])).toEqual([['bad', 2], ['bad2', 3]]);
    expect(store.failTask('w-1', lease(again[1]!), failed())).toMatchObject({ taskState: 'queued' });
    store.completeTask('w-1', lease(again[0]!), report());
    const [last] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(last!), report());
    expect(store.getJob(1)).toMatchObject({ state: 'succeeded', finishedAt: new Date(T0 + 1000).toISOString(), counts: { succeeded: 3, total: 3 } });
    expect(store.getTask(3)!.history!.map((h) => h.outcome)).toEqual(['failed', 'failed', 'failed', 'succeeded']);
  });

  it('requeues nothing when nothing failed', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a')] });
    const [a] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(a!), report());
    const before = snapshot(store);
    expect(store.retryJob(1)).toBe(0);
    expect(snapshot(store)).toEqual(before);
    expect(store.getJob(1)!.state).toBe('succeeded');
  });

  it('gives back a fresh loss budget to a WORKER_LOST task', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [sh('a')] });
    for (let i = 0; i <= 10; i++) {
      store.claimTasks(session(), [], 1);
      clock.advance(60_000);
      store.requeueExpired();
    }
    expect(store.getTask(1)!.state).toBe('failed');
    expect(store.retryJob(1)).toBe(1);
    store.claimTasks(session(), [], 1);
    clock.advance(60_000);
    expect(store.requeueExpired()).toEqual({ requeued: 1, failed: 0 });
  });

  it('requeues cancelled tasks when asked', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('a'), sh('b')] });
    store.claimTasks(session(), [], 1);
    store.cancelJob(1);
    expect(store.retryJob(1, 'failed')).toBe(0);
    expect(store.getJob(1)!.state).toBe('cancelled');
    expect(store.retryJob(1, 'cancelled')).toBe(2);
    expect(store.getJob(1)).toMatchObject({ state: 'active', counts: { queued: 2, cancelled: 0 } });
    const claimed = store.claimTasks(session(), [], 2);
    for (const t of claimed) store.completeTask('w-1', lease(t), report());
    expect(store.getJob(1)!.state).toBe('succeeded');
  });
});

describe('results as stored', () => {
  const stored = (store: ReturnType<typeof openStore>['store'], id: number) =>
    JSON.parse((store.db.prepare('SELECT result FROM tasks WHERE id = ?').get(id) as { result: string }).result) as unknown;

  it('leave out the fields at their defaults, and read back complete', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('silent'), sh('chatty'), sh('failing')] });
    const [silent, chatty, failing] = store.claimTasks(session(), [], 3);
    store.settleReports([
      { workerId: 'w-1', lease: lease(silent!), report: report({ durationMs: 7, stdoutTail: '' }) },
      { workerId: 'w-1', lease: lease(chatty!), report: report({ durationMs: 8, stdoutTail: 'out', stderrTail: 'err', output: { n: 1 } }) },
    ]);
    store.reportExecution('w-1', lease(failing!), report({ exitCode: null, signal: 'SIGKILL', durationMs: 9, stdoutTail: '' }));
    expect(stored(store, 1)).toEqual({ exitCode: 0, durationMs: 7 });
    expect(stored(store, 2)).toEqual({ exitCode: 0, durationMs: 8, stdoutTail: 'out', stderrTail: 'err', output: { n: 1 } });
    expect(stored(store, 3)).toEqual({ exitCode: null, durationMs: 9, signal: 'SIGKILL', error: { code: 'NONZERO_EXIT', message: 'killed by SIGKILL' } });
    expect(store.getTask(1)!.result).toEqual({ exitCode: 0, signal: null, durationMs: 7, stdoutTail: '', stderrTail: '', output: null, error: null });
    expect(store.getTask(2)!.result).toEqual({ exitCode: 0, signal: null, durationMs: 8, stdoutTail: 'out', stderrTail: 'err', output: { n: 1 }, error: null });
    expect(store.getTask(3)!.result).toMatchObject({ exitCode: null, signal: 'SIGKILL', stdoutTail: '', output: null, error: { code: 'NONZERO_EXIT' } });
    expect(store.resultsPage(1, 0, 10).lines.map((l) => [l.exitCode, l.output, l.error?.code ?? null])).toEqual([[0, null, null], [0, { n: 1 }, null], [null, null, 'NONZERO_EXIT']]);
  });

  it('read the complete form older releases wrote the same way', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('old')] });
    const [t] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(t!), report({ durationMs: 7, stdoutTail: '' }));
    const complete = { exitCode: 0, signal: null, durationMs: 7, stdoutTail: '', stderrTail: '', output: null, error: null };
    store.db.prepare('UPDATE tasks SET result = ? WHERE id = 1').run(JSON.stringify(complete));
    expect(store.getTask(1)!.result).toEqual(complete);
  });
});
