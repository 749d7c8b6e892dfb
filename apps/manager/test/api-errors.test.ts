/**
 * HTTP API errors: every failure is `{"error":{"code","message"}}` with a stable code and the
 * status CONTRACT.md gives it (400, 401, 403, 404, 409, 413, 415).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH } from '@pullman/protocol';
import { ADMIN, WORKER, auth, startManager, type TestManager } from './helpers.js';
import { NDJSON, allTasks, api, claim, createJob, expectError, hello } from './api-support.js';

let m: TestManager;
beforeEach(async () => {
  m = await startManager();
});
afterEach(async () => {
  await m.close();
});

const post = (path: string) => api(m).post(path).set(auth());
const get = (path: string) => api(m).get(path).set(auth());

describe('400 invalid input', () => {
  it('rejects a TaskSpec field of the wrong type, naming the field', async () => {
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 5 }] }), 400, 'INVALID_INPUT', 'body.tasks.0.shell');
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x' }, { command: 'not an array' }] }), 400, 'INVALID_INPUT', 'body.tasks.1.command');
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', retries: -1 }] }), 400, 'INVALID_INPUT', 'body.tasks.0.retries');
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', env: { A: 1 } }] }), 400, 'INVALID_INPUT', 'body.tasks.0.env.A');
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', requires: ['has space'] }] }), 400, 'INVALID_INPUT', 'body.tasks.0.requires.0');
    expectError(await post('/v1/jobs').send({ name: 7 }), 400, 'INVALID_INPUT', 'body.name');
    expectError(await post('/v1/jobs').send({ open: 'yes' }), 400, 'INVALID_INPUT', 'body.open');
    expectError(await post('/v1/jobs').send({ tasks: { shell: 'x' } }), 400, 'INVALID_INPUT', 'body.tasks');
    expectError(await post('/v1/jobs').send([{ shell: 'x' }]), 400, 'INVALID_INPUT', 'body');
    // Nothing was created by any of the above.
    expect((await get('/v1/jobs')).body.jobs).toEqual([]);
  });

  it('rejects unknown fields, naming them, in a task, in defaults, at the top level and in {tasks}', async () => {
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', comand: ['a'] }] }), 400, 'INVALID_INPUT', /body\.tasks\.0: unknown field "comand"/);
    expectError(await post('/v1/jobs').send({ defaults: { shell: 'x', timeot: '5s' } }), 400, 'INVALID_INPUT', /body\.defaults: unknown field "timeot"/);
    // `key` is per task; it is not a default.
    expectError(await post('/v1/jobs').send({ defaults: { key: 'k' } }), 400, 'INVALID_INPUT', '"key"');
    expectError(await post('/v1/jobs').send({ nmae: 'typo' }), 400, 'INVALID_INPUT', '"nmae"');
    const job = await createJob(m, { open: true });
    expectError(await post(`/v1/jobs/${job.id}/tasks`).send({ tasks: [{ shell: 'x', extra: 1 }] }), 400, 'INVALID_INPUT', '"extra"');
    expectError(await post(`/v1/jobs/${job.id}/tasks`).send({ tasks: [], more: true }), 400, 'INVALID_INPUT', '"more"');
    expectError(await post(`/v1/jobs/${job.id}/tasks`).send({ task: [{ shell: 'x' }] }), 400, 'INVALID_INPUT');
    expectError(await post(`/v1/jobs/${job.id}/retry`).send({ state: 'failed', force: true }), 400, 'INVALID_INPUT', '"force"');
    expect((await get(`/v1/jobs/${job.id}`)).body.counts.total).toBe(0);
  });

  it('refuses a NUL byte in what a process would receive (INVALID_TASK_SPEC): it would fail on every worker', async () => {
    expectError(await post('/v1/jobs').send({ tasks: [{ command: ['echo', 'a\u0000b'] }] }), 400, 'INVALID_TASK_SPEC', /tasks\.0\.command\.1: contains a NUL byte/);
    const job = await createJob(m, { open: true });
    expectError(await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send('{"shell":"true"}\n{"command":["true"],"env":{"X":"\\u0000"}}\n'), 400, 'INVALID_TASK_SPEC', /line 2\.env\.X: contains a NUL byte/);
  });

  it('requires exactly one of command and shell (INVALID_TASK_SPEC), after applying defaults', async () => {
    expectError(await post('/v1/jobs').send({ tasks: [{ key: 'a', command: ['a'], shell: 'a' }] }), 400, 'INVALID_TASK_SPEC', /tasks\.0: .*both/);
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'ok' }, { key: 'b' }] }), 400, 'INVALID_TASK_SPEC', /tasks\.1: .*neither/);
    expectError(await post('/v1/jobs').send({ defaults: { shell: 'x' }, tasks: [{ command: ['y'] }] }), 400, 'INVALID_TASK_SPEC', 'both');
    expectError(await post('/v1/jobs').send({ defaults: { env: { A: '1' } }, tasks: [{ key: 'a' }] }), 400, 'INVALID_TASK_SPEC', 'neither');

    const job = await createJob(m, { open: true, defaults: { command: ['run'] } });
    expectError(await post(`/v1/jobs/${job.id}/tasks`).send({ tasks: [{ shell: 'x' }] }), 400, 'INVALID_TASK_SPEC', 'both');
    expectError(await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send('{"key":"a"}\n{"shell":"x"}\n'), 400, 'INVALID_TASK_SPEC', /line 2: .*both/);
    expect((await get('/v1/jobs')).body.jobs).toHaveLength(1);
    expect((await get(`/v1/jobs/${job.id}`)).body.counts.total).toBe(0);
  });

  it('rejects bad timeouts', async () => {
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', timeout: 'soon' }] }), 400, 'INVALID_INPUT', 'body.tasks.0.timeout');
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', timeout: -5 }] }), 400, 'INVALID_INPUT', 'body.tasks.0.timeout');
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', timeout: 1.5 }] }), 400, 'INVALID_INPUT', 'body.tasks.0.timeout');
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', timeout: '0s' }] }), 400, 'INVALID_TASK_SPEC', 'tasks.0.timeout');
    expectError(await post('/v1/jobs').send({ tasks: [{ shell: 'x', timeout: '9999h' }] }), 400, 'INVALID_INPUT', 'tasks.0.timeout');
    expectError(await post('/v1/jobs').send({ defaults: { shell: 'x', timeout: '10 minutes' } }), 400, 'INVALID_INPUT', 'body.defaults.timeout');
    // Valid forms are accepted.
    const ok = await createJob(m, { tasks: ['500ms', '30s', '5m', '2h', 1000, '1.5s'].map((timeout) => ({ shell: 'x', timeout })) });
    expect(ok.counts.total).toBe(6);
  });

  it('rejects a meta nested deeper than MAX_JSON_DEPTH, in a task, in defaults and in NDJSON, and other submissions of the same commit go through', async () => {
    const deep = `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}`;
    const raw = (path: string, body: string, type = 'application/json') => post(path).set('Content-Type', type).send(body);
    expectError(await raw('/v1/jobs', `{"tasks":[{"shell":"x","meta":${deep}}]}`), 400, 'INVALID_TASK_SPEC', `tasks.0.meta: nested deeper than ${MAX_JSON_DEPTH} levels`);
    expectError(await raw('/v1/jobs', `{"defaults":{"meta":${deep}}}`), 400, 'INVALID_TASK_SPEC', 'defaults.meta');
    const job = await createJob(m, { open: true });
    expectError(await raw(`/v1/jobs/${job.id}/tasks`, `{"shell":"x"}\n{"shell":"x","meta":${deep}}\n`, NDJSON), 400, 'INVALID_TASK_SPEC', 'line 2.meta');
    // Appended tasks are committed without a savepoint (committer.ts, HOT): a deep meta must fail
    // alone, before anything is written, not roll back the submissions that share its commit.
    const [bad, good] = await Promise.all([
      raw(`/v1/jobs/${job.id}/tasks`, `{"tasks":[{"shell":"x","meta":${deep}}]}`),
      post(`/v1/jobs/${job.id}/tasks`).send({ tasks: [{ shell: 'ok', key: 'good' }] }),
    ]);
    expectError(bad, 400, 'INVALID_TASK_SPEC', 'tasks.0.meta');
    expect(good.status).toBe(200);
    expect((await allTasks(m, job.id)).map((t) => t.key)).toEqual(['good']);
  });

  it('rejects bad query parameters', async () => {
    const job = await createJob(m, { tasks: [{ shell: 'x' }] });
    for (const base of ['/v1/jobs', `/v1/jobs/${job.id}/tasks`]) {
      expectError(await get(`${base}?limit=0`), 400, 'INVALID_INPUT', 'query.limit');
      expectError(await get(`${base}?limit=1001`), 400, 'INVALID_INPUT', 'query.limit');
      expectError(await get(`${base}?limit=abc`), 400, 'INVALID_INPUT', 'query.limit');
      expectError(await get(`${base}?state=bogus`), 400, 'INVALID_INPUT', 'query.state');
      expectError(await get(`${base}?sort=asc`), 400, 'INVALID_INPUT', '"sort"');
    }
    // Job states and task states are different sets.
    expectError(await get('/v1/jobs?state=queued'), 400, 'INVALID_INPUT', 'query.state');
    expectError(await get(`/v1/jobs/${job.id}/tasks?state=active`), 400, 'INVALID_INPUT', 'query.state');
    // The bounds themselves are fine.
    expect((await get('/v1/jobs?limit=1')).status).toBe(200);
    expect((await get('/v1/jobs?limit=1000')).status).toBe(200);
  });

  it('rejects a cursor this API did not return', async () => {
    const job = await createJob(m, { tasks: [{ shell: 'x' }, { shell: 'y' }] });
    for (const base of ['/v1/jobs', `/v1/jobs/${job.id}/tasks`]) {
      expectError(await get(`${base}?cursor=zz`), 400, 'INVALID_INPUT', 'cursor');
      expectError(await get(`${base}?cursor=c`), 400, 'INVALID_INPUT', 'cursor');
      expectError(await get(`${base}?cursor=c-1`), 400, 'INVALID_INPUT', 'cursor');
      expectError(await get(`${base}?cursor=${'c'.repeat(80)}`), 400, 'INVALID_INPUT', 'cursor');
    }
    // A real cursor works.
    const page = await get(`/v1/jobs/${job.id}/tasks?limit=1`);
    expect((await get(`/v1/jobs/${job.id}/tasks?limit=1&cursor=${page.body.nextCursor}`)).body.tasks).toHaveLength(1);
  });

  it('rejects an invalid NDJSON line, naming its line number (blank lines count)', async () => {
    const job = await createJob(m, { open: true });
    const send = (body: string) => post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send(body);
    expectError(await send('{"shell":"a"}\n\n{"shell": nope}\n{"shell":"c"}\n'), 400, 'INVALID_INPUT', 'line 3: not valid JSON');
    expectError(await send('{"shell":"a"}\n{"shell":"b","bogus":1}\n'), 400, 'INVALID_INPUT', /line 2: unknown field "bogus"/);
    expectError(await send('{"shell":"a"}\n{"shell":"b","retries":"x"}\n'), 400, 'INVALID_INPUT', 'line 2.retries');
    expectError(await send('["shell","a"]\n'), 400, 'INVALID_INPUT', 'line 1');
    expectError(await send('{"shell":"a"}\n{"shell":"b","timeout":"0ms"}'), 400, 'INVALID_TASK_SPEC', 'line 2.timeout');
    // A failed upload of fewer than one batch stores nothing.
    expect((await get(`/v1/jobs/${job.id}`)).body.counts.total).toBe(0);
  });

  it('an invalid NDJSON line after a committed batch says how many were accepted; resubmitting the fixed file is safe', async () => {
    const job = await createJob(m, { open: true });
    const good = Array.from({ length: 1_500 }, (_, i) => JSON.stringify({ key: `k${i}`, shell: 'x' }));
    const bad = [...good.slice(0, 1_200), '{oops', ...good.slice(1_200)].join('\n');
    const res = await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send(bad);
    expectError(res, 400, 'INVALID_INPUT', /^line 1201: not valid JSON \(1000 tasks before it were accepted, 0 duplicates\)$/);
    expect((await get(`/v1/jobs/${job.id}`)).body.counts.total).toBe(1_000);
    const fixed = await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send(good.join('\n'));
    expect(fixed.body).toEqual({ accepted: 500, duplicates: 1_000 });
  });

  it('rejects a body that is not valid JSON', async () => {
    const bad = (path: string) => post(path).set('Content-Type', 'application/json').send('{"tasks": [');
    expectError(await bad('/v1/jobs'), 400, 'INVALID_INPUT');
    const job = await createJob(m, { open: true });
    expectError(await bad(`/v1/jobs/${job.id}/tasks`), 400, 'INVALID_INPUT');
    expectError(await bad(`/v1/jobs/${job.id}/retry`), 400, 'INVALID_INPUT');
    expect((await get('/v1/jobs')).body.jobs).toHaveLength(1);
  });

  it('rejects a path parameter longer than the router accepts with the usual error body', async () => {
    const long = `job-${'1'.repeat(200)}`;
    expectError(await get(`/v1/jobs/${long}`), 400, 'INVALID_INPUT');
    expectError(await post(`/v1/tasks/${'x'.repeat(300)}/cancel`), 400, 'INVALID_INPUT');
  });

  it('rejects more than 10,000 tasks in one JSON body', async () => {
    const tasks = Array.from({ length: 10_001 }, (_, i) => ({ key: `k${i}`, shell: 'true' }));
    expectError(await post('/v1/jobs').send({ tasks }), 400, 'INVALID_INPUT', 'body.tasks');
    expect((await get('/v1/jobs')).body.jobs).toEqual([]);
    const job = await createJob(m, { open: true });
    expectError(await post(`/v1/jobs/${job.id}/tasks`).send({ tasks }), 400, 'INVALID_INPUT', 'tasks');
    expect((await get(`/v1/jobs/${job.id}`)).body.counts.total).toBe(0);
  }, 60_000);
});

describe('401 and 403', () => {
  const adminRoutes: Array<[string, string]> = [
    ['POST', '/v1/jobs'],
    ['POST', '/v1/jobs/job-1/tasks'],
    ['POST', '/v1/jobs/job-1/seal'],
    ['GET', '/v1/jobs'],
    ['GET', '/v1/jobs/job-1'],
    ['GET', '/v1/jobs/job-1/tasks'],
    ['GET', '/v1/jobs/job-1/results'],
    ['POST', '/v1/jobs/job-1/cancel'],
    ['POST', '/v1/jobs/job-1/retry'],
    ['GET', '/v1/tasks/task-1'],
    ['POST', '/v1/tasks/task-1/cancel'],
    ['GET', '/v1/workers'],
    ['GET', '/v1/workers/w-1'],
    ['POST', '/v1/workers/w-1/drain'],
  ];
  const call = (method: string, path: string) => (method === 'GET' ? api(m).get(path) : api(m).post(path));

  it('401 UNAUTHORIZED without a token or with a wrong one, on every admin route', async () => {
    await createJob(m, { open: true, tasks: [{ shell: 'x' }] });
    for (const [method, path] of adminRoutes) {
      expectError(await call(method, path), 401, 'UNAUTHORIZED', 'missing bearer token');
      expectError(await call(method, path).set('Authorization', 'Bearer not-the-token-at-all'), 401, 'UNAUTHORIZED', 'invalid token');
    }
    expectError(await api(m).get('/v1/jobs').set('Authorization', `Basic ${Buffer.from(`u:${ADMIN}`).toString('base64')}`), 401, 'UNAUTHORIZED');
    expectError(await api(m).get('/v1/jobs').set('Authorization', 'Bearer'), 401, 'UNAUTHORIZED');
    expectError(await api(m).get('/v1/jobs').set('Authorization', `Bearer ${ADMIN}x`), 401, 'UNAUTHORIZED');
    expectError(await api(m).get('/v1/jobs').set('Authorization', `Bearer ${ADMIN.slice(0, -1)}`), 401, 'UNAUTHORIZED');
    // The scheme is case-insensitive; the admin token works.
    expect((await api(m).get('/v1/jobs').set('Authorization', `bearer ${ADMIN}`)).status).toBe(200);
    // Nothing changed on the rejected writes.
    const jobs = (await get('/v1/jobs')).body.jobs;
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({ sealed: false, state: 'active', counts: { queued: 1, total: 1 } });
  });

  it('401 before validation: a bad body without a token is still 401', async () => {
    expectError(await api(m).post('/v1/jobs').send({ bogus: true }), 401, 'UNAUTHORIZED');
  });

  it('403 FORBIDDEN with the worker token on every admin route', async () => {
    await createJob(m, { open: true, tasks: [{ shell: 'x' }] });
    for (const [method, path] of adminRoutes) {
      expectError(await call(method, path).set(auth(WORKER)), 403, 'FORBIDDEN', 'admin');
    }
    expect((await get('/v1/jobs')).body.jobs[0]).toMatchObject({ sealed: false, counts: { total: 1 } });
  });

  it('the public routes need no token', async () => {
    expect((await api(m).get('/healthz')).status).toBe(200);
    expect((await api(m).get('/metrics')).status).toBe(200);
    expect((await api(m).get('/docs/json')).status).toBe(200);
  });
});

describe('404', () => {
  it('unknown job ids, well-formed or not, are JOB_NOT_FOUND on every job route', async () => {
    await createJob(m, { open: true, tasks: [{ shell: 'x' }] }); // job-1 exists
    const ids = ['job-999', 'job-0', 'job-01', 'job-abc', 'job-', '999', 'task-1', 'nonsense', 'job-1.0', 'job-99999999999999999'];
    for (const id of ids) {
      const e = encodeURIComponent(id);
      expectError(await get(`/v1/jobs/${e}`), 404, 'JOB_NOT_FOUND', id);
      expectError(await get(`/v1/jobs/${e}/tasks`), 404, 'JOB_NOT_FOUND');
      expectError(await get(`/v1/jobs/${e}/results`), 404, 'JOB_NOT_FOUND');
      expectError(await post(`/v1/jobs/${e}/tasks`).send({ tasks: [{ shell: 'x' }] }), 404, 'JOB_NOT_FOUND');
      expectError(await post(`/v1/jobs/${e}/tasks`).set('Content-Type', NDJSON).send('{"shell":"x"}\n'), 404, 'JOB_NOT_FOUND');
      expectError(await post(`/v1/jobs/${e}/seal`), 404, 'JOB_NOT_FOUND');
      expectError(await post(`/v1/jobs/${e}/cancel`), 404, 'JOB_NOT_FOUND');
      expectError(await post(`/v1/jobs/${e}/retry`), 404, 'JOB_NOT_FOUND');
    }
    expect((await get('/v1/jobs/job-1')).body).toMatchObject({ sealed: false, state: 'active', counts: { total: 1 } });
  });

  it('unknown task ids are TASK_NOT_FOUND', async () => {
    const job = await createJob(m, { tasks: [{ shell: 'x' }] });
    const [task] = await allTasks(m, job.id);
    expect(task!.id).toBe('task-1');
    for (const id of ['task-2', 'task-0', 'task-x', 'task-01', job.id, '1', 'nope']) {
      expectError(await get(`/v1/tasks/${id}`), 404, 'TASK_NOT_FOUND', id);
      expectError(await post(`/v1/tasks/${id}/cancel`), 404, 'TASK_NOT_FOUND', id);
    }
    expect((await get('/v1/tasks/task-1')).body.state).toBe('queued');
  });

  it('unknown worker ids are WORKER_NOT_FOUND', async () => {
    const w = m.store.registerWorker(hello(), 'session-1');
    for (const id of ['w-000000000000', `${w}x`, 'job-1', 'x']) {
      expectError(await get(`/v1/workers/${id}`), 404, 'WORKER_NOT_FOUND', id);
      expectError(await post(`/v1/workers/${id}/drain`), 404, 'WORKER_NOT_FOUND', id);
    }
    expect((await get(`/v1/workers/${w}`)).body.state).toBe('ready');
  });

  it('unknown routes and methods are ROUTE_NOT_FOUND', async () => {
    expectError(await get('/v1/nope'), 404, 'ROUTE_NOT_FOUND', '/v1/nope');
    expectError(await get('/v2/jobs'), 404, 'ROUTE_NOT_FOUND');
    expectError(await api(m).delete('/v1/jobs/job-1').set(auth()), 404, 'ROUTE_NOT_FOUND', 'DELETE /v1/jobs/job-1');
    expectError(await api(m).put('/v1/jobs').set(auth()).send({}), 404, 'ROUTE_NOT_FOUND');
    expectError(await get('/v1/jobs/job-1/nothing?x=1'), 404, 'ROUTE_NOT_FOUND', 'GET /v1/jobs/job-1/nothing');
    expectError(await api(m).get('/nope'), 404, 'ROUTE_NOT_FOUND'); // `/` is the dashboard
    expectError(await api(m).get('/dashboard/secrets.txt'), 404, 'ROUTE_NOT_FOUND');
  });
});

describe('409 conflict', () => {
  it('adding to a sealed job is JOB_SEALED, in JSON and NDJSON, and changes nothing', async () => {
    const sealedAtOnce = await createJob(m, { tasks: [{ key: 'a', shell: 'x' }] });
    expectError(await post(`/v1/jobs/${sealedAtOnce.id}/tasks`).send({ tasks: [{ key: 'b', shell: 'x' }] }), 409, 'JOB_SEALED', sealedAtOnce.id);
    expectError(await post(`/v1/jobs/${sealedAtOnce.id}/tasks`).set('Content-Type', NDJSON).send('{"key":"c","shell":"x"}\n'), 409, 'JOB_SEALED', sealedAtOnce.id);

    const open = await createJob(m, { open: true });
    await post(`/v1/jobs/${open.id}/seal`).expect(200);
    expectError(await post(`/v1/jobs/${open.id}/tasks`).send({ tasks: [{ shell: 'x' }] }), 409, 'JOB_SEALED');
    // Even an empty submission to a sealed job is a conflict.
    expectError(await post(`/v1/jobs/${open.id}/tasks`).set('Content-Type', NDJSON).send(''), 409, 'JOB_SEALED');

    expect((await get(`/v1/jobs/${sealedAtOnce.id}`)).body.counts.total).toBe(1);
    expect((await get(`/v1/jobs/${open.id}`)).body.counts.total).toBe(0);
  });
});

describe('413 payload too large', () => {
  it('a JSON body over the limit is PAYLOAD_TOO_LARGE', async () => {
    const { JSON_BODY_LIMIT } = await import('../src/app.js');
    const body = `{"name":"${'x'.repeat(JSON_BODY_LIMIT)}"}`;
    const res = await post('/v1/jobs').set('Content-Type', 'application/json').send(body);
    expectError(res, 413, 'PAYLOAD_TOO_LARGE');
    expect((await get('/v1/jobs')).body.jobs).toEqual([]);
  }, 60_000);

  it('an NDJSON line over 1 MiB is PAYLOAD_TOO_LARGE, naming the line', async () => {
    const job = await createJob(m, { open: true });
    const huge = JSON.stringify({ key: 'big', shell: 'x'.repeat(1024 * 1024 + 10) });
    const res = await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send(`{"key":"a","shell":"x"}\n${huge}\n{"key":"c","shell":"x"}\n`);
    expectError(res, 413, 'PAYLOAD_TOO_LARGE', 'line 2');
    // The same at the end of the body, without a trailing newline.
    expectError(await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send(`{"key":"a","shell":"x"}\n${huge}`), 413, 'PAYLOAD_TOO_LARGE', 'line 2');
    expect((await get(`/v1/jobs/${job.id}`)).body.counts.total).toBe(0);
    // The connection and the manager are still fine.
    expect((await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send('{"key":"a","shell":"x"}\n')).body).toEqual({ accepted: 1, duplicates: 0 });
  }, 30_000);

  it('an NDJSON line just under 1 MiB is accepted', async () => {
    const job = await createJob(m, { open: true });
    // Single strings are capped by the schema; a long argv reaches the line limit.
    const line = JSON.stringify({ key: 'big', command: Array.from({ length: 16 }, () => 'x'.repeat(65_000)) });
    expect(Buffer.byteLength(line)).toBeLessThan(1024 * 1024);
    const res = await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', NDJSON).send(`${line}\n`);
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ accepted: 1, duplicates: 0 });
  });
});

describe('415 unsupported media type', () => {
  it('rejects bodies of a content type no route takes', async () => {
    const job = await createJob(m, { open: true });
    for (const type of ['application/xml', 'text/plain', 'application/x-www-form-urlencoded', 'text/csv']) {
      expectError(await post('/v1/jobs').set('Content-Type', type).send('{"name":"x"}'), 415, 'UNSUPPORTED_MEDIA_TYPE');
      expectError(await post(`/v1/jobs/${job.id}/tasks`).set('Content-Type', type).send('{"shell":"x"}\n'), 415, 'UNSUPPORTED_MEDIA_TYPE');
    }
    expect((await get('/v1/jobs')).body.jobs).toHaveLength(1);
    expect((await get(`/v1/jobs/${job.id}`)).body.counts.total).toBe(0);
  });
});

describe('the worker channel route', () => {
  it('GET /v1/worker without a WebSocket upgrade answers the usual error body', async () => {
    expectError(await api(m).get('/v1/worker'), 401, 'UNAUTHORIZED');
    expectError(await api(m).get('/v1/worker').set(auth(ADMIN)), 403, 'FORBIDDEN', 'worker token');
    expectError(await api(m).get('/v1/worker').set(auth(WORKER)), 400, 'INVALID_INPUT', 'WebSocket');
  });
});

describe('state is untouched by failed requests', () => {
  it('a rejected retry or cancel leaves running tasks alone', async () => {
    const job = await createJob(m, { tasks: [{ shell: 'x' }] });
    claim(m, 1);
    expectError(await post(`/v1/jobs/${job.id}/retry`).send({ state: 'running' }), 400, 'INVALID_INPUT', 'body.state');
    expectError(await post(`/v1/jobs/${job.id}/cancel`).set(auth(WORKER)), 403, 'FORBIDDEN');
    expect((await get(`/v1/jobs/${job.id}`)).body).toMatchObject({ state: 'active', counts: { running: 1 } });
  });
});
