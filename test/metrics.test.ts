/**
 * /metrics during a real run: a real manager, real workers, real processes. Every scrape taken
 * while the job runs must agree with the API's job counts read just before and just after it,
 * and the final scrape must match them exactly.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { finished, killAll, startManager, startWorker, until } from './harness.js';

afterEach(killAll);

function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

describe('/metrics during a run', () => {
  it('counters and gauges agree with the API job counts', async () => {
    const m = await startManager();
    startWorker(m, { name: 'm1', slots: 2 });
    startWorker(m, { name: 'm2', slots: 2 });
    await until('two workers', async () => ((await m.api.workers()).length === 2 ? true : undefined));
    const scrape = async () => parse(await (await fetch(`${m.url}/metrics`)).text());

    // 120 tasks: every 10th fails once and then succeeds on its retry; every 25th always fails.
    const tasks = Array.from({ length: 120 }, (_, i) => ({
      key: `t${i}`,
      retries: 1,
      shell: i % 25 === 0 ? 'echo nope >&2; exit 4'
        : i % 10 === 0 ? 'sleep 0.05; if [ "$PULLMAN_ATTEMPT" = 1 ]; then exit 1; fi'
        : 'sleep 0.05',
    }));
    const job = await m.api.createJob({ name: 'metrics', tasks });

    let scrapesDuringRun = 0;
    for (;;) {
      const before = await m.api.job(job.id);
      const metrics = await scrape();
      const after = await m.api.job(job.id);
      if (before.state !== 'active') break;
      for (const outcome of ['succeeded', 'failed'] as const) {
        const v = metrics.get(`pullman_tasks_finished_total{outcome="${outcome}"}`)!;
        expect(v).toBeGreaterThanOrEqual(before.counts[outcome]);
        expect(v).toBeLessThanOrEqual(after.counts[outcome]);
        const g = metrics.get(`pullman_tasks{state="${outcome}"}`)!;
        expect(g).toBeGreaterThanOrEqual(before.counts[outcome]);
        expect(g).toBeLessThanOrEqual(after.counts[outcome]);
      }
      expect(metrics.get('pullman_slots{state="used"}')! + metrics.get('pullman_slots{state="free"}')!).toBe(4);
      scrapesDuringRun++;
    }
    expect(scrapesDuringRun).toBeGreaterThan(0);

    const done = await finished(m.api, job.id);
    expect(done.counts).toMatchObject({ succeeded: 115, failed: 5, total: 120 });
    const all = await m.api.tasks(job.id);
    const executions = all.reduce((n, t) => n + t.attempts, 0);
    // Results are recorded before the API shows them, so the final scrape is exact.
    const metrics = await scrape();
    expect({
      succeeded: metrics.get('pullman_tasks_finished_total{outcome="succeeded"}'),
      failed: metrics.get('pullman_tasks_finished_total{outcome="failed"}'),
      tasksSucceeded: metrics.get('pullman_tasks{state="succeeded"}'),
      tasksFailed: metrics.get('pullman_tasks{state="failed"}'),
      jobsFailed: metrics.get('pullman_jobs{state="failed"}'),
      retries: metrics.get('pullman_tasks_requeued_total{reason="retry"}'),
      executions: metrics.get('pullman_task_duration_seconds_count'),
      dispatched: metrics.get('pullman_tasks_dispatched_total'),
      dispatchLatencies: metrics.get('pullman_dispatch_latency_seconds_count'),
      workersBusyOrReady: metrics.get('pullman_workers{state="ready"}')! + metrics.get('pullman_workers{state="busy"}')!,
      slotsUsed: metrics.get('pullman_slots{state="used"}'),
    }).toEqual({
      succeeded: done.counts.succeeded,
      failed: done.counts.failed,
      tasksSucceeded: done.counts.succeeded,
      tasksFailed: done.counts.failed,
      jobsFailed: 1,
      retries: executions - all.length,
      executions,
      dispatched: executions,
      dispatchLatencies: executions,
      workersBusyOrReady: 2,
      slotsUsed: 0,
    });
    expect(executions).toBe(120 + 12 - 3 + 5); // every 10th retried once (12, of which 3 are also every 25th), every 25th twice
    // The workers speak protocol 2: every result travelled in a results message.
    const messages = (type: string) => metrics.get(`pullman_worker_messages_total{type="${type}"}`);
    expect(messages('hello')).toBe(2);
    expect(messages('result')).toBe(0);
    expect(messages('results')).toBeGreaterThan(0);
    expect(messages('results')).toBeLessThanOrEqual(executions);
    expect(messages('pull')).toBeGreaterThan(0);
    expect(metrics.get('pullman_http_request_duration_seconds_count{method="GET",route="/v1/jobs/:id",status_code="200"}')).toBeGreaterThan(0);
  });
});
