/**
 * Chaos scenarios with real processes, parameterised by size: `npm test` runs them small
 * (test/chaos.test.ts), `npm run chaos` runs them large (test/chaos/large.chaos.ts). Each one
 * injects its fault, waits (bounded) for the run to finish, checks the invariants, scans every
 * log for the tokens, and returns what it measured.
 */
import { join } from 'node:path';
import { expect } from 'vitest';
import { alive, finished, tempDir, until, type Api } from '../harness.js';
import { checkInvariants, probeShell, type InvariantStats } from '../invariants.js';
import { RawWorker } from '../support/raw-worker.js';
import { allOutput, restartManager, sleep, startManager, startWorker, type Manager, type WorkerProc } from '../support/procs.js';
import { TcpProxy } from '../support/tcp-proxy.js';

export interface ScenarioResult extends InvariantStats {
  scenario: string;
  seconds: number;
  faults: number;
  [extra: string]: number | string;
}

/** Asserts the invariants hold and returns the statistics. */
export function expectInvariants(m: Manager, o: { jobIds: string[]; expectedTasks?: Record<string, number>; leaseTtlMs: number; execLog?: string; allTerminal?: boolean }): InvariantStats {
  const report = checkInvariants(m.dbPath, o);
  expect(report.violations).toEqual([]);
  return report.stats;
}

/** No token, admin or worker, appears in anything any process printed. */
export function expectNoTokens(...tokens: string[]): void {
  const text = allOutput();
  for (const t of tokens) expect(text.includes(t), 'a token appeared in a log').toBe(false);
}

/** Creates an open job, adds tasks in bodies of up to 10,000, seals it. */
export async function submitTasks(api: Api, specs: Array<Record<string, unknown>>): Promise<string> {
  const job = await api.createJob({ name: 'chaos', open: true });
  for (let i = 0; i < specs.length; i += 10_000) await api.call('POST', `/v1/jobs/${job.id}/tasks`, { tasks: specs.slice(i, i + 10_000) });
  await api.call('POST', `/v1/jobs/${job.id}/seal`);
  return job.id;
}

const ttlMs = (ttl: string): number => (ttl.endsWith('ms') ? Number(ttl.slice(0, -2)) : Number(ttl.slice(0, -1)) * 1000);

// ---- manager killed ---------------------------------------------------------------------------

export async function managerKills(p: { tasks: number; workers: number; slots: number; kills: number; everyMs: number; timeoutMs: number }): Promise<ScenarioResult> {
  const t0 = Date.now();
  const leaseTtl = '10s';
  let m = await startManager({ leaseTtl, heartbeat: '1s' });
  const execLog = join(tempDir('exec'), 'exec.log');
  const workers = Array.from({ length: p.workers }, (_, i) => startWorker(m, { name: `w${i}`, slots: p.slots }));
  const jobId = await submitTasks(m.api, Array.from({ length: p.tasks }, (_, i) => ({ key: `t${i}`, shell: probeShell(execLog) })));
  let kills = 0;
  for (; kills < p.kills; kills++) {
    await sleep(p.everyMs);
    m = await restartManager(m);
  }
  const done = await finished(m.api, jobId, p.timeoutMs);
  expect(done.state).toBe('succeeded');
  const stats = expectInvariants(m, { jobIds: [jobId], expectedTasks: { [jobId]: p.tasks }, leaseTtlMs: ttlMs(leaseTtl), execLog });
  for (const w of workers) expect(w.proc.exitCode).toBeNull(); // workers ride out every restart
  const reconnects = workers.reduce((n, w) => n + w.logs.filter((l) => l.msg === 'registered with the manager').length - 1, 0);
  const stale = workers.reduce((n, w) => n + w.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('result was stale')).length, 0);
  expectNoTokens(m.adminToken, m.workerToken);
  return { scenario: 'manager kill -9', seconds: (Date.now() - t0) / 1000, faults: kills, ...stats, reconnects, staleResults: stale };
}

// ---- workers killed ---------------------------------------------------------------------------

export async function workerKills(p: { tasks: number; workers: number; kills: number; everyMs: number; timeoutMs: number }): Promise<ScenarioResult> {
  const t0 = Date.now();
  const leaseTtl = '3s';
  const m = await startManager({ leaseTtl, heartbeat: '500ms' });
  const execLog = join(tempDir('exec'), 'exec.log');
  const workers: WorkerProc[] = Array.from({ length: p.workers }, (_, i) => startWorker(m, { name: `w${i}`, slots: 2 }));
  const jobId = await submitTasks(m.api, Array.from({ length: p.tasks }, (_, i) => ({ key: `t${i}`, shell: probeShell(execLog, 'sleep 0.1') })));
  let kills = 0;
  for (; kills < p.kills; kills++) {
    await sleep(p.everyMs);
    if ((await m.api.job(jobId)).state !== 'active') break;
    const i = Math.floor(Math.random() * workers.length);
    const victim = workers[i]!;
    victim.proc.kill('SIGKILL');
    await victim.exited;
    // The same work dir: the new process finds its outbox and the tasks its predecessor left.
    workers[i] = startWorker(m, victim.opts);
  }
  const done = await finished(m.api, jobId, p.timeoutMs);
  expect(done.state).toBe('succeeded');
  const stats = expectInvariants(m, { jobIds: [jobId], expectedTasks: { [jobId]: p.tasks }, leaseTtlMs: ttlMs(leaseTtl), execLog });
  expectNoTokens(m.adminToken, m.workerToken);
  return { scenario: 'workers kill -9 + restart', seconds: (Date.now() - t0) / 1000, faults: kills, ...stats };
}

// ---- network cuts -----------------------------------------------------------------------------

export async function networkCuts(p: { tasks: number; cuts: Array<{ mode: 'drop' | 'blackhole'; ms: number }>; timeoutMs: number }): Promise<ScenarioResult> {
  const t0 = Date.now();
  const leaseTtl = '4s';
  const m = await startManager({ leaseTtl, heartbeat: '1s' });
  const proxy = new TcpProxy('127.0.0.1', m.port);
  const via = `http://${await proxy.start()}`;
  const execLog = join(tempDir('exec'), 'exec.log');
  // Two workers behind the proxy, one direct: work goes on during a cut, and the cut-off
  // workers' leases expire and move to it.
  const cutOff = [startWorker(m, { name: 'cut-a', slots: 2, url: via }), startWorker(m, { name: 'cut-b', slots: 2, url: via })];
  const direct = startWorker(m, { name: 'direct', slots: 1 });
  const jobId = await submitTasks(m.api, Array.from({ length: p.tasks }, (_, i) => ({ key: `t${i}`, shell: probeShell(execLog, 'sleep 0.2') })));
  for (const c of cutOff) await c.waitForLog((l) => l.msg === 'task started', `a task on ${c.name}`);
  for (const cut of p.cuts) {
    const before = cutOff.map((w) => w.logs.length);
    proxy.setMode(cut.mode);
    await sleep(cut.ms);
    if (cut.mode === 'blackhole') {
      // Nothing reaches the workers, not even a reset: they must notice the silence themselves
      // (pings unanswered for a lease TTL) instead of sitting on a dead socket until TCP gives up.
      await until('the cut-off workers to notice the silent link', () =>
        cutOff.every((w, i) => w.logs.slice(before[i]).some((l) => typeof l.msg === 'string' && l.msg.startsWith('the manager has been silent'))) ? true : undefined, 60_000, 100);
    }
    proxy.setMode('up');
    // Both sides of the cut must be working again before the next one.
    await until('the cut-off workers back', async () => {
      const ws = await m.api.workers();
      return cutOff.every((c) => ws.some((w) => w.name === c.name && (w.state === 'ready' || w.state === 'busy'))) ? true : undefined;
    }, 90_000, 250);
  }
  const done = await finished(m.api, jobId, p.timeoutMs);
  expect(done.state).toBe('succeeded');
  const stats = expectInvariants(m, { jobIds: [jobId], expectedTasks: { [jobId]: p.tasks }, leaseTtlMs: ttlMs(leaseTtl), execLog });
  for (const w of [...cutOff, direct]) expect(w.proc.exitCode).toBeNull();
  const cutOffTasks = cutOff.reduce((n, w) => n + w.logs.filter((l) => l.msg === 'task finished').length, 0);
  expect(cutOffTasks).toBeGreaterThan(0);
  await proxy.stop();
  expectNoTokens(m.adminToken, m.workerToken);
  return { scenario: `network cuts (${p.cuts.map((c) => `${c.mode} ${c.ms / 1000}s`).join(', ')})`, seconds: (Date.now() - t0) / 1000, faults: p.cuts.length, ...stats };
}

// ---- silent worker ----------------------------------------------------------------------------

export async function silentWorker(p: { tasks: number; silent: number; timeoutMs: number }): Promise<ScenarioResult> {
  const t0 = Date.now();
  const leaseTtl = '2s';
  const m = await startManager({ leaseTtl, heartbeat: '500ms' });
  const execLog = join(tempDir('exec'), 'exec.log');
  const jobId = await submitTasks(m.api, Array.from({ length: p.tasks }, (_, i) => ({ key: `t${i}`, shell: probeShell(execLog, 'sleep 0.05') })));
  // Silent workers connect first and take work: hello, pull, then nothing, socket left open.
  const silent: RawWorker[] = [];
  for (let i = 0; i < p.silent; i++) {
    const s = await RawWorker.connect(m.url, m.workerToken);
    await s.hello(`silent-${i}`);
    s.send({ type: 'pull', credits: 3 });
    await s.next((x) => x.type === 'tasks', 'tasks for the silent worker');
    silent.push(s);
  }
  const taken = silent.flatMap((s) => s.tasks().map((t) => t.taskId));
  expect(taken.length).toBeGreaterThan(0);
  startWorker(m, { name: 'honest', slots: 4 });
  const done = await finished(m.api, jobId, p.timeoutMs);
  expect(done.state).toBe('succeeded');
  // The manager closed every silent session itself (no close frame: the socket is terminated).
  for (const s of silent) await s.whenClosed(30_000);
  for (const id of taken) {
    const t = await m.api.task(id);
    expect(t.history![0]!.outcome).toBe('lost');
    expect(t.history!.at(-1)!.outcome).toBe('succeeded');
  }
  const stats = expectInvariants(m, { jobIds: [jobId], expectedTasks: { [jobId]: p.tasks }, leaseTtlMs: ttlMs(leaseTtl), execLog });
  expectNoTokens(m.adminToken, m.workerToken);
  return { scenario: 'silent workers', seconds: (Date.now() - t0) / 1000, faults: p.silent, ...stats, tasksHeldBySilent: taken.length };
}

// ---- hung tasks -------------------------------------------------------------------------------

export async function hungTasks(p: { hung: number; normal: number; timeoutMs: number }): Promise<ScenarioResult> {
  const t0 = Date.now();
  const leaseTtl = '5s';
  const m = await startManager({ leaseTtl, heartbeat: '1s' });
  const pids = tempDir('pids');
  const execLog = join(tempDir('exec'), 'exec.log');
  startWorker(m, { name: 'w', slots: 4 });
  // A hung task: records its pid, then sleeps far past its 1s timeout (and ignores SIGTERM).
  const hang = `echo $$ >> '${pids}/$PULLMAN_TASK_KEY'; trap '' TERM; exec sleep 300`;
  const specs = [
    ...Array.from({ length: p.hung }, (_, i) => ({ key: `hung${i}`, shell: hang, timeout: '1s', retries: 1 })),
    ...Array.from({ length: p.normal }, (_, i) => ({ key: `ok${i}`, shell: probeShell(execLog) })),
  ];
  const jobId = await submitTasks(m.api, specs);
  const done = await finished(m.api, jobId, p.timeoutMs);
  expect(done).toMatchObject({ state: 'failed', counts: { failed: p.hung, succeeded: p.normal } });
  const tasks = await m.api.tasks(jobId);
  for (const t of tasks.filter((x) => x.key!.startsWith('hung'))) {
    const full = await m.api.task(t.id);
    expect(full.state).toBe('failed');
    expect(full.history!.map((h) => h.outcome)).toEqual(['timed-out', 'timed-out']); // the retry ran, and timed out too
    expect(full.result!.error!.code).toBe('TIMED_OUT');
  }
  // Every hung process is gone: the timeout killed the whole group, SIGKILL after the grace.
  const { readFileSync, readdirSync } = await import('node:fs');
  const hungPids = readdirSync(pids).flatMap((f) => readFileSync(join(pids, f), 'utf8').split('\n').filter(Boolean).map(Number));
  expect(hungPids).toHaveLength(p.hung * 2);
  await until('hung processes gone', () => (hungPids.every((pid) => !alive(pid)) ? true : undefined), 20_000);
  const stats = expectInvariants(m, { jobIds: [jobId], expectedTasks: { [jobId]: specs.length }, leaseTtlMs: ttlMs(leaseTtl) });
  expectNoTokens(m.adminToken, m.workerToken);
  return { scenario: 'hung tasks (timeout 1s, retries 1)', seconds: (Date.now() - t0) / 1000, faults: p.hung, ...stats };
}

// ---- disk full --------------------------------------------------------------------------------

export async function diskFull(p: { maxPages: number; timeoutMs: number }): Promise<ScenarioResult> {
  const t0 = Date.now();
  const leaseTtl = '5s';
  const env = { PULLMAN_DB_MAX_PAGES: String(p.maxPages) };
  let m = await startManager({ leaseTtl, heartbeat: '1s', env });
  const execLog = join(tempDir('exec'), 'exec.log');
  const w = startWorker(m, { name: 'w', slots: 2 });
  // Fill the database: jobs of fat tasks (2 KiB of meta each) until a submission is refused.
  const accepted: Record<string, number> = {};
  const fat = 'x'.repeat(2048);
  let refused: { status: number; body: { error: { code: string; message: string } } } | null = null;
  for (let i = 0; i < 400 && !refused; i++) {
    const res = await fetch(`${m.url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${m.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `fill-${i}`, tasks: Array.from({ length: 20 }, (_, k) => ({ key: `k${k}`, shell: probeShell(execLog), meta: { fat } })) }),
    });
    const body = (await res.json()) as { id: string; error: { code: string; message: string } };
    if (res.status === 201) accepted[body.id] = 20;
    else refused = { status: res.status, body };
  }
  expect(refused, 'the database never filled up').not.toBeNull();
  expect(refused!.status).toBe(507);
  expect(refused!.body.error.code).toBe('STORAGE_FULL');
  expect(typeof refused!.body.error.message).toBe('string');
  // Still alive and answering while full; nothing of the refused job was stored.
  expect((await fetch(`${m.url}/healthz`)).status).toBe(200);
  const listed = (await m.api.call<{ jobs: Array<{ id: string }> }>('GET', '/v1/jobs?limit=1000')).jobs.map((j) => j.id).sort();
  expect(listed).toEqual(Object.keys(accepted).sort());
  const whileFull = expectInvariants(m, { jobIds: Object.keys(accepted), expectedTasks: accepted, leaseTtlMs: ttlMs(leaseTtl), execLog, allTerminal: false });
  // A clean stop while full works.
  m.proc.kill('SIGTERM');
  expect((await m.exited).code).toBe(0);
  // Space returns (here: the cap is lifted): the same data dir serves again, the worker's
  // outbox delivers what it could not report, and every accepted task finishes exactly once.
  m = await restartManager(m, { env: {} });
  const more = await m.api.createJob({ name: 'after', tasks: [{ key: 'after', shell: probeShell(execLog) }] });
  accepted[more.id] = 1;
  for (const id of Object.keys(accepted)) expect((await finished(m.api, id, p.timeoutMs)).state).toBe('succeeded');
  const stats = expectInvariants(m, { jobIds: Object.keys(accepted), expectedTasks: accepted, leaseTtlMs: ttlMs(leaseTtl), execLog });
  expect(w.proc.exitCode).toBeNull();
  const storageErrors = w.logs.filter((l) => l.code === 'STORAGE_FULL').length;
  expectNoTokens(m.adminToken, m.workerToken);
  return { scenario: `disk full (max ${p.maxPages} pages)`, seconds: (Date.now() - t0) / 1000, faults: 1, ...stats, jobsAccepted: Object.keys(accepted).length - 1, tasksWhenFull: whileFull.tasks, workerStorageErrors: storageErrors };
}
