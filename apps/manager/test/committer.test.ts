/**
 * What one failing operation does to the rest of its group commit. With a savepoint it fails
 * alone. Without one (HOT), a PullmanError fails it alone (the promise: thrown before any
 * write), and any other error rolls the whole batch back, since the operation may have written
 * half its work into a transaction SQLite kept open.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { PullmanError } from '@pullman/protocol';
import { TaskStore } from '@pullman/store';
import { GroupCommitter, HOT, RETRY_AFTER_FAILURE_MS } from '../src/committer.js';

const open: Array<{ store: TaskStore; dir: string }> = [];
afterEach(() => {
  for (const { store, dir } of open.splice(0)) {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

function setup(): { store: TaskStore; committer: GroupCommitter } {
  const dir = mkdtempSync(join(tmpdir(), 'pullman-committer-'));
  const store = new TaskStore({ path: join(dir, 'pullman.db'), leaseTtlMs: 30_000 });
  open.push({ store, dir });
  return { store, committer: new GroupCommitter(store) };
}

const names = (store: TaskStore) => store.listJobs({ limit: 10 }).items.map((j) => j.name).sort();

/**
 * Jobs 'a' and 'c' around an op that writes a job and then throws a plain error, as if SQLite had
 * undone one statement and kept the transaction; the op runs with `options` (savepoint or HOT).
 */
function aroundHalfWritten(store: TaskStore, committer: GroupCommitter, options: { savepoint?: boolean }) {
  return Promise.allSettled([
    committer.run(() => store.createJob({ name: 'a' })),
    committer.run(() => {
      store.createJob({ name: 'half-written' });
      throw new Error('database trouble');
    }, options),
    committer.run(() => store.createJob({ name: 'c' })),
  ]);
}

describe('a failing operation in a group commit', () => {
  it('with a savepoint, fails alone even after writing', async () => {
    const { store, committer } = setup();
    const outcomes = await aroundHalfWritten(store, committer, {});
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(names(store)).toEqual(['a', 'c']);
  });

  it('without a savepoint, fails alone on a PullmanError', async () => {
    const { store, committer } = setup();
    const { job } = store.createJob({ name: 'sealed' });
    store.sealJob(Number(job.id.slice('job-'.length)));
    const outcomes = await Promise.allSettled([
      committer.run(() => store.createJob({ name: 'a' })),
      committer.run(() => store.submitTasks(Number(job.id.slice('job-'.length)), [{ command: ['true'] }]), HOT),
      committer.run(() => store.createJob({ name: 'c' })),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(((outcomes[1] as PromiseRejectedResult).reason as PullmanError).code).toBe('JOB_SEALED');
    expect(names(store)).toEqual(['a', 'c', 'sealed']);
  });

  it('without a savepoint, rolls back the whole batch on any other error, and the next batch commits', async () => {
    const { store, committer } = setup();
    const outcomes = await aroundHalfWritten(store, committer, HOT);
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const o of outcomes) expect(((o as PromiseRejectedResult).reason as Error).message).toBe('database trouble');
    expect(names(store)).toEqual([]);
    expect(store.db.inTransaction).toBe(false);

    await committer.run(() => store.createJob({ name: 'later' }));
    expect(names(store)).toEqual(['later']);
  });
});

describe('after a failed flush', () => {
  it('flushes again by itself, so the hooks whose work rolled back run again', async () => {
    const { store, committer } = setup();
    let hookRuns = 0;
    committer.afterWrites(() => void hookRuns++);
    // The batch fails before its hooks run (a HOT op's plain error rolls it all back).
    await expect(committer.run(() => {
      throw new Error('disk trouble');
    }, HOT)).rejects.toThrow('disk trouble');
    expect(hookRuns).toBe(0);
    // Nothing else is queued; the retry flush runs the hooks.
    await vi.waitFor(() => expect(hookRuns).toBe(1), { timeout: RETRY_AFTER_FAILURE_MS * 10, interval: 50 });
    committer.close();
    expect(store.db.inTransaction).toBe(false);
  });
});

describe('close', () => {
  it('flushes what is queued once, and a flush scheduled before it does not run after it', async () => {
    const { store, committer } = setup();
    let hookRuns = 0;
    committer.afterWrites(() => void hookRuns++);
    const job = committer.run(() => store.createJob({ name: 'last' }));
    committer.close();
    expect(hookRuns).toBe(1);
    await expect(job).resolves.toMatchObject({ job: { name: 'last' } });
    await new Promise((resolve) => setImmediate(resolve));
    expect(hookRuns).toBe(1);
    await expect(committer.run(() => 1)).rejects.toThrow('committer is closed');
  });
});
