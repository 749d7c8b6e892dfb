/**
 * The client against a real manager app listening on loopback (real HTTP, real SQLite),
 * built in-process like apps/manager/test/helpers.ts does.
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp } from '@pullman/manager';
import { TaskStore } from '@pullman/store';
import type { TaskSpec } from '@pullman/protocol';
import { PullmanApiError, PullmanClient, PullmanConnectionError } from '../src/index.js';
import { freePort } from '../../../test/harness.js';

const ADMIN = 'client-test-admin-token-0123456789';
const WORKER = 'client-test-worker-token-0123456789';

interface Running {
  url: string;
  dir: string;
  close(): Promise<void>;
}

const running: Running[] = [];
afterEach(async () => {
  for (const r of running.splice(0)) await r.close();
});

async function startManager(https?: { cert: Buffer; key: Buffer }): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'pullman-client-'));
  const store = new TaskStore({ path: join(dir, 'pullman.db'), leaseTtlMs: 30_000 });
  const app: FastifyInstance = await buildApp({
    store,
    tokens: { admin: ADMIN, worker: WORKER },
    heartbeatIntervalMs: 5_000,
    leaseTtlMs: 30_000,
    startReaper: false,
    logger: false,
    https: https ?? null,
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const r = {
    url,
    dir,
    async close() {
      await app.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  running.push(r);
  return r;
}

async function client(): Promise<PullmanClient> {
  const m = await startManager();
  return new PullmanClient({ url: m.url, token: ADMIN });
}

/** Resolves to the error a promise rejects with (fails the test if it resolves). */
async function failure(p: Promise<unknown>): Promise<PullmanApiError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(PullmanApiError);
    return err as PullmanApiError;
  }
  throw new Error('expected the call to fail');
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('PullmanClient', () => {
  it('creates, lists, pages, seals, cancels and retries jobs with typed answers', async () => {
    const c = await client();
    expect(await c.health()).toEqual({ status: 'ok' });

    const inline = await c.createJob({ name: 'inline', tasks: [{ key: 'a', command: ['true'] }, { key: 'b', shell: 'exit 3' }] });
    expect(inline).toMatchObject({ id: expect.stringMatching(/^job-\d+$/), name: 'inline', state: 'active', sealed: true, counts: { queued: 2, total: 2 } });
    expect(await c.getJob(inline.id)).toMatchObject({ id: inline.id, counts: { total: 2 } });

    const open = await c.createJob({ name: 'open', open: true });
    expect(open.sealed).toBe(false);
    expect(await c.addTasks(open.id, [{ key: 'x', command: ['true'] }, { key: 'x', command: ['true'] }])).toEqual({ accepted: 1, duplicates: 1 });
    expect((await c.sealJob(open.id)).sealed).toBe(true);
    const sealed = await failure(c.addTasks(open.id, [{ command: ['true'] }]));
    expect(sealed).toMatchObject({ code: 'JOB_SEALED', status: 409 });

    for (let i = 0; i < 3; i++) await c.createJob({ name: `more-${i}` });
    const page = await c.listJobs({ limit: 2 });
    expect(page.jobs).toHaveLength(2);
    expect(page.nextCursor).not.toBeNull();
    const all = await collect(c.jobs({ pageSize: 2 }));
    expect(all.map((j) => j.name)).toEqual(['more-2', 'more-1', 'more-0', 'open', 'inline']);

    const tasks = await collect(c.tasks(inline.id, { pageSize: 1 }));
    expect(tasks.map((t) => t.key)).toEqual(['a', 'b']);
    expect((await c.listTasks(inline.id, { state: 'queued', limit: 1 })).tasks).toHaveLength(1);
    const task = await c.getTask(tasks[0]!.id);
    expect(task).toMatchObject({ id: tasks[0]!.id, jobId: inline.id, key: 'a', state: 'queued', history: [] });

    expect((await c.cancelTask(tasks[0]!.id)).state).toBe('cancelled');
    const cancelled = await c.cancelJob(inline.id);
    expect(cancelled).toMatchObject({ state: 'cancelled', counts: { cancelled: 2, queued: 0 } });
    expect(await c.retryJob(inline.id, { state: 'cancelled' })).toEqual({ requeued: 2 });
    expect((await c.getJob(inline.id)).counts.queued).toBe(2);
    expect(await c.retryJob(inline.id)).toEqual({ requeued: 0 });
  });

  it('streams a large NDJSON upload from an async generator and counts duplicates on resubmission', async () => {
    const c = await client();
    const n = 25_000; // more than one JSON body may hold
    async function* specs(): AsyncGenerator<TaskSpec> {
      for (let i = 0; i < n; i++) yield { key: `k${i}`, command: ['echo', String(i)] };
    }
    const first = await c.submit(specs(), { name: 'big' });
    expect(first).toMatchObject({ accepted: n, duplicates: 0, job: { name: 'big', sealed: true, counts: { total: n } } });

    const open = await c.createJob({ open: true });
    expect(await c.streamTasks(open.id, specs())).toEqual({ accepted: n, duplicates: 0 });
    expect(await c.streamTasks(open.id, specs())).toEqual({ accepted: 0, duplicates: n });
  });

  it('streams raw lines and raw file bytes', async () => {
    const c = await client();
    const dir = mkdtempSync(join(tmpdir(), 'pullman-client-file-'));
    const file = join(dir, 'tasks.ndjson');
    writeFileSync(file, Array.from({ length: 5_000 }, (_, i) => JSON.stringify({ key: `f${i}`, shell: `echo ${i}` })).join('\n') + '\n');
    const job = await c.createJob({ open: true });
    expect(await c.streamTasks(job.id, createReadStream(file, { highWaterMark: 1000 }))).toEqual({ accepted: 5_000, duplicates: 0 });
    expect(await c.streamTasks(job.id, ['{"key":"s1","command":["true"]}', '{"key":"f0","command":["true"]}\n'])).toEqual({ accepted: 1, duplicates: 1 });
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports a bad NDJSON line with its number and the API code', async () => {
    const c = await client();
    const job = await c.createJob({ open: true });
    const lines = ['{"command":["true"]}', '{"comand":["true"]}'];
    const err = await failure(c.streamTasks(job.id, lines));
    expect(err).toMatchObject({ code: 'INVALID_INPUT', status: 400 });
    expect(err.message).toContain('line 2');
    expect(err.message).toContain('comand');
  });

  it('downloads results as a stream of typed lines', async () => {
    const c = await client();
    const { job } = await c.submit([{ key: 'one', command: ['true'] }, { key: 'two', command: ['true'] }]);
    expect(await collect(c.results(job.id))).toEqual([]);
    await c.cancelJob(job.id); // cancelled tasks are terminal, so they have result lines
    const results = await collect(c.results(job.id));
    expect(results.map((r) => [r.key, r.state])).toEqual([['one', 'cancelled'], ['two', 'cancelled']]);
    expect(results[0]).toMatchObject({ taskId: expect.stringMatching(/^task-\d+$/), attempts: 0 });
    const raw = await collect(c.resultLines(job.id));
    expect(raw.map((l) => JSON.parse(l))).toEqual(results);
  });

  it('lists workers and reports unknown ids with their codes', async () => {
    const c = await client();
    expect(await c.listWorkers()).toEqual([]);
    expect(await failure(c.getWorker('w-nope'))).toMatchObject({ code: 'WORKER_NOT_FOUND', status: 404 });
    expect(await failure(c.drainWorker('w-nope'))).toMatchObject({ code: 'WORKER_NOT_FOUND', status: 404 });
    expect(await failure(c.getJob('job-999'))).toMatchObject({ code: 'JOB_NOT_FOUND', status: 404 });
    expect(await failure(c.getTask('task-999'))).toMatchObject({ code: 'TASK_NOT_FOUND', status: 404 });
    expect(await c.metrics()).toContain('# HELP');
    expect(await c.openApi()).toHaveProperty('openapi');
  });

  it('tells auth errors from connection failures', async () => {
    const m = await startManager();
    const noToken = await failure(new PullmanClient({ url: m.url }).listJobs());
    expect(noToken).toMatchObject({ code: 'UNAUTHORIZED', status: 401, isAuthError: true });
    const bad = await failure(new PullmanClient({ url: m.url, token: 'wrong' }).listJobs());
    expect(bad).toMatchObject({ code: 'UNAUTHORIZED', status: 401 });
    const role = await failure(new PullmanClient({ url: m.url, token: WORKER }).listJobs());
    expect(role).toMatchObject({ code: 'FORBIDDEN', status: 403, isAuthError: true });

    const port = await freePort();
    const down = await failure(new PullmanClient({ url: `http://127.0.0.1:${port}`, token: ADMIN }).listJobs());
    expect(down).toBeInstanceOf(PullmanConnectionError);
    expect(down).toMatchObject({ code: 'CONNECTION_FAILED', status: 0, isAuthError: false });
    expect(down.message).toBe(`cannot reach the manager at http://127.0.0.1:${port} (ECONNREFUSED)`);

    expect(() => new PullmanClient({ url: 'not a url' })).toThrow(TypeError);
    expect(() => new PullmanClient({ url: 'ftp://x' })).toThrow(/http:\/\/ or https:\/\//);
  });

  it('trusts an extra CA for an https manager, and fails to connect without it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pullman-client-tls-'));
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ], { stdio: 'ignore' });
    const cert = readFileSync(join(dir, 'cert.pem'));
    const m = await startManager({ cert, key: readFileSync(join(dir, 'key.pem')) });
    expect(m.url).toMatch(/^https:/);
    const trusted = new PullmanClient({ url: m.url, token: ADMIN, ca: cert });
    expect(await trusted.health()).toEqual({ status: 'ok' });
    const { job, accepted } = await trusted.submit([{ command: ['true'] }]);
    expect(accepted).toBe(1);
    expect(job.sealed).toBe(true);

    const untrusted = await failure(new PullmanClient({ url: m.url, token: ADMIN }).health());
    expect(untrusted).toMatchObject({ code: 'CONNECTION_FAILED', status: 0 });
    expect(untrusted.message).toMatch(/SELF_SIGNED|CERT/);
    rmSync(dir, { recursive: true, force: true });
  });
});

