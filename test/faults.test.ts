/**
 * Faults with real processes: a worker killed mid-task, the manager killed mid-run, a busy
 * worker drained. Each ends by checking that nothing was lost and nothing recorded twice.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Task } from '@pullman/protocol';
import { finished, killAll, startManager, startWorker, until, type Api } from './harness.js';

afterEach(killAll);

/** Every task terminal, succeeded ones with exactly one succeeded attempt, counters consistent. */
async function expectRecordedOnce(api: Api, jobId: string, total: number): Promise<Task[]> {
  const tasks = await api.tasks(jobId);
  expect(tasks).toHaveLength(total);
  const full = await Promise.all(tasks.map((t) => api.task(t.id)));
  for (const t of full) {
    expect(t.state).toBe('succeeded');
    const outcomes = t.history!.map((h) => h.outcome);
    expect(outcomes.filter((o) => o === 'succeeded')).toHaveLength(1);
    expect(outcomes.at(-1)).toBe('succeeded');
    expect(outcomes.filter((o) => o === 'failed' || o === 'timed-out')).toEqual([]); // losses never spend retries
  }
  const job = await api.job(jobId);
  expect(job.counts).toMatchObject({ succeeded: total, total, queued: 0, running: 0 });
  return full;
}

describe('faults', () => {
  it('a worker killed with SIGKILL mid-task: its tasks run again elsewhere and are recorded once', async () => {
    const m = await startManager({ leaseTtl: '2s', heartbeat: '500ms' });
    const victim = startWorker(m, { name: 'victim', slots: 2 });
    const job = await m.api.createJob({ tasks: Array.from({ length: 6 }, (_, i) => ({ key: `t${i}`, shell: 'sleep 0.5' })) });
    await victim.waitForLog((l) => l.msg === 'task started', 'a task start on the victim');
    victim.proc.kill('SIGKILL');
    await victim.exited;
    const survivor = startWorker(m, { name: 'survivor', slots: 2 });
    expect((await finished(m.api, job.id)).state).toBe('succeeded');
    const tasks = await expectRecordedOnce(m.api, job.id, 6);
    const lost = tasks.filter((t) => t.history!.some((h) => h.outcome === 'lost'));
    expect(lost.length).toBeGreaterThan(0); // the victim's tasks came back through lease expiry
    const survivorId = (await m.api.workers()).find((w) => w.name === 'survivor')!.id;
    for (const t of lost) expect(t.workerId).toBe(survivorId);
    expect(survivor.proc.exitCode).toBeNull();
  });

  it('the manager killed with SIGKILL mid-run: workers reconnect, outboxes deliver, nothing lost or doubled', async () => {
    const m = await startManager({ leaseTtl: '10s', heartbeat: '1s' });
    const workers = [startWorker(m, { name: 'a', slots: 2 }), startWorker(m, { name: 'b', slots: 2 })];
    const job = await m.api.createJob({ tasks: Array.from({ length: 120 }, (_, i) => ({ key: `t${i}`, shell: `sleep 0.2; echo '{"i":${i}}' > "$PULLMAN_OUTPUT"` })) });
    await until('some progress', async () => ((await m.api.job(job.id)).counts.succeeded >= 20 ? true : undefined));
    m.proc.kill('SIGKILL');
    await m.exited;
    // Tasks keep finishing while the manager is down; their results wait in the outboxes.
    await Promise.all(workers.map((w) => w.waitForLog((l) => l.msg === 'disconnected from the manager', 'disconnect')));
    const restarted = await startManager({ dataDir: m.dataDir, port: m.port, leaseTtl: '10s', heartbeat: '1s' });
    expect((await finished(restarted.api, job.id)).state).toBe('succeeded');
    await expectRecordedOnce(restarted.api, job.id, 120);
    for (const r of await restarted.api.results(job.id)) expect(r.output).toEqual({ i: Number(r.key!.slice(1)) });
    // Results finished during the outage went through the outbox: a task finished after the
    // disconnect and before the worker registered again.
    let finishedOffline = 0;
    for (const w of workers) {
      expect(w.logs.filter((l) => l.msg === 'registered with the manager').length).toBeGreaterThanOrEqual(2);
      expect(w.proc.exitCode).toBeNull();
      const cut = w.logs.findIndex((l) => l.msg === 'disconnected from the manager');
      const back = w.logs.findIndex((l, i) => i > cut && l.msg === 'registered with the manager');
      finishedOffline += w.logs.slice(cut, back).filter((l) => l.msg === 'task finished').length;
    }
    expect(finishedOffline).toBeGreaterThan(0);
  });

  it('a busy worker drained with SIGTERM releases what it cannot finish, exits 0, and the tasks complete elsewhere', async () => {
    const m = await startManager();
    // First attempts hang; any later attempt is quick. Released tasks come back as attempt 2.
    const shell = 'if [ "$PULLMAN_ATTEMPT" = 1 ]; then exec sleep 300; fi; true';
    const busy = startWorker(m, { name: 'busy', slots: 2, env: { PULLMAN_DRAIN_TIMEOUT: '500ms' } });
    const job = await m.api.createJob({ tasks: [{ key: 'x', shell, retries: 0 }, { key: 'y', shell, retries: 0 }] });
    await until('both tasks running on busy', async () => ((await m.api.job(job.id)).counts.running === 2 ? true : undefined));
    busy.proc.kill('SIGTERM');
    expect(await busy.exited).toEqual({ code: 0, signal: null });
    expect(busy.logs.some((l) => l.msg === 'state draining')).toBe(true);
    const busyRecord = (await m.api.workers()).find((w) => w.name === 'busy')!;
    expect(busyRecord.state).toBe('gone');

    startWorker(m, { name: 'other', slots: 2 });
    expect((await finished(m.api, job.id)).state).toBe('succeeded');
    const tasks = await Promise.all((await m.api.tasks(job.id)).map((t) => m.api.task(t.id)));
    for (const t of tasks) expect(t.history!.map((h) => h.outcome)).toEqual(['released', 'succeeded']);
  });

  it('a worker drained while its tasks can finish lets them finish and reports them before leaving', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w', slots: 2 });
    const job = await m.api.createJob({ tasks: [{ shell: 'sleep 1' }, { shell: 'sleep 1' }] });
    await until('both running', async () => ((await m.api.job(job.id)).counts.running === 2 ? true : undefined));
    w.proc.kill('SIGTERM');
    expect((await w.exited).code).toBe(0);
    const done = await m.api.job(job.id);
    expect(done).toMatchObject({ state: 'succeeded', counts: { succeeded: 2 } });
  });

  it('a drain requested through the API stops the worker cleanly', async () => {
    const m = await startManager();
    const w = startWorker(m, { name: 'w', slots: 1 });
    const log = await w.waitForLog((l) => l.msg === 'registered with the manager', 'registration');
    await m.api.call('POST', `/v1/workers/${log.workerId as string}/drain`);
    expect((await w.exited).code).toBe(0);
    expect((await m.api.workers())[0]!.state).toBe('gone');
  });
});
