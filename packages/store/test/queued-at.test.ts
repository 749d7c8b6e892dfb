/**
 * When a task entered the queue, as claimBatch reports it for the dispatch latency metric:
 * its creation, or its latest requeue (retry, lost lease, manual retry).
 */
import { describe, expect, it } from 'vitest';
import { MIGRATIONS, schemaVersion } from '../src/index.js';
import { T0, TTL, failed, openStore, session } from './helpers.js';

const claimOne = (store: ReturnType<typeof openStore>['store']) => store.claimBatch([{ session: session(), labels: [], freeSlots: 1 }])[0]![0]!;

describe('queuedAt', () => {
  it('is the creation time for a fresh task', () => {
    const { store, clock } = openStore();
    store.createJob({ tasks: [{ shell: 'x' }] });
    clock.advance(1_500);
    expect(claimOne(store).queuedAt).toBe(T0);
  });

  it('moves to the requeue time after a retried failure, a lost lease and a manual retry', () => {
    const { store, clock } = openStore();
    const { job } = store.createJob({ tasks: [{ shell: 'x', retries: 1 }] });
    let t = claimOne(store);
    clock.advance(1_000);
    store.reportExecution('w-1', { taskSeq: 1, leaseId: t.leaseId }, failed());
    const retriedAt = clock.now();
    clock.advance(250);
    t = claimOne(store);
    expect(t.queuedAt).toBe(retriedAt);

    clock.advance(TTL + 1);
    expect(store.requeueExpired()).toEqual({ requeued: 1, failed: 0 });
    const lostAt = clock.now();
    t = claimOne(store);
    expect(t.queuedAt).toBe(lostAt);

    store.reportExecution('w-1', { taskSeq: 1, leaseId: t.leaseId }, failed());
    expect(store.getTask(1)!.state).toBe('failed');
    clock.advance(5_000);
    expect(store.retryJob(Number(job.id.split('-')[1]))).toBe(1);
    const manualAt = clock.now();
    expect(claimOne(store).queuedAt).toBe(manualAt);
  });

  it('comes from migration 2, which the store applies on open', () => {
    const { store } = openStore();
    expect(schemaVersion(store.db)).toBe(MIGRATIONS.length);
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
    const columns = (store.db.prepare(`PRAGMA table_info(tasks)`).all() as Array<{ name: string }>).map((c) => c.name);
    expect(columns).toContain('queued_at');
  });
});
