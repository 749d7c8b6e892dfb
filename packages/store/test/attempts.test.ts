/**
 * Attempt history: a row per attempt that ended, written when it ends; the attempt in progress
 * (migration 3) and the one that succeeded are the task row's own.
 */
import { describe, expect, it } from 'vitest';
import { MIGRATIONS, schemaVersion } from '../src/index.js';
import { T0, assertConsistent, failed, lease, openStore, reopen, report, session } from './helpers.js';

describe('attempt history', () => {
  it('writes no attempt row at claim, and one when the attempt ends', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [{ shell: 'x', retries: 1 }] });
    const [first] = store.claimTasks(session(), [], 1);
    expect(store.db.prepare('SELECT count(*) AS n FROM attempts').get()).toEqual({ n: 0 });
    clock.advance(100);
    store.reportExecution('w-1', lease(first!), failed(3));
    clock.advance(100);
    const [second] = store.claimTasks(session('w-2', 's-2'), [], 1);
    expect(store.getTask(1)!.history).toEqual([
      { attempt: 1, workerId: 'w-1', startedAt: new Date(T0).toISOString(), endedAt: new Date(T0 + 100).toISOString(), outcome: 'failed', exitCode: 3, error: { code: 'NONZERO_EXIT', message: 'exited with code 3' } },
      { attempt: 2, workerId: 'w-2', startedAt: new Date(T0 + 200).toISOString(), endedAt: null, outcome: 'running', exitCode: null, error: null },
    ]);
    clock.advance(100);
    store.settleReports([{ workerId: 'w-2', lease: lease(second!), report: report() }]);
    expect(store.getTask(1)!.history!.map((h) => [h.attempt, h.workerId, h.outcome, h.startedAt, h.endedAt])).toEqual([
      [1, 'w-1', 'failed', new Date(T0).toISOString(), new Date(T0 + 100).toISOString()],
      [2, 'w-2', 'succeeded', new Date(T0 + 200).toISOString(), new Date(T0 + 300).toISOString()],
    ]);
  });

  it('writes no row for a succeeded attempt: the task row is its record', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [{ shell: 'x', retries: 1 }, { shell: 'y' }] });
    const [a, b] = store.claimTasks(session(), [], 2);
    clock.advance(100);
    store.reportExecution('w-1', lease(a!), failed(3));
    store.settleReports([{ workerId: 'w-1', lease: lease(b!), report: report() }]);
    const [again] = store.claimTasks(session('w-2', 's-2'), [], 1);
    clock.advance(50);
    store.completeTask('w-2', lease(again!), report());
    expect(store.db.prepare('SELECT task_id, attempt, outcome FROM attempts ORDER BY task_id, attempt').all()).toEqual([{ task_id: 1, attempt: 1, outcome: 'failed' }]);
    expect(store.getTask(1)!.history).toEqual([
      { attempt: 1, workerId: 'w-1', startedAt: new Date(T0).toISOString(), endedAt: new Date(T0 + 100).toISOString(), outcome: 'failed', exitCode: 3, error: { code: 'NONZERO_EXIT', message: 'exited with code 3' } },
      { attempt: 2, workerId: 'w-2', startedAt: new Date(T0 + 100).toISOString(), endedAt: new Date(T0 + 150).toISOString(), outcome: 'succeeded', exitCode: 0, error: null },
    ]);
    expect(store.getTask(2)!.history).toEqual([
      { attempt: 1, workerId: 'w-1', startedAt: new Date(T0).toISOString(), endedAt: new Date(T0 + 100).toISOString(), outcome: 'succeeded', exitCode: 0, error: null },
    ]);
    assertConsistent(store);
  });

  it('reads a succeeded attempt row written by an older version once, not twice', () => {
    const { store, path } = openStore();
    store.createJob({ tasks: [{ shell: 'x' }] });
    const [t] = store.claimTasks(session(), [], 1);
    store.completeTask('w-1', lease(t!), report());
    // As versions before this one left a success: with its own row (which the checked store's
    // invariants refuse, so it is read through a plain one).
    store.db.prepare(`INSERT INTO attempts (task_id, attempt, worker_id, started_at, ended_at, outcome, exit_code) VALUES (1, 1, 'w-1', ?, ?, 'succeeded', 0)`).run(T0, T0);
    const older = reopen(path);
    try {
      expect(older.getTask(1)!.history).toEqual([
        { attempt: 1, workerId: 'w-1', startedAt: new Date(T0).toISOString(), endedAt: new Date(T0).toISOString(), outcome: 'succeeded', exitCode: 0, error: null },
      ]);
    } finally {
      older.close();
    }
  });

  it('upgrades a version-2 database: open attempt rows go, and the running attempt still shows', () => {
    const { store, path } = openStore();
    store.createJob({ tasks: [{ shell: 'x' }] });
    const [running] = store.claimTasks(session(), [], 1);
    // As version 2 left it: an open row for the running attempt.
    store.db.prepare(`INSERT INTO attempts (task_id, attempt, worker_id, started_at, outcome) VALUES (1, 1, 'w-1', ?, 'running')`).run(T0);
    store.db.exec('ALTER TABLE workers DROP COLUMN problem'); // added by version 5
    store.db.pragma('user_version = 2');
    store.close();

    const upgraded = reopen(path);
    try {
      expect(schemaVersion(upgraded.db)).toBe(MIGRATIONS.length);
      expect(upgraded.db.prepare('SELECT count(*) AS n FROM attempts').get()).toEqual({ n: 0 });
      expect(upgraded.getTask(1)!.history).toEqual([{ attempt: 1, workerId: 'w-1', startedAt: new Date(T0).toISOString(), endedAt: null, outcome: 'running', exitCode: null, error: null }]);
      expect(upgraded.reportExecution('w-1', lease(running!), report())).toMatchObject({ status: 'recorded', taskState: 'succeeded' });
      expect(upgraded.getTask(1)!.history!.map((h) => h.outcome)).toEqual(['succeeded']);
      assertConsistent(upgraded);
    } finally {
      upgraded.close();
    }
  });
});
