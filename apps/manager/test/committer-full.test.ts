/**
 * SQLITE_FULL inside a group commit. SQLite answers a full disk by rolling back the whole
 * transaction, not just the failing operation's savepoint; the committer must then fail the
 * whole batch, and must not run the operations after the failing one in autocommit (which
 * stored them while their callers were told the commit failed).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TaskStore } from '@pullman/store';
import { GroupCommitter } from '../src/committer.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A store with room for 8 more pages, and its committer. */
function nearlyFull(): { store: TaskStore; committer: GroupCommitter } {
  const dir = mkdtempSync(join(tmpdir(), 'pullman-full-'));
  dirs.push(dir);
  const path = join(dir, 'pullman.db');
  const probe = new TaskStore({ path, leaseTtlMs: 30_000 });
  const pages = probe.db.pragma('page_count', { simple: true }) as number;
  probe.close();
  const store = new TaskStore({ path, leaseTtlMs: 30_000, maxPages: pages + 8 });
  return { store, committer: new GroupCommitter(store) };
}

/** A job far bigger than 8 pages: SQLITE_FULL. */
const hugeJob = (store: TaskStore) => store.createJob({ name: 'huge', tasks: Array.from({ length: 200 }, () => ({ shell: 'true', meta: { pad: 'x'.repeat(4096) } })) });

describe('group commit on a full database', () => {
  it('fails every operation of the batch and stores none of them', async () => {
    const { store, committer } = nearlyFull();
    const small = (name: string) => () => store.createJob({ name, tasks: [{ shell: 'true' }] });
    const huge = () => hugeJob(store);

    const outcomes = await Promise.allSettled([committer.run(small('before')), committer.run(huge), committer.run(small('after-1')), committer.run(small('after-2'))]);
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
    for (const o of outcomes) expect(((o as PromiseRejectedResult).reason as { code?: string }).code).toBe('SQLITE_FULL');
    expect(store.listJobs({ limit: 10 }).items).toEqual([]);

    // The next batch, once there is room again for what it writes, commits normally.
    const job = await committer.run(small('later'));
    expect(store.listJobs({ limit: 10 }).items.map((j) => j.id)).toEqual([job.job.id]);
    committer.close();
    store.close();
  });

  it('calls every runThen callback with the error, including those of operations that never ran', async () => {
    const { store, committer } = nearlyFull();
    const huge = () => hugeJob(store);
    const ran: string[] = [];
    const settled: Array<[string, boolean, string | undefined]> = [];
    const op = (name: string, fn: () => unknown) => committer.runThen(() => {
      ran.push(name);
      return fn();
    }, (o) => settled.push([name, o.ok, o.ok ? undefined : (o.error as { code?: string }).code]), { savepoint: false });
    op('first', () => store.createJob({ name: 'first' }));
    op('huge', huge);
    op('after', () => store.createJob({ name: 'after' }));
    await new Promise((r) => setImmediate(r));
    // The aborted transaction stops the batch: 'after' never ran, and is still told.
    expect(ran).toEqual(['first', 'huge']);
    expect(settled).toEqual([['first', false, 'SQLITE_FULL'], ['huge', false, 'SQLITE_FULL'], ['after', false, 'SQLITE_FULL']]);
    expect(store.listJobs({ limit: 10 }).items).toEqual([]);
    committer.close();
    store.close();
  });
});
