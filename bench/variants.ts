/**
 * One bench variant per function. Each runs in a fresh child process (see run.ts), starts what
 * it measures as further child processes (manager, worker, reference servers), and returns
 * plain numbers. Nothing here compares or judges: run.ts does that.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { createConnection, createServer } from 'node:net';
import { once } from 'node:events';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createInterface } from 'node:readline';
import { encodeResult, openDatabase } from '@pullman/store';
import { openFloor } from './sqlite-floor.mjs';
import {
  ROOT,
  WORKER_JS,
  SimWorker,
  api,
  median,
  percentile,
  childCpuSeconds,
  liveChildren,
  procCpuSeconds,
  procMem,
  request,
  rmDir,
  sleep,
  startManager,
  submitNoop,
  tempDir,
  track,
  waitUntil,
  within,
  type Manager,
} from './lib.js';

export type Figures = Record<string, number | string>;
export type Params = Record<string, unknown>;

const MiB = 1024 * 1024;
const num = (p: Params, k: string, d: number): number => (typeof p[k] === 'number' ? (p[k] as number) : d);
const nodeFlags = (p: Params): string[] => (typeof p.profileDir === 'string' ? ['--cpu-prof', `--cpu-prof-dir=${p.profileDir}`, ...(typeof p.profileInterval === 'number' ? [`--cpu-prof-interval=${p.profileInterval}`] : [])] : []);

// ---- 1 + 7. dispatch throughput ----------------------------------------------------------------------

/**
 * End-to-end dispatch: `tasks` no-op tasks queued first (not timed), then `workers` simulated
 * workers x `slots` each pull at once; timed until every result is acked (claim, deliver,
 * result, commit). Reports the server's CPU seconds per 100k tasks, and the bench process's own
 * (the simulated workers'), which shares the machine with it.
 * `target` = manager (the real thing), wire (bench/wire-floor.mjs: the protocol from memory, no
 * database; the floor of the worker channel on this machine) or wire-sqlite (the same with the raw
 * SQLite floor's statements per turn: the least a manager on one event loop could do) or
 * wire-sqlite-thread (those statements on a worker thread: what moving SQLite off the event loop
 * could give the least manager).
 * `backlog` queues that many tasks first, ahead of the work (higher priority), that need a label
 * no simulated worker has: what tasks no waiting worker can take cost the dispatch.
 */
async function dispatch(p: Params): Promise<Figures> {
  const workers = num(p, 'workers', 8);
  const slots = num(p, 'slots', 16);
  const tasks = num(p, 'tasks', 10_000);
  const floor = p.target === 'wire' || p.target === 'wire-sqlite' || p.target === 'wire-sqlite-thread';
  const floorDir = floor && p.target !== 'wire' ? tempDir('wire-sqlite') : null;
  const m = floor ? null : await startManager({ dbSync: p.dbSync === 'full' ? 'full' : 'normal', nodeFlags: nodeFlags(p) });
  const floorArgs = [String(tasks), ...(floorDir ? [floorDir] : []), ...(p.target === 'wire-sqlite-thread' ? ['thread'] : [])];
  const server = m ?? (await startScript('bench/wire-floor.mjs', floorArgs));
  try {
    const backlog = num(p, 'backlog', 0);
    if (m && backlog > 0) await submitNoop(m, backlog, true, { command: ['true'], requires: ['gpu'], priority: 1 });
    const jobId = m ? (await submitNoop(m, tasks)).jobId : null;
    let acked = 0;
    let done!: () => void;
    const allAcked = new Promise<void>((r) => (done = r));
    const sims = Array.from({ length: workers }, (_, i) => new SimWorker({
      url: server.url, token: m?.workerToken ?? 'x', name: `sim-${i}`, slots, autoComplete: true, protocol: num(p, 'protocol', 2),
      onAcks: (n) => {
        acked += n;
        if (acked >= tasks) done();
      },
    }));
    for (const s of sims) s.connect();
    await within(30_000, 'workers welcomed', Promise.all(sims.map((s) => s.waitWelcome())));
    const cpu0 = procCpuSeconds(server.pid);
    const own0 = process.cpuUsage();
    const t0 = performance.now();
    for (const s of sims) s.pull(slots);
    await within(600_000, `${tasks} tasks acked (got ${acked})`, allAcked);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = procCpuSeconds(server.pid) - cpu0;
    const own = process.cpuUsage(own0);
    for (const s of sims) s.close();
    if (m && jobId) {
      const job = await api<{ state: string; counts: { succeeded: number } }>(m, 'GET', `/v1/jobs/${jobId}`).catch(() => null);
      if (job && job.counts.succeeded !== tasks) throw new Error(`job counts ${JSON.stringify(job.counts)} after ${tasks} acks`);
    }
    return {
      tasksPerSec: tasks / seconds,
      seconds,
      managerCpuSecPer100k: (cpu / tasks) * 100_000,
      clientCpuSecPer100k: ((own.user + own.system) / 1e6 / tasks) * 100_000,
    };
  } finally {
    await server.stop();
    if (m) rmDir(m.dataDir);
    if (floorDir) rmDir(floorDir);
  }
}

/** A reference server script run with node, as its own process; it prints `listening on URL`. */
async function startScript(script: string, args: string[]): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const proc = track(spawn(process.execPath, [join(ROOT, script), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] }));
  const exited = once(proc, 'exit');
  const url = await within(15_000, `${script} listening`, new Promise<string>((resolve) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      const mm = /^listening on (\S+)$/.exec(l);
      if (mm) resolve(mm[1]!);
    });
  }));
  return {
    url,
    pid: proc.pid!,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * The raw better-sqlite3 floor for claim + complete: the manager's own schema and pragmas
 * (openDatabase: WAL, synchronous=NORMAL, temp_store=MEMORY), no HTTP, no WebSocket, no
 * attempts rows or job counters. One transaction claims `batch` tasks
 * (UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING), the next completes them.
 * `turns: true` runs them as a manager's turn does instead: one transaction completes the last
 * batch and claims the next.
 */
async function sqliteFloor(p: Params): Promise<Figures> {
  const tasks = num(p, 'tasks', 10_000);
  const batch = num(p, 'batch', 16);
  const dir = tempDir('floor');
  try {
    const { db, claim, complete } = openFloor(join(dir, 'floor.db'), tasks, p.dbSync === 'full' ? 'full' : 'normal');
    const result = encodeResult({ exitCode: 0, signal: null, durationMs: 0, stdoutTail: '', stderrTail: '', output: null, error: null });
    let lease = 0;
    const claimTx = db.transaction(() => {
      const l = String(++lease);
      return { l, rows: claim(l, 'w', Date.now(), batch) };
    });
    const completeRows = (l: string, rows: Array<{ id: number }>) => {
      for (const r of rows) if (!complete(Date.now(), result, r.id, l)) throw new Error('floor: complete missed');
    };
    const completeTx = db.transaction(completeRows);
    // A manager's turn: complete the last batch and claim the next in one transaction.
    const turnTx = db.transaction((last: { l: string; rows: Array<{ id: number }> }) => {
      completeRows(last.l, last.rows);
      const l = String(++lease);
      return { l, rows: claim(l, 'w', Date.now(), batch) };
    });
    let done = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const deadline = Date.now() + 300_000;
    if (p.turns === true) {
      let last = claimTx();
      while (last.rows.length > 0 && Date.now() < deadline) {
        done += last.rows.length;
        last = turnTx(last);
      }
    } else {
      while (done < tasks && Date.now() < deadline) {
        const { l, rows } = claimTx();
        if (rows.length === 0) break;
        completeTx(l, rows);
        done += rows.length;
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    db.close();
    if (done !== tasks) throw new Error(`floor completed ${done} of ${tasks}`);
    return { tasksPerSec: tasks / seconds, seconds, cpuSecPer100k: ((cpu.user + cpu.system) / 1e6 / tasks) * 100_000 };
  } finally {
    rmDir(dir);
  }
}

// ---- 2. idle dispatch latency ------------------------------------------------------------------------

/**
 * One waiting worker (1 credit). Per sample: POST one task, time until the worker receives it,
 * then let it report and re-grant its credit (one turn, like apps/worker) and wait for the ack,
 * so the next sample starts idle again with the worker waiting.
 * `target` = manager (the real thing) or relay (bench/relay.mjs, the no-database reference).
 */
async function latency(p: Params): Promise<Figures> {
  const samples = num(p, 'tasks', 1_000);
  const warmup = num(p, 'warmup', 50);
  const relay = p.target === 'relay';
  let m: Manager | null = null;
  let relayServer: Awaited<ReturnType<typeof startScript>> | null = null;
  let url: string;
  let adminToken = 'x';
  let workerToken = 'x';
  if (relay) {
    relayServer = await startScript('bench/relay.mjs', []);
    url = relayServer.url;
  } else {
    m = await startManager({ nodeFlags: nodeFlags(p) });
    ({ url, adminToken, workerToken } = m);
  }
  try {
    let jobPath = '/submit';
    if (m) {
      const job = await api<{ id: string }>(m, 'POST', '/v1/jobs', { name: 'latency', open: true });
      jobPath = `/v1/jobs/${job.id}/tasks`;
    }
    let received: ((at: number) => void) | null = null;
    // Against the manager the worker reports and re-grants its credit in one turn, like
    // apps/worker (autoComplete), so every sample starts with it waiting; the relay has no acks.
    const sim = new SimWorker({ url, token: workerToken, name: 'lat', slots: 1, autoComplete: !relay, raw: relay, onTasks: (tasks, at) => {
      received?.(at);
      if (relay) sim.acked += tasks.length;
    } });
    sim.connect();
    await within(15_000, 'latency worker ready', sim.waitWelcome());
    if (!relay) sim.pull(1);
    const body = JSON.stringify({ tasks: [{ command: ['true'] }] });
    const times: number[] = [];
    const deadline = Date.now() + 300_000;
    for (let i = 0; i < warmup + samples && Date.now() < deadline; i++) {
      const ackedBefore = sim.acked;
      const got = new Promise<number>((r) => (received = r));
      const t0 = performance.now();
      await request(`${url}${jobPath}`, { method: 'POST', token: adminToken, body, contentType: 'application/json', timeoutMs: 10_000 });
      const at = await within(10_000, 'task delivery', got);
      if (i >= warmup) times.push(at - t0);
      await waitUntil(10_000, 'ack', () => sim.acked > ackedBefore, 0);
    }
    sim.close();
    if (times.length !== samples) throw new Error(`latency: ${times.length} of ${samples} samples before the deadline`);
    return { p50Ms: percentile(times, 50), p99Ms: percentile(times, 99), meanMs: times.reduce((a, b) => a + b, 0) / times.length, samples: times.length };
  } finally {
    if (m) {
      await m.stop();
      rmDir(m.dataDir);
    }
    await relayServer?.stop();
  }
}

// ---- 3 + 6. bulk submission and memory independence ----------------------------------------------------

/** Streams `tasks` no-op tasks as one NDJSON upload; reports tasks/s and the manager's RSS. */
async function submit(p: Params): Promise<Figures> {
  const tasks = num(p, 'tasks', 1_000_000);
  const m = await startManager({ nodeFlags: nodeFlags(p) });
  try {
    await sleep(200);
    const idle = procMem(m.pid).rss;
    const { seconds } = await submitNoop(m, tasks, false);
    const mem = procMem(m.pid);
    return { tasksPerSec: tasks / seconds, seconds, peakRssMiB: mem.hwm / MiB, idleRssMiB: idle / MiB };
  } finally {
    await m.stop();
    rmDir(m.dataDir);
  }
}

/** Raw better-sqlite3 insert floor: the same schema and pragmas, 1,000 rows per transaction. */
async function insertFloor(p: Params): Promise<Figures> {
  const tasks = num(p, 'tasks', 1_000_000);
  const dir = tempDir('ins');
  try {
    const db = openDatabase({ path: join(dir, 'ins.db') });
    const now = Date.now();
    db.prepare(`INSERT INTO jobs (name, state, sealed, created_at) VALUES ('floor', 'active', 0, ?)`).run(now);
    const insert = db.prepare(`
      INSERT INTO tasks (job_id, key, state, priority, slots, requires, spec, retries, created_at) VALUES (1, NULL, 'queued', 0, 1, NULL, ?, 0, ?)
      ON CONFLICT (job_id, key) WHERE key IS NOT NULL DO NOTHING`);
    const spec = JSON.stringify({ command: ['true'] });
    const fill = db.transaction((n: number) => {
      for (let i = 0; i < n; i++) insert.run(spec, now);
    });
    const t0 = performance.now();
    for (let i = 0; i < tasks; i += 1_000) fill(Math.min(1_000, tasks - i));
    const seconds = (performance.now() - t0) / 1000;
    db.close();
    return { tasksPerSec: tasks / seconds, seconds };
  } finally {
    rmDir(dir);
  }
}

/**
 * Manager RSS with `queued` tasks waiting: queue them, restart the manager on the same data dir
 * (so ingest garbage is gone), then do ordinary work — a worker takes and finishes `work`
 * tasks, the job is read — and read VmRSS and VmHWM.
 */
async function memory(p: Params): Promise<Figures> {
  const queued = num(p, 'queued', 1_000);
  const work = num(p, 'work', 1_000);
  const first = await startManager();
  const dataDir = first.dataDir;
  let m: Manager | null = null;
  try {
    const { jobId } = await submitNoop(first, queued + work);
    await first.stop();
    m = await startManager({ dataDir, nodeFlags: nodeFlags(p) });
    // Exactly `work` credits are granted in all, so exactly `work` tasks are delivered.
    let acked = 0;
    let granted = 0;
    const grant = (n: number) => {
      const k = Math.min(n, work - granted);
      if (k > 0) sim.pull(k);
      granted += k;
    };
    const sim = new SimWorker({ url: m.url, token: m.workerToken, name: 'mem', slots: 16, onTasks: (tasks) => {
      for (const t of tasks) sim.send(`{"type":"result","taskId":"${t.taskId}","leaseId":"${t.leaseId}","report":{"exitCode":0,"signal":null,"timedOut":false,"cancelled":false,"durationMs":0,"stdoutTail":"","stderrTail":"","output":null,"error":null}}`);
    }, onAcks: (n) => {
      acked += n;
      grant(n);
    } });
    sim.connect();
    await within(15_000, 'memory worker welcomed', sim.waitWelcome());
    grant(16);
    await waitUntil(120_000, `${work} tasks done`, () => acked >= work, 5);
    await api(m, 'GET', `/v1/jobs/${jobId}`);
    await api(m, 'GET', `/v1/jobs/${jobId}/tasks?limit=100`);
    sim.close();
    await sleep(500);
    const mem = procMem(m.pid);
    return { rssMiB: mem.rss / MiB, peakRssMiB: mem.hwm / MiB, queued };
  } finally {
    await first.stop();
    if (m) await m.stop();
    rmDir(dataDir);
  }
}

// ---- 4. worker connections ---------------------------------------------------------------------------

/**
 * `sessions` simulated workers connect and heartbeat every 5 s. Steady state: the manager's
 * CPU share and RSS over `windowMs`. Then the manager is stopped (SIGTERM: clients see 1001) and
 * started again on the same data dir and port; the clients reconnect with backoff and full
 * jitter, and the storm is timed until every one of them has been welcomed again.
 */
async function connections(p: Params): Promise<Figures> {
  const sessions = num(p, 'sessions', 5_000);
  const windowMs = num(p, 'windowMs', 10_000);
  const settleMs = num(p, 'settleMs', 6_000);
  const m1 = await startManager({ nodeFlags: nodeFlags(p) });
  const dataDir = m1.dataDir;
  const sims: SimWorker[] = [];
  let m2: Manager | null = null;
  try {
    await sleep(200);
    const idleRss = procMem(m1.pid).rss;
    const c0 = procCpuSeconds(m1.pid);
    const t0 = performance.now();
    // Connect in waves of 250 so the accept queue (somaxconn) is not the thing measured.
    for (let i = 0; i < sessions; i += 250) {
      const wave: SimWorker[] = [];
      for (let j = i; j < Math.min(sessions, i + 250); j++) {
        const s = new SimWorker({ url: m1.url, token: m1.workerToken, name: `conn-${j}`, slots: 1, heartbeat: true, reconnect: true });
        sims.push(s);
        wave.push(s);
        s.connect();
      }
      await within(60_000, `wave of ${wave.length} welcomed`, Promise.all(wave.map((s) => s.waitWelcome())));
    }
    const connectSeconds = (performance.now() - t0) / 1000;
    const connectCpu = procCpuSeconds(m1.pid) - c0;
    await sleep(settleMs); // past one heartbeat interval: every client is heartbeating now
    const c1 = procCpuSeconds(m1.pid);
    const w0 = performance.now();
    await sleep(windowMs);
    const cpuPercent = ((procCpuSeconds(m1.pid) - c1) / ((performance.now() - w0) / 1000)) * 100;
    const mem = procMem(m1.pid);

    // The reconnect storm.
    const port = m1.port;
    const r0 = performance.now();
    await m1.stop();
    await waitUntil(30_000, 'clients noticed the restart', () => sims.every((s) => !s.connected), 5);
    m2 = await startManager({ dataDir, port, nodeFlags: nodeFlags(p) });
    const l0 = performance.now();
    const deadline = num(p, 'stormLimitMs', 120_000);
    await waitUntil(deadline, `all ${sessions} clients back`, () => sims.every((s) => s.connected), 5);
    const back = performance.now();
    const workers = await api<{ workers: Array<{ state: string }> }>(m2, 'GET', '/v1/workers');
    const live = workers.workers.filter((w) => w.state === 'ready' || w.state === 'busy').length;
    if (live !== sessions) throw new Error(`after the storm the manager lists ${live} live workers, expected ${sessions}`);
    return {
      sessions,
      cpuPercent,
      rssMiB: mem.rss / MiB,
      idleRssMiB: idleRss / MiB,
      connectSeconds,
      connectCpuSeconds: connectCpu,
      reconnectSeconds: (back - l0) / 1000,
      restartTotalSeconds: (back - r0) / 1000,
    };
  } finally {
    for (const s of sims) s.close();
    await m1.stop();
    if (m2) await m2.stop();
    rmDir(dataDir);
  }
}

// ---- 5. local execution --------------------------------------------------------------------------------

/**
 * One real worker (apps/worker) with slots = CPUs runs `tasks` `true` tasks, timed from submit to
 * done. `spawnHelper: 'off'` has the worker fork the tasks itself (PULLMAN_SPAWN_HELPER=off).
 * `fsyncMs` makes each of the worker's fsyncs that much slower (bench/slow-fsync.mjs).
 */
async function local(p: Params): Promise<Figures> {
  const tasks = num(p, 'tasks', 2_000);
  const slots = num(p, 'slots', cpus().length);
  const m = await startManager({ nodeFlags: nodeFlags(p) });
  const workDir = tempDir('wrk');
  const fsyncMs = p.fsyncMs === undefined ? null : num(p, 'fsyncMs', 10);
  const slowDisk = fsyncMs === null ? {} : { NODE_OPTIONS: `--import=${pathToFileURL(join(ROOT, 'bench/slow-fsync.mjs')).href}`, PULLMAN_BENCH_FSYNC_MS: String(fsyncMs) };
  const worker = track(spawn(process.execPath, [...nodeFlags(p).map((f) => f.replace(/^--cpu-prof-dir=(.*)$/, '--cpu-prof-dir=$1/worker')), WORKER_JS, 'run'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PULLMAN_MANAGER_URL: m.url, PULLMAN_WORKER_TOKEN: m.workerToken, PULLMAN_NAME: 'bench-local', PULLMAN_SLOTS: String(slots), PULLMAN_WORK_DIR: workDir, PULLMAN_READY: 'none', PULLMAN_SPAWN_HELPER: p.spawnHelper === 'off' ? 'off' : 'auto', ...slowDisk },
    stdio: ['ignore', 'ignore', 'pipe'],
  }));
  let err = '';
  worker.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4_000)));
  try {
    await waitUntil(30_000, 'worker connected', async () => (await api<{ workers: Array<{ state: string }> }>(m, 'GET', '/v1/workers')).workers.some((w) => w.state === 'ready'), 50);
    // The worker's live children: its spawn helper, which forks the tasks (apps/worker/src/spawn-helper.ts).
    const helpers = liveChildren(worker.pid!);
    const helperCpu = () => helpers.reduce((sum, pid) => sum + procCpuSeconds(pid), 0);
    const tasksCpu = () => childCpuSeconds(worker.pid!) + helpers.reduce((sum, pid) => sum + childCpuSeconds(pid), 0);
    const cpu0 = { worker: procCpuSeconds(worker.pid!) + helperCpu(), manager: procCpuSeconds(m.pid), tasks: tasksCpu() };
    const t0 = performance.now();
    const job = await api<{ id: string }>(m, 'POST', '/v1/jobs', { name: 'local', tasks: Array.from({ length: tasks }, () => ({ command: ['true'] })) });
    let state = 'active';
    await waitUntil(300_000, `job of ${tasks} true tasks done (worker stderr: ${err})`, async () => {
      state = (await api<{ state: string }>(m, 'GET', `/v1/jobs/${job.id}`)).state;
      return state !== 'active';
    }, 10);
    const seconds = (performance.now() - t0) / 1000;
    if (state !== 'succeeded') throw new Error(`local job ended ${state}`);
    // Where each task's CPU goes, against xargs' whole cost per task (the budget the target
    // leaves: two cores at 0.7 x xargs' rate). The tasks' own is what the worker reaped.
    const perTaskMs = (s: number) => (s / tasks) * 1000;
    return {
      tasksPerSec: tasks / seconds, seconds, slots,
      workerCpuMsPerTask: perTaskMs(procCpuSeconds(worker.pid!) + helperCpu() - cpu0.worker),
      taskCpuMsPerTask: perTaskMs(tasksCpu() - cpu0.tasks),
      managerCpuMsPerTask: perTaskMs(procCpuSeconds(m.pid) - cpu0.manager),
    };
  } finally {
    worker.kill('SIGTERM');
    await within(30_000, 'worker exit', once(worker, 'exit')).catch(() => worker.kill('SIGKILL'));
    await m.stop();
    rmDir(m.dataDir);
    rmDir(workDir);
  }
}

/** The reference: `seq N | xargs -P<CPUs> -n1 true`. */
async function xargs(p: Params): Promise<Figures> {
  const tasks = num(p, 'tasks', 2_000);
  const procs = num(p, 'slots', cpus().length);
  const cpu0 = childCpuSeconds(process.pid);
  const t0 = performance.now();
  const r = spawnSync('sh', ['-c', `seq ${tasks} | xargs -P${procs} -n1 true`], { timeout: 300_000 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`xargs exited ${r.status}: ${r.stderr?.toString()}`);
  // xargs, its `true`s and the shell: the whole CPU cost of a task started the cheapest way.
  return { tasksPerSec: tasks / seconds, seconds, slots: procs, cpuMsPerTask: ((childCpuSeconds(process.pid) - cpu0) / tasks) * 1000 };
}

/**
 * The floor for any Node.js worker: child_process.spawn of `true` with piped stdio, detached
 * (as apps/worker spawns), `slots` at a time, and nothing else. Node's spawn forks on the main
 * thread, so this bounds what a worker written in Node can reach on this machine.
 */
async function nodeSpawn(p: Params): Promise<Figures> {
  const tasks = num(p, 'tasks', 2_000);
  const slots = num(p, 'slots', cpus().length);
  let started = 0;
  let done = 0;
  const t0 = performance.now();
  await within(300_000, 'node spawn floor', new Promise<void>((resolve, reject) => {
    const next = () => {
      if (started >= tasks) return;
      started++;
      const c = spawn('true', [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      c.once('error', reject);
      c.once('close', (code) => {
        if (code !== 0) return reject(new Error(`true exited ${code}`));
        if (++done === tasks) resolve();
        else next();
      });
    };
    for (let i = 0; i < slots; i++) next();
  }));
  const seconds = (performance.now() - t0) / 1000;
  return { tasksPerSec: tasks / seconds, seconds, slots };
}

/**
 * The floor for a worker that starts its tasks through a small helper process
 * (bench/fork-server.pl, in Perl) instead of forking itself: `slots` `true`s at a time, each
 * requested over a pipe and reported back when it exits, and nothing else: no files, no
 * manager, no result. What the local target would need from any worker built that way.
 */
async function forkServer(p: Params): Promise<Figures> {
  const tasks = num(p, 'tasks', 2_000);
  const slots = num(p, 'slots', cpus().length);
  const helper = track(spawn('perl', [join(ROOT, 'bench/fork-server.pl')], { stdio: ['pipe', 'pipe', 'inherit'] }));
  let started = 0;
  let done = 0;
  const t0 = performance.now();
  try {
    await within(300_000, 'fork server floor', new Promise<void>((resolve, reject) => {
      helper.once('error', reject);
      helper.once('exit', (code) => done < tasks && reject(new Error(`fork server exited ${code} after ${done} tasks`)));
      const next = () => started < tasks && helper.stdin!.write(`${++started}\n`);
      createInterface({ input: helper.stdout! }).on('line', (line) => {
        const status = line.split(' ')[1];
        if (status !== '0') return reject(new Error(`true ended with wait status ${status}`));
        if (++done === tasks) resolve();
        else next();
      });
      for (let i = 0; i < slots; i++) next();
    }));
    return { tasksPerSec: tasks / ((performance.now() - t0) / 1000), seconds: (performance.now() - t0) / 1000, slots };
  } finally {
    helper.stdin!.end();
    await within(10_000, 'fork server exit', once(helper, 'exit')).catch(() => helper.kill('SIGKILL'));
  }
}

// ---- --vs bullmq -----------------------------------------------------------------------------------

/** Where `--vs bullmq` installs bullmq and ioredis (never part of the workspace). */
export const VS_DIR = join(ROOT, 'bench/.vs');

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/**
 * BullMQ side by side: Debian's redis-server (no persistence, loopback) and `workers` BullMQ
 * Worker instances x concurrency `slots` in this process, no-op processor. `tasks` jobs are
 * added with addBulk first (not timed), then the workers start; timed until all completed.
 * CPU per 100k counts this process and redis-server together.
 */
async function bullmq(p: Params): Promise<Figures> {
  const workers = num(p, 'workers', 1);
  const slots = num(p, 'slots', 64);
  const tasks = num(p, 'tasks', 10_000);
  const req = createRequire(join(VS_DIR, 'package.json'));
  const { Queue, Worker } = req('bullmq') as {
    Queue: new (name: string, o: object) => { addBulk(jobs: object[]): Promise<unknown>; waitUntilReady(): Promise<unknown>; close(): Promise<void> };
    Worker: new (name: string, fn: () => Promise<void>, o: object) => { on(ev: string, fn: () => void): void; close(): Promise<void>; waitUntilReady(): Promise<unknown> };
  };
  const port = await freePort();
  const dir = tempDir('redis');
  const redis = track(spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning'], { stdio: ['ignore', 'pipe', 'inherit'] }));
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  try {
    await waitUntil(10_000, 'redis-server accepting connections', () => new Promise<boolean>((resolve) => {
      const s = createConnection(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    }), 50);
    const queue = new Queue('bench', { connection });
    await queue.waitUntilReady();
    for (let i = 0; i < tasks; i += 1_000) await queue.addBulk(Array.from({ length: Math.min(1_000, tasks - i) }, (_, k) => ({ name: 'noop', data: { i: i + k } })));
    let completed = 0;
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const cpu0 = procCpuSeconds(process.pid) + procCpuSeconds(redis.pid!);
    const t0 = performance.now();
    const ws = Array.from({ length: workers }, () => {
      const w = new Worker('bench', async () => {}, { connection, concurrency: slots });
      w.on('completed', () => {
        if (++completed === tasks) done();
      });
      return w;
    });
    await within(600_000, `${tasks} BullMQ jobs completed (got ${completed})`, all);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = procCpuSeconds(process.pid) + procCpuSeconds(redis.pid!) - cpu0;
    await Promise.all(ws.map((w) => w.close()));
    await queue.close();
    return { tasksPerSec: tasks / seconds, seconds, cpuSecPer100k: (cpu / tasks) * 100_000 };
  } finally {
    redis.kill('SIGTERM');
    await within(10_000, 'redis exit', once(redis, 'exit')).catch(() => redis.kill('SIGKILL'));
    rmDir(dir);
  }
}

export const VARIANTS: Record<string, (p: Params) => Promise<Figures>> = {
  dispatch,
  'sqlite-floor': sqliteFloor,
  latency,
  submit,
  'insert-floor': insertFloor,
  memory,
  connections,
  local,
  xargs,
  'node-spawn': nodeSpawn,
  'fork-server': forkServer,
  bullmq,
};

export { median };
