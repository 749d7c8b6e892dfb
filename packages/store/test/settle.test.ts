import { describe, expect, it } from 'vitest';
import type { ExecutionReport, TaskSpec } from '@pullman/protocol';
import type { ReportItem, ReportOutcome, TaskStore } from '../src/index.js';
import { failed, lease, openStore, report, session, T0, taskStates } from './helpers.js';

const sh = (key: string, over: Partial<TaskSpec> = {}): TaskSpec => ({ key, shell: 'true', ...over });

/**
 * One scenario, built the same way on any store: two workers hold eight tasks, and a batch
 * of reports mixes successes, failures with and without retries left, a stale lease, a report
 * from the wrong worker and a task reported twice.
 */
function scenario(store: TaskStore): ReportItem[] {
  store.createJob({ tasks: [sh('ok-1'), sh('retry', { retries: 1 }), sh('fail'), sh('stale'), sh('thief'), sh('twice'), sh('output'), sh('ok-2')] });
  const w1 = store.claimTasks(session('w-1', 's-1'), [], 7);
  const [ok2] = store.claimTasks(session('w-2', 's-2'), [], 1);
  const byKey = new Map([...w1, ok2!].map((a) => [a.key!, a]));
  const item = (key: string, rep: ExecutionReport, workerId = 'w-1'): ReportItem => ({ workerId, lease: lease(byKey.get(key)!), report: rep });
  return [
    item('ok-1', report({ durationMs: 5 })),
    item('retry', failed(3)),
    item('fail', failed(2)),
    { workerId: 'w-1', lease: { ...lease(byKey.get('stale')!), leaseId: 'f'.repeat(32) }, report: report() },
    item('thief', report(), 'w-2'),
    item('twice', report()),
    item('output', report({ output: { pi: 3.14 } })),
    item('twice', failed(1)),
    item('ok-2', report(), 'w-2'),
  ];
}

describe('settleReports', () => {
  it('gives each report the outcome reporting them one by one would', () => {
    const batched = openStore();
    const oneByOne = openStore();
    const items = scenario(batched.store);
    const same = scenario(oneByOne.store);
    batched.clock.advance(1_000);
    oneByOne.clock.advance(1_000);

    const outcomes = batched.store.settleReports(items);
    const expected = same.map((it) => oneByOne.store.reportExecution(it.workerId, it.lease, it.report));

    expect(outcomes).toEqual(expected);
    expect(outcomes.map((o: ReportOutcome) => (o.status === 'recorded' ? o.taskState : o.status))).toEqual([
      'succeeded', 'queued', 'failed', 'stale', 'stale', 'succeeded', 'succeeded', 'stale', 'succeeded',
    ]);
    expect(taskStates(batched.store, 1)).toEqual(taskStates(oneByOne.store, 1));
    expect(batched.store.getJob(1)!.counts).toEqual(oneByOne.store.getJob(1)!.counts);
    // Every task's stored result and history match, lease ids aside.
    for (let seq = 1; seq <= 8; seq++) {
      const a = batched.store.getTask(seq)!;
      const b = oneByOne.store.getTask(seq)!;
      expect(a.result, `result of task ${seq}`).toEqual(b.result);
      expect(a.history, `history of task ${seq}`).toEqual(b.history);
    }
  });

  it('writes results, attempts and worker counters of the batched successes', () => {
    const { store, clock } = openStore();
    store.registerWorker({ type: 'hello', protocol: 1, workerId: undefined, name: 'a', hostname: 'a', slots: 4, labels: [], version: '0', vm: null, running: [] }, 's-0');
    const workerId = store.listWorkers()[0]!.id;
    store.createJob({ tasks: [sh('a'), sh('b'), sh('c')] });
    const claimed = store.claimTasks(session(workerId, 's-0'), [], 3);
    clock.advance(250);
    const outcomes = store.settleReports(claimed.map((a, i) => ({ workerId, lease: lease(a), report: report({ durationMs: i, output: { i } }) })));
    expect(outcomes.every((o) => o.status === 'recorded' && o.taskState === 'succeeded' && o.jobId === 'job-1')).toBe(true);
    expect(store.getJob(1)).toMatchObject({ state: 'succeeded', finishedAt: new Date(T0 + 250).toISOString() });
    expect(store.getTask(2)!.result).toEqual({ exitCode: 0, signal: null, durationMs: 1, stdoutTail: 'out', stderrTail: '', output: { i: 1 }, error: null });
    expect(store.getTask(3)!.history).toEqual([{ attempt: 1, workerId, startedAt: new Date(T0).toISOString(), endedAt: new Date(T0 + 250).toISOString(), outcome: 'succeeded', exitCode: 0, error: null }]);
    expect(store.getWorker(workerId)).toMatchObject({ tasksSucceeded: 3, tasksFailed: 0, usedSlots: 0 });
  });

  it('stores an output nested deeper than SQLite parses JSON (1,000 levels)', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('deep'), sh('flat')] });
    const [deep, flat] = store.claimTasks(session(), [], 2);
    let output: unknown = 'bottom';
    for (let i = 0; i < 2_000; i++) output = [output];
    const outcomes = store.settleReports([
      { workerId: 'w-1', lease: lease(deep!), report: report({ output }) },
      { workerId: 'w-1', lease: lease(flat!), report: report() },
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['recorded', 'recorded']);
    expect(JSON.stringify(store.getTask(1)!.result!.output)).toBe(JSON.stringify(output));
  });

  it('changes nothing for an empty batch', () => {
    const { store } = openStore();
    expect(store.settleReports([])).toEqual([]);
  });
});

describe('claimBatch across label sets', () => {
  it('deals a task that fits several label sets once, and the next one to the other set', () => {
    const { store } = openStore();
    store.createJob({ tasks: [sh('p1'), sh('p2'), sh('p3')] });
    const [cpu, gpu] = store.claimBatch([
      { session: session('w-cpu', 's-1'), labels: [], freeSlots: 1 },
      { session: session('w-gpu', 's-2'), labels: ['gpu'], freeSlots: 1 },
    ]);
    expect(cpu!.map((t) => t.key)).toEqual(['p1']);
    expect(gpu!.map((t) => t.key)).toEqual(['p2']);
    expect(store.getTask(1)!.workerId).toBe('w-cpu');
    expect(store.getTask(2)!.workerId).toBe('w-gpu');
    expect(store.getTask(3)!.state).toBe('queued');
  });
});
