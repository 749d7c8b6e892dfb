/**
 * HTTP API: the happy paths of every route in CONTRACT's table (except the WebSocket at
 * GET /v1/worker), through supertest against the real app on a real SQLite file.
 */
import type { Response } from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { auth, startManager, type TestManager } from './helpers.js';
import { NDJSON, allTasks, api, claim, createJob, expectError, finish, hello, leaseOf, ndjsonGet, report } from './api-support.js';

let m: TestManager;
beforeEach(async () => {
  m = await startManager();
});
afterEach(async () => {
  await m.close();
});

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

describe('POST /v1/jobs', () => {
  it('creates a sealed job with its tasks and answers 201 Job', async () => {
    const res = await api(m)
      .post('/v1/jobs')
      .set(auth())
      .send({ name: 'sweep', tasks: [{ key: 'a', command: ['echo', 'a'] }, { key: 'b', shell: 'echo b', priority: 5, slots: 2, requires: ['gpu'], retries: 2, timeout: '30s', cwd: '/tmp', meta: { x: [1, 2] } }] });
    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual({
      id: expect.stringMatching(/^job-\d+$/),
      name: 'sweep',
      state: 'active',
      sealed: true,
      createdAt: expect.stringMatching(ISO),
      finishedAt: null,
      counts: { queued: 2, running: 0, succeeded: 0, failed: 0, cancelled: 0, total: 2 },
    });
    const tasks = await allTasks(m, res.body.id);
    expect(tasks.map((t) => [t.key, t.state, t.priority, t.slots])).toEqual([['a', 'queued', 0, 1], ['b', 'queued', 5, 2]]);
    expect(tasks[1]!.spec).toEqual({ key: 'b', shell: 'echo b', priority: 5, slots: 2, requires: ['gpu'], retries: 2, timeout: '30s', cwd: '/tmp', meta: { x: [1, 2] } });
  });

  it('applies defaults under each task, merging env key by key', async () => {
    const ok = await createJob(m, {
      defaults: { shell: 'run.sh', env: { A: 'default', B: 'default' }, timeout: '5m', retries: 3, priority: 7 },
      tasks: [{ key: 't1' }, { key: 't2', env: { B: 'task', C: 'task' }, priority: 1 }],
    });
    const tasks = await allTasks(m, ok.id);
    expect(tasks[0]!.spec).toEqual({ key: 't1', shell: 'run.sh', env: { A: 'default', B: 'default' }, timeout: '5m', retries: 3, priority: 7 });
    expect(tasks[0]!.priority).toBe(7);
    expect(tasks[1]!.spec).toEqual({ key: 't2', shell: 'run.sh', env: { A: 'default', B: 'task', C: 'task' }, timeout: '5m', retries: 3, priority: 1 });
    expect(tasks[1]!.priority).toBe(1);
  });

  it('with open:true keeps the job unsealed so tasks can be appended, until sealed', async () => {
    const job = await createJob(m, { name: 'open one', open: true, defaults: { command: ['sim'], env: { K: 'd' } } });
    expect(job).toMatchObject({ name: 'open one', state: 'active', sealed: false, counts: { total: 0 } });

    const add = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).send({ tasks: [{ key: 'x', env: { L: 't' } }] });
    expect(add.status).toBe(200);
    expect(add.body).toEqual({ accepted: 1, duplicates: 0 });
    const [task] = await allTasks(m, job.id);
    // Defaults stored at creation apply to tasks appended later too.
    expect(task!.spec).toEqual({ key: 'x', command: ['sim'], env: { K: 'd', L: 't' } });

    const sealed = await api(m).post(`/v1/jobs/${job.id}/seal`).set(auth());
    expect(sealed.status).toBe(200);
    expect(sealed.body).toMatchObject({ id: job.id, sealed: true, state: 'active', counts: { queued: 1, total: 1 } });
  });

  it('an empty sealed job is finished at once; an empty open job stays active', async () => {
    const sealed = await createJob(m, {});
    expect(sealed).toMatchObject({ sealed: true, state: 'succeeded', counts: { total: 0 } });
    expect((sealed as Record<string, unknown>).finishedAt).toMatch(ISO);
    const open = await createJob(m, { open: true });
    expect(open).toMatchObject({ sealed: false, state: 'active' });
  });

  it('counts repeated keys inside one body as duplicates: the first wins', async () => {
    const job = await createJob(m, { tasks: [{ key: 'k', shell: 'first' }, { key: 'k', shell: 'second' }, { shell: 'no key' }, { shell: 'no key' }] });
    expect(job.counts.total).toBe(3);
    const tasks = await allTasks(m, job.id);
    expect(tasks.map((t) => [t.key, t.spec.shell])).toEqual([['k', 'first'], [null, 'no key'], [null, 'no key']]);
  });

  it('accepts exactly 10,000 tasks in one JSON body', async () => {
    const tasks = Array.from({ length: 10_000 }, (_, i) => ({ key: `k${i}`, shell: 'true' }));
    const job = await createJob(m, { tasks });
    expect(job.counts).toMatchObject({ queued: 10_000, total: 10_000 });
  }, 60_000);
});

describe('POST /v1/jobs/:id/tasks', () => {
  it('accepts NDJSON (application/x-ndjson), skipping blank lines, with CRLF line ends', async () => {
    const job = await createJob(m, { open: true });
    const body = '{"key":"a","shell":"echo a"}\n\n{"key":"b","command":["echo","b"]}\r\n   \n{"key":"c","shell":"c"}';
    const res = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).set('Content-Type', NDJSON).send(body);
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ accepted: 3, duplicates: 0 });
    const tasks = await allTasks(m, job.id);
    expect(tasks.map((t) => t.key)).toEqual(['a', 'b', 'c']);
    expect(tasks[1]!.spec).toEqual({ key: 'b', command: ['echo', 'b'] });
  });

  it('accepts NDJSON with a charset parameter on the content type', async () => {
    const job = await createJob(m, { open: true });
    const res = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).set('Content-Type', `${NDJSON}; charset=utf-8`).send('{"shell":"x"}\n');
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ accepted: 1, duplicates: 0 });
  });

  it('accepts JSON {tasks:[...]}', async () => {
    const job = await createJob(m, { open: true });
    const res = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).send({ tasks: [{ key: 'a', shell: 'a' }, { shell: 'b' }] });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ accepted: 2, duplicates: 0 });
    const got = await api(m).get(`/v1/jobs/${job.id}`).set(auth());
    expect(got.body.counts).toMatchObject({ queued: 2, total: 2 });
  });

  it('is idempotent per key across requests and formats: accepted and duplicates are counted', async () => {
    const job = await createJob(m, { open: true });
    const first = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).send({ tasks: [{ key: 'a', shell: 'a' }, { key: 'b', shell: 'b' }, { key: 'a', shell: 'again' }] });
    expect(first.body).toEqual({ accepted: 2, duplicates: 1 });

    const ndjson = ['a', 'b', 'c', 'd'].map((k) => JSON.stringify({ key: k, shell: k })).join('\n') + '\n';
    const second = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).set('Content-Type', NDJSON).send(ndjson);
    expect(second.body).toEqual({ accepted: 2, duplicates: 2 });

    const third = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).set('Content-Type', NDJSON).send(ndjson);
    expect(third.body).toEqual({ accepted: 0, duplicates: 4 });

    // Tasks without a key are never duplicates.
    const keyless = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).send({ tasks: [{ shell: 'x' }, { shell: 'x' }] });
    expect(keyless.body).toEqual({ accepted: 2, duplicates: 0 });

    const tasks = await allTasks(m, job.id);
    expect(tasks.map((t) => t.key)).toEqual(['a', 'b', 'c', 'd', null, null]);
    expect(tasks[0]!.spec.shell).toBe('a');
  });

  it('a cancelled open job is sealed and refuses more tasks with 409 JOB_SEALED', async () => {
    const job = await createJob(m, { open: true, tasks: [{ key: 'a', shell: 'a' }] });
    const cancelled = await api(m).post(`/v1/jobs/${job.id}/cancel`).set(auth());
    expect(cancelled.body).toMatchObject({ state: 'cancelled', sealed: true });
    const res = await api(m).post(`/v1/jobs/${job.id}/tasks`).set(auth()).send({ tasks: [{ key: 'b', shell: 'b' }] });
    expectError(res, 409, 'JOB_SEALED', job.id);
    const got = await api(m).get(`/v1/jobs/${job.id}`).set(auth());
    expect(got.body).toMatchObject({ state: 'cancelled', counts: { cancelled: 1, total: 1 } });
  });
});

describe('POST /v1/jobs/:id/seal', () => {
  it('seals an open job, finishing it when all tasks are terminal; sealing twice is harmless', async () => {
    const job = await createJob(m, { open: true, tasks: [{ key: 'a', shell: 'a' }] });
    const [a] = claim(m, 1);
    finish(m, a!, report());
    const before = await api(m).get(`/v1/jobs/${job.id}`).set(auth());
    expect(before.body).toMatchObject({ state: 'active', sealed: false, counts: { succeeded: 1 } });

    const sealed = await api(m).post(`/v1/jobs/${job.id}/seal`).set(auth());
    expect(sealed.status).toBe(200);
    expect(sealed.body).toMatchObject({ id: job.id, state: 'succeeded', sealed: true, finishedAt: expect.stringMatching(ISO) });

    // A script's POST with Content-Type: application/json and no body is fine.
    const again = await api(m).post(`/v1/jobs/${job.id}/seal`).set(auth()).set('Content-Type', 'application/json');
    expect(again.status).toBe(200);
    expect(again.body).toEqual(sealed.body);
  });
});

describe('GET /v1/jobs', () => {
  it('lists jobs newest first with cursor pagination and a state filter', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await createJob(m, { name: `j${i}`, tasks: [{ shell: 'x' }] })).id);
    const empty = await createJob(m, {}); // succeeded at once
    await api(m).post(`/v1/jobs/${ids[1]}/cancel`).set(auth()).expect(200);

    const all = await api(m).get('/v1/jobs').set(auth());
    expect(all.status).toBe(200);
    expect(all.body.nextCursor).toBeNull();
    expect(all.body.jobs.map((j: { id: string }) => j.id)).toEqual([empty.id, ...[...ids].reverse()]);

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res: Response = await api(m).get('/v1/jobs').query({ limit: 2, ...(cursor ? { cursor } : {}) }).set(auth());
      expect(res.status).toBe(200);
      expect(res.body.jobs.length).toBeLessThanOrEqual(2);
      seen.push(...res.body.jobs.map((j: { id: string }) => j.id));
      cursor = res.body.nextCursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual(all.body.jobs.map((j: { id: string }) => j.id));

    const active = await api(m).get('/v1/jobs?state=active').set(auth());
    expect(active.body.jobs.map((j: { id: string }) => j.id)).toEqual([ids[4], ids[3], ids[2], ids[0]]);
    const cancelled = await api(m).get('/v1/jobs?state=cancelled').set(auth());
    expect(cancelled.body).toEqual({ jobs: [expect.objectContaining({ id: ids[1], state: 'cancelled' })], nextCursor: null });
    const succeeded = await api(m).get('/v1/jobs?state=succeeded').set(auth());
    expect(succeeded.body.jobs.map((j: { id: string }) => j.id)).toEqual([empty.id]);
    const failed = await api(m).get('/v1/jobs?state=failed').set(auth());
    expect(failed.body).toEqual({ jobs: [], nextCursor: null });

    const filteredPage = await api(m).get('/v1/jobs?state=active&limit=3').set(auth());
    expect(filteredPage.body.jobs).toHaveLength(3);
    const rest = await api(m).get(`/v1/jobs?state=active&limit=3&cursor=${filteredPage.body.nextCursor}`).set(auth());
    expect(rest.body.jobs.map((j: { id: string }) => j.id)).toEqual([ids[0]]);
    expect(rest.body.nextCursor).toBeNull();
  });

  it('answers an empty list when there are no jobs', async () => {
    const res = await api(m).get('/v1/jobs').set(auth());
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ jobs: [], nextCursor: null });
  });
});

describe('GET /v1/jobs/:id', () => {
  it('answers the Job with counts that follow task states', async () => {
    const job = await createJob(m, { name: 'n', tasks: [{ shell: 'a' }, { shell: 'b' }, { shell: 'c' }, { shell: 'd' }] });
    const [a, b, c] = claim(m, 3);
    finish(m, a!, report());
    finish(m, b!, report({ exitCode: 2 }));
    void c;
    const res = await api(m).get(`/v1/jobs/${job.id}`).set(auth());
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ ...job, counts: { queued: 1, running: 1, succeeded: 1, failed: 1, cancelled: 0, total: 4 } });
  });
});

describe('GET /v1/jobs/:id/tasks', () => {
  it('lists tasks in submission order with a state filter and cursor pagination', async () => {
    const job = await createJob(m, { tasks: Array.from({ length: 7 }, (_, i) => ({ key: `t${i}`, shell: 'x' })) });
    const claimed = claim(m, 3); // t0, t1, t2 (same priority: FIFO)
    expect(claimed.map((a) => a.key)).toEqual(['t0', 't1', 't2']);
    finish(m, claimed[0]!, report());
    finish(m, claimed[1]!, report({ exitCode: 1 }));

    const page1 = await api(m).get(`/v1/jobs/${job.id}/tasks?limit=3`).set(auth());
    expect(page1.status).toBe(200);
    expect(page1.body.tasks.map((t: { key: string }) => t.key)).toEqual(['t0', 't1', 't2']);
    expect(page1.body.nextCursor).toEqual(expect.any(String));
    const page2 = await api(m).get(`/v1/jobs/${job.id}/tasks?limit=3&cursor=${page1.body.nextCursor}`).set(auth());
    expect(page2.body.tasks.map((t: { key: string }) => t.key)).toEqual(['t3', 't4', 't5']);
    const page3 = await api(m).get(`/v1/jobs/${job.id}/tasks?limit=3&cursor=${page2.body.nextCursor}`).set(auth());
    expect(page3.body).toEqual({ tasks: [expect.objectContaining({ key: 't6' })], nextCursor: null });

    const byState = async (state: string) =>
      (await api(m).get(`/v1/jobs/${job.id}/tasks?state=${state}`).set(auth()).expect(200)).body.tasks.map((t: { key: string }) => t.key);
    expect(await byState('succeeded')).toEqual(['t0']);
    expect(await byState('failed')).toEqual(['t1']);
    expect(await byState('running')).toEqual(['t2']);
    expect(await byState('queued')).toEqual(['t3', 't4', 't5', 't6']);
    expect(await byState('cancelled')).toEqual([]);

    const q1 = await api(m).get(`/v1/jobs/${job.id}/tasks?state=queued&limit=2`).set(auth());
    const q2 = await api(m).get(`/v1/jobs/${job.id}/tasks?state=queued&limit=2&cursor=${q1.body.nextCursor}`).set(auth());
    expect([...q1.body.tasks, ...q2.body.tasks].map((t: { key: string }) => t.key)).toEqual(['t3', 't4', 't5', 't6']);
    expect(q2.body.nextCursor).toBeNull();

    const t0 = page1.body.tasks[0];
    expect(t0).toMatchObject({
      id: expect.stringMatching(/^task-\d+$/),
      jobId: job.id,
      key: 't0',
      state: 'succeeded',
      attempts: 1,
      workerId: 'w1',
      startedAt: expect.stringMatching(ISO),
      finishedAt: expect.stringMatching(ISO),
      result: { exitCode: 0, signal: null, durationMs: 1234, stdoutTail: 'out', stderrTail: '', output: null, error: null },
    });
    expect(page1.body.tasks[2]).toMatchObject({ state: 'running', result: null, finishedAt: null });
  });
});

describe('GET /v1/jobs/:id/results', () => {
  it('streams one NDJSON line per terminal task, in task order, and nothing for others', async () => {
    const job = await createJob(m, { tasks: ['ok', 'bad', 'run', 'queued', 'cancelled', 'keyless'].map((k) => (k === 'keyless' ? { shell: 'x' } : { key: k, shell: 'x' })) });
    const tasks = await allTasks(m, job.id);
    const [ok, bad, run] = claim(m, 3);
    finish(m, ok!, report({ output: { score: 0.5, tags: ['a'] }, durationMs: 10 }));
    finish(m, bad!, report({ exitCode: 3, durationMs: 20, stderrTail: 'boom' }));
    void run;
    await api(m).post(`/v1/tasks/${tasks[4]!.id}/cancel`).set(auth()).expect(200);
    const [keyless] = claim(m, 2).filter((a) => a.key === null);
    finish(m, keyless!, report({ durationMs: 0 }));

    const { res, lines } = await ndjsonGet(m, `/v1/jobs/${job.id}/results`);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/x-ndjson/);
    expect(lines).toEqual([
      { taskId: tasks[0]!.id, key: 'ok', state: 'succeeded', exitCode: 0, output: { score: 0.5, tags: ['a'] }, durationMs: 10, attempts: 1, error: null },
      { taskId: tasks[1]!.id, key: 'bad', state: 'failed', exitCode: 3, output: null, durationMs: 20, attempts: 1, error: { code: 'NONZERO_EXIT', message: 'exited with code 3' } },
      { taskId: tasks[4]!.id, key: 'cancelled', state: 'cancelled', exitCode: null, output: null, durationMs: null, attempts: 0, error: null },
      { taskId: tasks[5]!.id, key: null, state: 'succeeded', exitCode: 0, output: null, durationMs: 0, attempts: 1, error: null },
    ]);
  });

  it('is empty (not an error) for a job without terminal tasks', async () => {
    const job = await createJob(m, { tasks: [{ shell: 'x' }] });
    const { res, text } = await ndjsonGet(m, `/v1/jobs/${job.id}/results`);
    expect(res.status).toBe(200);
    expect(text).toBe('');
  });

  it('streams more than one page (over 1,000 lines) completely', async () => {
    const job = await createJob(m, { tasks: Array.from({ length: 2_500 }, (_, i) => ({ key: `k${i}`, shell: 'x' })) });
    await api(m).post(`/v1/jobs/${job.id}/cancel`).set(auth()).expect(200);
    const { lines } = await ndjsonGet(m, `/v1/jobs/${job.id}/results`);
    expect(lines).toHaveLength(2_500);
    expect(lines.map((l) => l.key)).toEqual(Array.from({ length: 2_500 }, (_, i) => `k${i}`));
    expect(new Set(lines.map((l) => l.state))).toEqual(new Set(['cancelled']));
  }, 30_000);
});

describe('POST /v1/jobs/:id/cancel', () => {
  it('cancels queued and running tasks, leaves finished ones, and answers the Job', async () => {
    const job = await createJob(m, { tasks: [{ key: 'done', shell: 'x' }, { key: 'run', shell: 'x' }, { key: 'q1', shell: 'x' }, { key: 'q2', shell: 'x' }] });
    const [done, run] = claim(m, 2);
    finish(m, done!, report());

    const res = await api(m).post(`/v1/jobs/${job.id}/cancel`).set(auth());
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: job.id, state: 'cancelled', finishedAt: expect.stringMatching(ISO), counts: { queued: 0, running: 0, succeeded: 1, failed: 0, cancelled: 3, total: 4 } });

    const tasks = await allTasks(m, job.id);
    expect(tasks.map((t) => [t.key, t.state])).toEqual([['done', 'succeeded'], ['run', 'cancelled'], ['q1', 'cancelled'], ['q2', 'cancelled']]);
    const runTask = await api(m).get(`/v1/tasks/${run!.taskId}`).set(auth());
    expect(runTask.body.history).toEqual([expect.objectContaining({ attempt: 1, outcome: 'cancelled', error: { code: 'CANCELLED', message: 'job cancelled' } })]);
    // The cancelled lease is void: the worker's late report is stale and changes nothing.
    expect(m.store.completeTask('w1', leaseOf(run!), report()).status).toBe('stale');

    // Cancelling again changes nothing.
    const again = await api(m).post(`/v1/jobs/${job.id}/cancel`).set(auth());
    expect(again.body).toEqual(res.body);
  });
});

describe('POST /v1/jobs/:id/retry', () => {
  it('requeues failed tasks (the default) with no body, and cancelled ones on request', async () => {
    const job = await createJob(m, { tasks: [{ key: 'ok', shell: 'x' }, { key: 'f1', shell: 'x' }, { key: 'f2', shell: 'x' }, { key: 'c', shell: 'x' }] });
    const tasks = await allTasks(m, job.id);
    await api(m).post(`/v1/tasks/${tasks[3]!.id}/cancel`).set(auth()).expect(200);
    const [ok, f1, f2] = claim(m, 3);
    finish(m, ok!, report());
    finish(m, f1!, report({ exitCode: 1 }));
    finish(m, f2!, report({ exitCode: null, signal: 'SIGKILL', timedOut: true }));
    expect((await api(m).get(`/v1/jobs/${job.id}`).set(auth())).body).toMatchObject({ state: 'failed', counts: { succeeded: 1, failed: 2, cancelled: 1 } });

    const retry = await api(m).post(`/v1/jobs/${job.id}/retry`).set(auth());
    expect(retry.status, retry.text).toBe(200);
    expect(retry.body).toEqual({ requeued: 2 });
    expect((await api(m).get(`/v1/jobs/${job.id}`).set(auth())).body).toMatchObject({ state: 'active', finishedAt: null, counts: { queued: 2, succeeded: 1, failed: 0, cancelled: 1 } });

    const none = await api(m).post(`/v1/jobs/${job.id}/retry`).set(auth()).send({ state: 'failed' });
    expect(none.body).toEqual({ requeued: 0 });

    const cancelled = await api(m).post(`/v1/jobs/${job.id}/retry`).set(auth()).send({ state: 'cancelled' });
    expect(cancelled.body).toEqual({ requeued: 1 });
    const emptyObject = await api(m).post(`/v1/jobs/${job.id}/retry`).set(auth()).send({});
    expect(emptyObject.body).toEqual({ requeued: 0 });

    const states = (await allTasks(m, job.id)).map((t) => [t.key, t.state]);
    expect(states).toEqual([['ok', 'succeeded'], ['f1', 'queued'], ['f2', 'queued'], ['c', 'queued']]);
    // A retried task runs again: its next attempt is number 2.
    const again = claim(m, 10);
    expect(again.map((a) => [a.key, a.attempt])).toEqual([['f1', 2], ['f2', 2], ['c', 1]]);
  });
});

describe('GET /v1/tasks/:id', () => {
  it('answers the Task with one history entry per attempt', async () => {
    const job = await createJob(m, { tasks: [{ key: 'a', shell: 'flaky', retries: 1 }] });
    const [first] = claim(m, 1);
    finish(m, first!, report({ exitCode: 7, stderrTail: 'oops' }));
    const mid = await api(m).get(`/v1/tasks/${first!.taskId}`).set(auth());
    expect(mid.body).toMatchObject({ state: 'queued', attempts: 1, result: { exitCode: 7 } });

    const [second] = claim(m, 1);
    expect(second!.attempt).toBe(2);
    finish(m, second!, report({ output: { ok: true } }));

    const res = await api(m).get(`/v1/tasks/${first!.taskId}`).set(auth());
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      id: first!.taskId,
      jobId: job.id,
      key: 'a',
      state: 'succeeded',
      priority: 0,
      slots: 1,
      spec: { key: 'a', shell: 'flaky', retries: 1 },
      attempts: 2,
      createdAt: expect.stringMatching(ISO),
      startedAt: expect.stringMatching(ISO),
      finishedAt: expect.stringMatching(ISO),
      workerId: 'w1',
      result: { exitCode: 0, signal: null, durationMs: 1234, stdoutTail: 'out', stderrTail: '', output: { ok: true }, error: null },
      history: [
        { attempt: 1, workerId: 'w1', startedAt: expect.stringMatching(ISO), endedAt: expect.stringMatching(ISO), outcome: 'failed', exitCode: 7, error: { code: 'NONZERO_EXIT', message: 'exited with code 7' } },
        { attempt: 2, workerId: 'w1', startedAt: expect.stringMatching(ISO), endedAt: expect.stringMatching(ISO), outcome: 'succeeded', exitCode: 0, error: null },
      ],
    });
  });

  it('has an empty history before the first attempt', async () => {
    const job = await createJob(m, { tasks: [{ shell: 'x' }] });
    const [task] = await allTasks(m, job.id);
    const res = await api(m).get(`/v1/tasks/${task!.id}`).set(auth());
    expect(res.body).toMatchObject({ state: 'queued', attempts: 0, startedAt: null, workerId: null, result: null, history: [] });
  });
});

describe('POST /v1/tasks/:id/cancel', () => {
  it('cancels a queued or running task; a finished one is unchanged', async () => {
    const job = await createJob(m, { tasks: [{ key: 'done', shell: 'x' }, { key: 'run', shell: 'x' }, { key: 'q', shell: 'x' }] });
    const [done, run] = claim(m, 2);
    finish(m, done!, report());
    const q = (await allTasks(m, job.id))[2]!;

    const cq = await api(m).post(`/v1/tasks/${q.id}/cancel`).set(auth());
    expect(cq.status).toBe(200);
    expect(cq.body).toMatchObject({ id: q.id, state: 'cancelled', finishedAt: expect.stringMatching(ISO), history: [] });

    const cr = await api(m).post(`/v1/tasks/${run!.taskId}/cancel`).set(auth());
    expect(cr.body).toMatchObject({ id: run!.taskId, state: 'cancelled', history: [expect.objectContaining({ outcome: 'cancelled', error: { code: 'CANCELLED', message: 'task cancelled' } })] });

    const cd = await api(m).post(`/v1/tasks/${done!.taskId}/cancel`).set(auth());
    expect(cd.status).toBe(200);
    expect(cd.body).toMatchObject({ id: done!.taskId, state: 'succeeded', result: { exitCode: 0 } });

    // With every task terminal and one succeeded, the sealed job has failed (cancellations count as not succeeded).
    const got = await api(m).get(`/v1/jobs/${job.id}`).set(auth());
    expect(got.body).toMatchObject({ state: 'failed', counts: { succeeded: 1, cancelled: 2, queued: 0, running: 0 } });
  });
});

describe('workers', () => {
  it('GET /v1/workers lists registered workers; GET /v1/workers/:id answers one', async () => {
    expect((await api(m).get('/v1/workers').set(auth())).body).toEqual({ workers: [] });
    const vm = { vmId: 'vm-1', resourceId: '/subscriptions/s/rg/r', scaleSet: 'ss', instanceId: '3', name: 'ss_3', vmSize: 'Standard_D2s_v5', location: 'westeurope', zone: '1', priority: 'Spot', provisioningState: 'Succeeded' };
    const w1 = m.store.registerWorker(hello({ name: 'alpha', vm }), 'session-1');
    const w2 = m.store.registerWorker(hello({ name: 'beta', hostname: 'host-2', slots: 2, labels: [] }), 'session-2');

    const list = await api(m).get('/v1/workers').set(auth());
    expect(list.status).toBe(200);
    expect(list.body.workers.map((w: { id: string }) => w.id).sort()).toEqual([w1, w2].sort());

    const one = await api(m).get(`/v1/workers/${w1}`).set(auth());
    expect(one.status).toBe(200);
    expect(one.body).toEqual({
      id: w1,
      name: 'alpha',
      hostname: 'host-1',
      state: 'ready',
      slots: 4,
      usedSlots: 0,
      labels: ['gpu'],
      vm,
      version: '9.9.9',
      problem: null,
      connectedAt: expect.stringMatching(ISO),
      lastHeartbeatAt: expect.stringMatching(ISO),
      tasksSucceeded: 0,
      tasksFailed: 0,
    });
    expect((await api(m).get(`/v1/workers/${w2}`).set(auth())).body).toMatchObject({ name: 'beta', vm: null, labels: [], slots: 2 });
  });

  it('reflects used slots, busy state and task tallies', async () => {
    const w = m.store.registerWorker(hello(), 'session-1');
    await createJob(m, { tasks: [{ shell: 'a', slots: 2 }, { shell: 'b' }, { shell: 'c' }] });
    const [a, b] = m.store.claimTasks({ workerId: w, sessionId: 'session-1' }, [], 3);
    finish(m, a!, report({ exitCode: 1 }), w);
    void b;
    const res = await api(m).get(`/v1/workers/${w}`).set(auth());
    expect(res.body).toMatchObject({ state: 'busy', usedSlots: 1, tasksSucceeded: 0, tasksFailed: 1 });
  });

  it('POST /v1/workers/:id/drain marks the worker draining and answers the Worker', async () => {
    const w = m.store.registerWorker(hello(), 'session-1');
    const res = await api(m).post(`/v1/workers/${w}/drain`).set(auth());
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: w, state: 'draining' });
    expect((await api(m).get(`/v1/workers/${w}`).set(auth())).body.state).toBe('draining');
    // A gone worker stays gone.
    m.store.setWorkerState(w, 'gone');
    const gone = await api(m).post(`/v1/workers/${w}/drain`).set(auth());
    expect(gone.status).toBe(200);
    expect(gone.body).toMatchObject({ id: w, state: 'gone' });
  });
});

describe('system routes (no auth)', () => {
  it('GET /healthz answers {"status":"ok"}', async () => {
    const res = await api(m).get('/healthz');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ok' });
  });

  it('GET /metrics is Prometheus text whose pullman_tasks gauge matches the task states', async () => {
    const a = await createJob(m, { tasks: Array.from({ length: 6 }, (_, i) => ({ key: `a${i}`, shell: 'x' })) });
    await createJob(m, { tasks: [{ shell: 'y' }, { shell: 'z' }] });
    const empty = await createJob(m, { open: true });
    const claimed = claim(m, 4);
    finish(m, claimed[0]!, report());
    finish(m, claimed[1]!, report());
    finish(m, claimed[2]!, report({ exitCode: 9 }));
    const queuedOfA = (await allTasks(m, a.id, '&state=queued'))[0]!;
    await api(m).post(`/v1/tasks/${queuedOfA.id}/cancel`).set(auth()).expect(200);
    void empty;
    // Expected: 8 tasks; 2 succeeded, 1 failed, 1 running, 1 cancelled, 3 queued.

    const res = await api(m).get('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    const gauge = (name: string, state: string) => {
      const m1 = new RegExp(`^${name}\\{state="${state}"\\} (\\S+)$`, 'm').exec(res.text);
      expect(m1, `${name}{state="${state}"} in\n${res.text}`).not.toBeNull();
      return Number(m1![1]);
    };
    expect(res.text).toContain('# TYPE pullman_tasks gauge');
    expect({
      queued: gauge('pullman_tasks', 'queued'),
      running: gauge('pullman_tasks', 'running'),
      succeeded: gauge('pullman_tasks', 'succeeded'),
      failed: gauge('pullman_tasks', 'failed'),
      cancelled: gauge('pullman_tasks', 'cancelled'),
    }).toEqual({ queued: 3, running: 1, succeeded: 2, failed: 1, cancelled: 1 });

    // And they agree with the sum of the jobs' counts from the API.
    const jobs = (await api(m).get('/v1/jobs').set(auth())).body.jobs as Array<{ counts: Record<string, number> }>;
    for (const s of ['queued', 'running', 'succeeded', 'failed', 'cancelled']) {
      expect(gauge('pullman_tasks', s)).toBe(jobs.reduce((n, j) => n + j.counts[s]!, 0));
    }
    expect(gauge('pullman_jobs', 'active')).toBe(3);
  });

  it('GET /docs serves the UI and /docs/json documents every route of the contract', async () => {
    const ui = await api(m).get('/docs').redirects(2);
    expect(ui.status).toBe(200);
    expect(ui.headers['content-type']).toMatch(/^text\/html/);

    const res = await api(m).get('/docs/json');
    expect(res.status).toBe(200);
    expect(res.body.openapi).toMatch(/^3\./);
    // CONTRACT.md "HTTP API" table, in order. GET /docs is the UI that serves this document.
    const contract = [
      'GET /healthz',
      'GET /metrics',
      'POST /v1/jobs',
      'POST /v1/jobs/:id/tasks',
      'POST /v1/jobs/:id/seal',
      'GET /v1/jobs',
      'GET /v1/jobs/:id',
      'GET /v1/jobs/:id/tasks',
      'GET /v1/jobs/:id/results',
      'POST /v1/jobs/:id/cancel',
      'POST /v1/jobs/:id/retry',
      'GET /v1/tasks/:id',
      'POST /v1/tasks/:id/cancel',
      'GET /v1/workers',
      'GET /v1/workers/:id',
      'POST /v1/workers/:id/drain',
      'GET /v1/worker',
    ];
    const paths = res.body.paths as Record<string, Record<string, unknown>>;
    const missing: string[] = [];
    for (const route of contract) {
      const [method, path] = route.split(' ') as [string, string];
      const openapiPath = path.replace(/:(\w+)/g, '{$1}');
      if (!paths[openapiPath]?.[method.toLowerCase()]) missing.push(route);
    }
    expect(missing).toEqual([]);
    expect(paths['/v1/jobs/{id}']!.get).toMatchObject({ parameters: [expect.objectContaining({ name: 'id', in: 'path', required: true })] });
    expect(Object.keys((paths['/v1/jobs/{id}/tasks']!.post as { requestBody: { content: object } }).requestBody.content).sort()).toEqual(['application/json', NDJSON]);
  });
});
