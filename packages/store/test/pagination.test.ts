import { describe, expect, it } from 'vitest';
import { PullmanError, type Job, type JobState, type Task, type TaskState } from '@pullman/protocol';
import type { Page, TaskStore } from '../src/index.js';
import { failed, lease, openStore, report, session } from './helpers.js';

function walk<T>(fetch: (cursor: string | undefined) => Page<T>): { items: T[]; pages: number } {
  const items: T[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const page = fetch(cursor);
    pages++;
    items.push(...page.items);
    if (page.nextCursor === null) return { items, pages };
    expect(page.items.length, 'a page before the last is full').toBeGreaterThan(0);
    cursor = page.nextCursor;
    expect(pages).toBeLessThan(1000);
  }
}

/** 7 jobs: ids 1..7; 2 and 5 cancelled, 4 succeeded (empty), the rest active. */
function makeJobs(store: TaskStore): void {
  for (let i = 1; i <= 7; i++) store.createJob(i === 4 ? { name: `j${i}` } : { name: `j${i}`, tasks: [{ shell: 'x' }] });
  store.cancelJob(2);
  store.cancelJob(5);
}

describe('listJobs', () => {
  it.each([1, 2, 3, 6, 7, 8, 100])('walks all jobs newest first with limit %i, without duplicates or gaps', (limit) => {
    const { store } = openStore();
    makeJobs(store);
    const { items, pages } = walk((cursor) => store.listJobs({ limit, cursor }));
    expect(items.map((j: Job) => j.id)).toEqual(['job-7', 'job-6', 'job-5', 'job-4', 'job-3', 'job-2', 'job-1']);
    expect(pages).toBe(Math.ceil(7 / limit));
  });

  it('returns nextCursor null exactly on the last page', () => {
    const { store } = openStore();
    makeJobs(store);
    expect(store.listJobs({ limit: 7 }).nextCursor).toBeNull();
    const first = store.listJobs({ limit: 6 });
    expect(first.nextCursor).not.toBeNull();
    expect(store.listJobs({ limit: 6, cursor: first.nextCursor! })).toMatchObject({ items: [{ id: 'job-1' }], nextCursor: null });
  });

  it.each<[JobState, string[]]>([
    ['active', ['job-7', 'job-6', 'job-3', 'job-1']],
    ['cancelled', ['job-5', 'job-2']],
    ['succeeded', ['job-4']],
    ['failed', []],
  ])('filters by state %s across pages', (state, ids) => {
    const { store } = openStore();
    makeJobs(store);
    const { items } = walk((cursor) => store.listJobs({ state, limit: 1, cursor }));
    expect(items.map((j) => j.id)).toEqual(ids);
    expect(items.every((j) => j.state === state)).toBe(true);
  });

  it('is empty on an empty store', () => {
    const { store } = openStore();
    expect(store.listJobs({ limit: 10 })).toEqual({ items: [], nextCursor: null });
  });

  it.each(['', 'abc', '12', 'c', 'c-1', 'C10', 'c10 ', 'czzzzzzzzzzzzz', 'c1.5'])('rejects the invalid cursor %j with INVALID_INPUT', (cursor) => {
    const { store } = openStore();
    makeJobs(store);
    let caught: unknown;
    try {
      store.listJobs({ limit: 10, cursor });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(PullmanError);
    expect((caught as PullmanError).code).toBe('INVALID_INPUT');
    expect((caught as PullmanError).message).toContain(JSON.stringify(cursor));
    expect(() => store.listTasks(1, { limit: 10, cursor })).toThrow(PullmanError);
  });
});

describe('listTasks', () => {
  function setup() {
    const h = openStore();
    const { store } = h;
    store.createJob({ tasks: Array.from({ length: 23 }, (_, i) => ({ key: `k${i}`, shell: 'x', priority: i % 4 })) });
    store.createJob({ tasks: [{ key: 'other', shell: 'x' }] });
    // Move some tasks: run 6 (ids 4, 8, 12, 16, 20 at priority 3, then 3), succeed 3, fail 2, cancel 2 queued ones.
    const claimed = store.claimTasks(session(), [], 6);
    claimed.slice(0, 3).forEach((t) => store.completeTask('w-1', lease(t), report()));
    claimed.slice(3, 5).forEach((t) => store.failTask('w-1', lease(t), failed()));
    store.cancelTask(21);
    store.cancelTask(23);
    store.cancelTask(16); // already failed: unchanged
    return h;
  }

  it.each([1, 4, 5, 23, 50])('walks all of a job\'s tasks in submission order with limit %i', (limit) => {
    const { store } = setup();
    const { items } = walk((cursor) => store.listTasks(1, { limit, cursor }));
    expect(items.map((t: Task) => t.key)).toEqual(Array.from({ length: 23 }, (_, i) => `k${i}`));
    expect(items.every((t) => t.jobId === 'job-1')).toBe(true);
    expect(items.every((t) => t.history === undefined)).toBe(true);
  });

  it('filters by state across pages, and the filtered pages add up to the job counts', () => {
    const { store } = setup();
    const job = store.getJob(1)!;
    let total = 0;
    for (const state of ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as TaskState[]) {
      const { items } = walk((cursor) => store.listTasks(1, { state, limit: 2, cursor }));
      expect(items.every((t) => t.state === state)).toBe(true);
      const ids = items.map((t) => Number(t.id.slice(5)));
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(items.length, state).toBe(job.counts[state]);
      total += items.length;
    }
    expect(total).toBe(23);
    expect(job.counts).toMatchObject({ running: 1, succeeded: 3, failed: 2, cancelled: 2, queued: 15 });
  });
});

describe('resultsPage', () => {
  it('returns only terminal tasks, in order, page by page', () => {
    const { store } = openStore();
    store.createJob({ tasks: Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, shell: 'x' })) });
    const claimed = store.claimTasks(session(), [], 10);
    // k0, k2, k4, k6 succeed with output; k1 fails; k3 cancelled while running; k8 cancelled; others still running or queued.
    for (const i of [6, 0, 4, 2]) store.completeTask('w-1', lease(claimed[i]!), report({ exitCode: 0, output: { i }, durationMs: 10 * i }));
    store.failTask('w-1', lease(claimed[1]!), failed(7));
    store.cancelTask(4);
    store.cancelTask(9);

    const lines = [];
    let after = 0;
    for (;;) {
      const page = store.resultsPage(1, after, 2);
      lines.push(...page.lines);
      if (page.lastSeq === null) break;
      expect(page.lines.length).toBeLessThanOrEqual(2);
      after = page.lastSeq;
    }
    expect(lines.map((l) => [l.key, l.state])).toEqual([
      ['k0', 'succeeded'], ['k1', 'failed'], ['k2', 'succeeded'], ['k3', 'cancelled'], ['k4', 'succeeded'], ['k6', 'succeeded'], ['k8', 'cancelled'],
    ]);
    expect(lines[0]).toEqual({ taskId: 'task-1', key: 'k0', state: 'succeeded', exitCode: 0, output: { i: 0 }, durationMs: 0, attempts: 1, error: null });
    expect(lines[1]).toMatchObject({ exitCode: 7, error: { code: 'NONZERO_EXIT' }, attempts: 1 });
    expect(lines[5]).toMatchObject({ output: { i: 6 }, durationMs: 60 });
    expect(lines[6]).toMatchObject({ taskId: 'task-9', exitCode: null, output: null, durationMs: null, attempts: 1 });
  });

  it('is empty for a job with no finished tasks or no tasks', () => {
    const { store } = openStore();
    store.createJob({ tasks: [{ shell: 'x' }] });
    expect(store.resultsPage(1, 0, 100)).toEqual({ lines: [], lastSeq: null });
    expect(store.resultsPage(99, 0, 100)).toEqual({ lines: [], lastSeq: null });
  });

  it('does not mix jobs', () => {
    const { store } = openStore();
    store.createJob({ tasks: [{ key: 'a', shell: 'x' }] });
    store.createJob({ tasks: [{ key: 'b', shell: 'x' }] });
    store.cancelJob(1);
    store.cancelJob(2);
    expect(store.resultsPage(2, 0, 100).lines.map((l) => l.key)).toEqual(['b']);
  });
});
