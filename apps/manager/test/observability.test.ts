/**
 * Metrics, the live feed and the dashboard's static files, against the real app over a real
 * port and a real worker-channel socket.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import request from 'supertest';
import { ADMIN, WORKER, auth, startManager, type TestManager } from './helpers.js';
import { TestWorker, okReport } from './ws-client.js';
import type { TaskAssignment } from '@pullman/protocol';

let m: TestManager;
const sockets: TestWorker[] = [];

beforeEach(async () => {
  m = await startManager({ listen: true });
});
afterEach(async () => {
  for (const w of sockets.splice(0)) w.ws.terminate();
  await m.close();
});

/** Polls `check` until it returns something other than undefined; fails after `ms`. */
async function until<T>(what: string, check: () => T | undefined | Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Parses Prometheus text into `name{labels}` -> value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

async function scrape(): Promise<Map<string, number>> {
  const res = await request(m.app.server).get('/metrics');
  expect(res.status).toBe(200);
  return parseMetrics(res.text);
}

async function worker(): Promise<TestWorker> {
  const w = await TestWorker.connect(m.url, WORKER);
  sockets.push(w);
  await w.hello({ slots: 8 });
  return w;
}

/** Pulls and collects `n` assignments. */
async function take(w: TestWorker, n: number): Promise<TaskAssignment[]> {
  w.send({ type: 'pull', credits: n });
  const got: TaskAssignment[] = [];
  while (got.length < n) got.push(...(await w.next('tasks')).tasks);
  return got;
}

describe('/metrics', () => {
  it('counts finished tasks by outcome, retries, cancellations, lost leases and dispatches, in step with the API', async () => {
    const w = await worker();
    const job = (await request(m.app.server).post('/v1/jobs').set(auth()).send({
      tasks: [
        { key: 'ok1', shell: 'x' },
        { key: 'ok2', shell: 'x' },
        { key: 'flaky', shell: 'x', retries: 1 },
        { key: 'bad', shell: 'x' },
      ],
    })).body as { id: string };
    const spare = (await request(m.app.server).post('/v1/jobs').set(auth()).send({ tasks: [{ key: 'later', shell: 'x' }, { key: 'lost', shell: 'x' }] })).body as { id: string };
    m.clock.advance(2_000); // queued for 2 s before anyone pulls

    const first = await take(w, 6);
    const byKey = new Map(first.map((t) => [t.key, t]));
    const report = (key: string, over: Partial<typeof okReport> = {}) => {
      const t = byKey.get(key)!;
      w.send({ type: 'result', taskId: t.taskId, leaseId: t.leaseId, report: { ...okReport, durationMs: 1_500, ...over } });
    };
    report('ok1');
    report('ok2');
    report('flaky', { exitCode: 1 });
    report('bad', { exitCode: 2 });
    await until('the first results', () => (m.store.getJob(1)!.counts.succeeded === 2 && m.store.getJob(1)!.counts.failed === 1 ? true : undefined));
    // The retried execution comes back; this time it succeeds.
    const [again] = await take(w, 1);
    expect(again!.key).toBe('flaky');
    w.send({ type: 'result', taskId: again!.taskId, leaseId: again!.leaseId, report: okReport });
    await until('the retry', () => (m.store.getJob(1)!.state !== 'active' ? true : undefined));

    // The spare job: one task cancelled while running, one lost to an expired lease.
    const later = byKey.get('later')!;
    expect((await request(m.app.server).post(`/v1/tasks/${later.taskId}/cancel`).set(auth())).status).toBe(200);
    w.ws.terminate();
    await until('the worker to be offline', () => (m.store.listWorkers()[0]!.state === 'offline' ? true : undefined));
    m.clock.advance(31_000);
    await m.app.pullman.reaper.tick();

    const metrics = await scrape();
    const jobs = (await request(m.app.server).get('/v1/jobs').set(auth())).body.jobs as Array<{ counts: Record<string, number> }>;
    const sum = (s: string) => jobs.reduce((n, j) => n + j.counts[s]!, 0);
    expect({
      succeeded: metrics.get('pullman_tasks_finished_total{outcome="succeeded"}'),
      failed: metrics.get('pullman_tasks_finished_total{outcome="failed"}'),
      cancelled: metrics.get('pullman_tasks_finished_total{outcome="cancelled"}'),
    }).toEqual({ succeeded: sum('succeeded'), failed: sum('failed'), cancelled: sum('cancelled') });
    expect(sum('succeeded')).toBe(3);
    expect(metrics.get('pullman_task_executions_total{outcome="failed"}')).toBe(2);
    expect(metrics.get('pullman_tasks_requeued_total{reason="retry"}')).toBe(1);
    expect(metrics.get('pullman_tasks_requeued_total{reason="expired"}')).toBe(1);
    expect(metrics.get('pullman_leases_expired_total')).toBe(1);
    for (const s of ['queued', 'running', 'succeeded', 'failed', 'cancelled']) expect(metrics.get(`pullman_tasks{state="${s}"}`)).toBe(sum(s));
    expect(metrics.get('pullman_jobs{state="failed"}')).toBe(1);
    expect(metrics.get('pullman_workers{state="gone"}')).toBe(1);
    expect(metrics.get('pullman_slots{state="used"}')).toBe(0);

    // Durations: five executions of 1.5 s (bad, ok1, ok2, flaky twice; the retry reported 12 ms).
    expect(metrics.get('pullman_task_duration_seconds_count')).toBe(5);
    expect(metrics.get('pullman_task_duration_seconds_bucket{le="1"}')).toBe(1);
    // Dispatch latency: the six first deliveries waited 2 s in the queue, the retry did not.
    expect(metrics.get('pullman_tasks_dispatched_total')).toBe(7);
    expect(metrics.get('pullman_dispatch_latency_seconds_count')).toBe(7);
    expect(metrics.get('pullman_dispatch_latency_seconds_bucket{le="1"}')).toBe(1);
    expect(metrics.get('pullman_dispatch_latency_seconds_bucket{le="5"}')).toBe(7);
    void spare;
  });

  it('times HTTP requests by route pattern, never by raw URL', async () => {
    await request(m.app.server).post('/v1/jobs').set(auth()).send({ tasks: [{ shell: 'x' }] });
    for (const id of ['job-1', 'job-99']) await request(m.app.server).get(`/v1/jobs/${id}`).set(auth());
    await request(m.app.server).get('/no/such/route');
    const text = (await request(m.app.server).get('/metrics')).text;
    const metrics = parseMetrics(text);
    expect(metrics.get('pullman_http_request_duration_seconds_count{method="GET",route="/v1/jobs/:id",status_code="200"}')).toBe(1);
    expect(metrics.get('pullman_http_request_duration_seconds_count{method="GET",route="/v1/jobs/:id",status_code="404"}')).toBe(1);
    expect(metrics.get('pullman_http_request_duration_seconds_count{method="POST",route="/v1/jobs",status_code="201"}')).toBe(1);
    expect(metrics.get('pullman_http_request_duration_seconds_count{method="GET",route="unmatched",status_code="404"}')).toBe(1);
    expect(text).not.toContain('job-99');
    expect(text).not.toContain('/no/such/route');
    // Process metrics are there too.
    expect(text).toContain('process_cpu_user_seconds_total');
    expect(text).toContain('nodejs_eventloop_lag_seconds');
  });
});

/** Reads server-sent events from a fetch body until `pred` accepts one. */
async function readEvents(res: Response, pred: (event: string, data: any) => boolean): Promise<Array<{ event: string; data: any }>> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const seen: Array<{ event: string; data: any }> = [];
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended after ${seen.map((e) => e.event).join(',')}`);
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(frame)![1]!;
      const data = JSON.parse(/^data: (.*)$/m.exec(frame)![1]!);
      seen.push({ event, data });
      if (pred(event, data)) {
        reader.releaseLock();
        return seen;
      }
    }
  }
}

describe('GET /v1/events', () => {
  it('needs the admin token', async () => {
    expect((await fetch(`${m.url}/v1/events`)).status).toBe(401);
    expect((await fetch(`${m.url}/v1/events`, { headers: { authorization: `Bearer ${WORKER}` } })).status).toBe(403);
  });

  it('says hello with counts and the throughput window, then ticks with the jobs that changed', async () => {
    await request(m.app.server).post('/v1/jobs').set(auth()).send({ name: 'before', tasks: [{ shell: 'x' }] });
    const controller = new AbortController();
    const res = await fetch(`${m.url}/v1/events`, { headers: { authorization: `Bearer ${ADMIN}` }, signal: controller.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const [hello] = await readEvents(res, (e) => e === 'hello');
    expect(hello!.data).toMatchObject({ tasks: { queued: 1 }, jobs: { active: 1 }, workers: { ready: 0 }, slots: { used: 0, free: 0 } });
    expect(hello!.data.throughput).toHaveLength(600);

    const job = (await request(m.app.server).post('/v1/jobs').set(auth()).send({ name: 'during', tasks: [{ shell: 'x' }, { shell: 'y' }] })).body as { id: string };
    const events = await readEvents(res, (e, d) => e === 'tick' && d.changedJobs.some((j: { id: string }) => j.id === job.id));
    const tick = events[events.length - 1]!.data;
    expect(tick.changedJobs.find((j: { id: string }) => j.id === job.id)).toMatchObject({ name: 'during', counts: { queued: 2, total: 2 } });
    expect(tick.tasks.queued).toBe(3);
    controller.abort();
  });

  it('does not hold up shutdown', async () => {
    const res = await fetch(`${m.url}/v1/events`, { headers: { authorization: `Bearer ${ADMIN}` } });
    await readEvents(res, (e) => e === 'hello');
    await m.app.close(); // would hang while the stream stayed open
    await expect(readEvents(res, () => false)).rejects.toThrow(/ended|terminated/);
  });

  it('is documented in the OpenAPI document, and the dashboard pages are not', async () => {
    const doc = (await request(m.app.server).get('/docs/json')).body as { paths: Record<string, Record<string, { tags?: string[] }>> };
    expect(doc.paths['/v1/events']?.get?.tags).toEqual(['live']);
    expect(doc.paths['/']).toBeUndefined();
  });
});

describe('dashboard files', () => {
  it('serves the page and its assets without a token, with a strict content security policy', async () => {
    const page = await request(m.app.server).get('/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect(page.text).toContain('/dashboard/app.js');
    const js = await request(m.app.server).get('/dashboard/app.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/^text\/javascript/);
    expect((await request(m.app.server).get('/dashboard/app.css')).headers['content-type']).toMatch(/^text\/css/);
    // Only the built files: nothing else from the directory or above it.
    for (const path of ['/dashboard/main.ts', '/dashboard/..%2Fserver.js', '/dashboard/index.htm']) {
      expect((await request(m.app.server).get(path)).status, path).toBe(404);
    }
  });
});
