/**
 * Small helpers shared by the api-*.test.ts files (HTTP API tests with supertest).
 * Everything goes through the real app and the real store; nothing is mocked.
 */
import { expect } from 'vitest';
import request from 'supertest';
import type { Response } from 'supertest';
import { parseTaskId, type ExecutionReport, type HelloMessage, type TaskAssignment } from '@pullman/protocol';
import { auth, type TestManager } from './helpers.js';

export const NDJSON = 'application/x-ndjson';

/** supertest agent bound to the manager's server. */
export const api = (m: TestManager) => request(m.app.server);

/** Asserts the uniform error body `{"error":{"code","message"}}` with the given status and code. */
export function expectError(res: Response, status: number, code: string, messageIncludes?: string | RegExp): string {
  expect(res.status, res.text).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  expect(res.body).toEqual({ error: { code, message: expect.any(String) } });
  const message = res.body.error.message as string;
  expect(message.length).toBeGreaterThan(0);
  if (messageIncludes !== undefined) {
    if (typeof messageIncludes === 'string') expect(message).toContain(messageIncludes);
    else expect(message).toMatch(messageIncludes);
  }
  return message;
}

/** POST /v1/jobs with a JSON body; asserts 201 and returns the Job. */
export async function createJob(m: TestManager, body: Record<string, unknown> = {}) {
  const res = await api(m).post('/v1/jobs').set(auth()).send(body);
  expect(res.status, res.text).toBe(201);
  return res.body as { id: string; name: string | null; state: string; sealed: boolean; counts: Record<string, number> };
}

/** All of a job's tasks (follows nextCursor). */
export async function allTasks(m: TestManager, jobId: string, query = '') {
  const out: Array<Record<string, any>> = [];
  let cursor: string | null = null;
  do {
    const res: Response = await api(m)
      .get(`/v1/jobs/${jobId}/tasks?limit=1000${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
      .set(auth());
    expect(res.status, res.text).toBe(200);
    out.push(...res.body.tasks);
    cursor = res.body.nextCursor;
  } while (cursor);
  return out;
}

/** Reads an NDJSON response body as parsed lines. */
export async function ndjsonGet(m: TestManager, path: string) {
  const res = await api(m)
    .get(path)
    .set(auth())
    .buffer(true)
    .parse((r, cb) => {
      let text = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => (text += c));
      r.on('end', () => cb(null, text));
    });
  const text = res.body as string;
  const lines = res.status === 200 ? text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, any>) : [];
  return { res, text, lines };
}

export const hello = (over: Partial<HelloMessage> = {}): HelloMessage => ({
  type: 'hello',
  protocol: 1,
  name: 'node-1',
  hostname: 'host-1',
  slots: 4,
  labels: ['gpu'],
  version: '9.9.9',
  vm: null,
  running: [],
  ...over,
});

export const report = (over: Partial<ExecutionReport> = {}): ExecutionReport => ({
  exitCode: 0,
  signal: null,
  timedOut: false,
  cancelled: false,
  durationMs: 1234,
  stdoutTail: 'out',
  stderrTail: '',
  output: null,
  error: null,
  ...over,
});

/** Leases up to `n` queued tasks (priority, then FIFO) to worker w1, as a worker would. */
export function claim(m: TestManager, n: number, workerId = 'w1'): TaskAssignment[] {
  return m.store.claimTasks({ workerId, sessionId: 's1' }, [], n);
}

export const leaseOf = (a: TaskAssignment) => ({ taskSeq: parseTaskId(a.taskId)!, leaseId: a.leaseId });

/** Records the end of one claimed execution: success for exit 0, else a failure. */
export function finish(m: TestManager, a: TaskAssignment, r: ExecutionReport, workerId = 'w1'): void {
  const outcome = r.exitCode === 0 ? m.store.completeTask(workerId, leaseOf(a), r) : m.store.failTask(workerId, leaseOf(a), r);
  expect(outcome.status).toBe('recorded');
}
