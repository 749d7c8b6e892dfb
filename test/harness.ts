/**
 * End-to-end harness: the built `pullman-manager` and `pullman-worker` as real child
 * processes on loopback, a tiny admin API client, and waits that poll state (never sleep
 * for a fixed time and hope).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Job, ResultLine, Task, Worker } from '@pullman/protocol';

const root = fileURLToPath(new URL('..', import.meta.url));
export const MANAGER_JS = join(root, 'apps/manager/dist/server.js');
export const WORKER_JS = join(root, 'apps/worker/dist/main.js');
export const FIXTURES = join(root, 'test/fixtures');

const procs = new Set<ChildProcess>();
/** Everything any process started here ever wrote, kept after it exits (for token scans). */
const transcripts: string[] = [];

/** Kills every process the harness started (call in afterEach). */
export async function killAll(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) {
      waits.push(once(p, 'exit'));
      p.kill('SIGKILL');
    }
  }
  procs.clear();
  await Promise.all(waits);
}

/** All output of all processes started so far in this test file. */
export const allOutput = (): string => transcripts.join('\n');

export const tempDir = (prefix: string): string => mkdtempSync(join(tmpdir(), `pullman-e2e-${prefix}-`));

export interface Proc {
  proc: ChildProcess;
  /** Parsed JSON log lines so far. */
  logs: Array<Record<string, unknown>>;
  /** What the process wrote on stderr. */
  stderr(): string;
  /** Everything it wrote, stdout and stderr. */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when a log line matching `pred` has appeared (already or later). */
  waitForLog(pred: (line: Record<string, unknown>) => boolean, what?: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

function track(proc: ChildProcess, onLine?: (line: string) => void): Proc {
  procs.add(proc);
  const index = transcripts.push('') - 1;
  const logs: Array<Record<string, unknown>> = [];
  const waiters: Array<{ pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = [];
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    transcripts[index] += d.toString();
  });
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    transcripts[index] += `${line}\n`;
    onLine?.(line);
    if (!line.startsWith('{')) return;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    logs.push(parsed);
    for (const w of [...waiters]) {
      if (w.pred(parsed)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(parsed);
      }
    }
  });
  const exited = once(proc, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  return {
    proc,
    logs,
    stderr: () => err,
    output: () => transcripts[index]!,
    exited,
    waitForLog(pred, what = 'log line', timeoutMs) {
      const found = logs.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = timeoutMs === undefined ? null : setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
        waiters.push({ pred, resolve: (l) => (timer && clearTimeout(timer), resolve(l)) });
        void exited.then(({ code, signal }) => {
          if (timer) clearTimeout(timer);
          reject(new Error(`process exited (${code ?? signal}) before ${what}: ${transcripts[index]!.slice(-2000)}`));
        });
      });
    },
  };
}

export interface ManagerOpts {
  dataDir?: string;
  port?: number;
  leaseTtl?: string;
  heartbeat?: string;
  /** Another build of the manager (the release tarball's bundle) instead of apps/manager/dist. */
  managerJs?: string;
  args?: string[];
  env?: Record<string, string>;
}

export interface ManagerHandle extends Proc {
  url: string;
  port: number;
  dataDir: string;
  dbPath: string;
  adminToken: string;
  workerToken: string;
  api: Api;
  opts: ManagerOpts;
}

export async function startManager(opts: ManagerOpts = {}): Promise<ManagerHandle> {
  const dataDir = opts.dataDir ?? tempDir('mgr');
  const args = [opts.managerJs ?? MANAGER_JS, '--port', String(opts.port ?? 0), '--data-dir', dataDir, '--lease-ttl', opts.leaseTtl ?? '30s', '--heartbeat-interval', opts.heartbeat ?? '5s', ...(opts.args ?? [])];
  let resolveUrl!: (u: string) => void;
  const urlSeen = new Promise<string>((r) => (resolveUrl = r));
  const p = track(spawn(process.execPath, args, { env: { PATH: process.env.PATH, PULLMAN_LOG_LEVEL: 'info', ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] }), (line) => {
    const m = /^listening on (https?:\S+)$/.exec(line);
    if (m) resolveUrl(m[1]!);
  });
  const url = await Promise.race([urlSeen, p.exited.then(({ code }) => Promise.reject(new Error(`manager exited ${code}: ${p.output().slice(-2000)}`)))]);
  const adminToken = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  const workerToken = readFileSync(join(dataDir, 'worker.token'), 'utf8').trim();
  return { ...p, url, port: Number(new URL(url).port), dataDir, dbPath: join(dataDir, 'pullman.db'), adminToken, workerToken, api: new Api(url, adminToken), opts };
}

/** kill -9, then start again on the same data dir and port (retrying while the port is busy). */
export async function restartManager(m: ManagerHandle, overrides: Partial<ManagerOpts> = {}): Promise<ManagerHandle> {
  if (m.proc.exitCode === null && m.proc.signalCode === null) {
    m.proc.kill('SIGKILL');
    await m.exited;
  }
  for (let attempt = 0; ; attempt++) {
    try {
      return await startManager({ ...m.opts, ...overrides, dataDir: m.dataDir, port: m.port });
    } catch (err) {
      if (attempt >= 20 || !/EADDRINUSE|cannot listen/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

export interface WorkerOpts {
  name: string;
  slots?: number;
  labels?: string[];
  workDir?: string;
  /** Connect here instead of the manager's URL (e.g. through a fault-injecting proxy). */
  url?: string;
  env?: Record<string, string>;
}

export interface WorkerHandle extends Proc {
  name: string;
  workDir: string;
  opts: WorkerOpts;
}

export function startWorker(m: { url: string; workerToken: string }, opts: WorkerOpts): WorkerHandle {
  const workDir = opts.workDir ?? tempDir(`wrk-${opts.name}`);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    PULLMAN_MANAGER_URL: opts.url ?? m.url,
    PULLMAN_WORKER_TOKEN: m.workerToken,
    PULLMAN_NAME: opts.name,
    PULLMAN_SLOTS: String(opts.slots ?? 2),
    PULLMAN_WORK_DIR: workDir,
    PULLMAN_READY: 'none',
    PULLMAN_KILL_GRACE: '2s',
    ...(opts.labels ? { PULLMAN_LABELS: opts.labels.join(',') } : {}),
    ...opts.env,
  };
  const p = track(spawn(process.execPath, [WORKER_JS, 'run'], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  return { ...p, name: opts.name, workDir, opts: { ...opts, workDir } };
}

/** Runs the worker expecting it to exit at once (bad configuration). */
export async function runWorkerToExit(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const p = track(spawn(process.execPath, [WORKER_JS, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
  const { code } = await p.exited;
  return { code, stderr: p.stderr() };
}

/** The admin API, just enough for the tests (the full typed client is @pullman/client). */
export class Api {
  constructor(
    readonly url: string,
    private readonly token: string,
  ) {}

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return (res.headers.get('content-type')?.includes('ndjson') ? text : JSON.parse(text)) as T;
  }

  createJob(body: Record<string, unknown>): Promise<Job> {
    return this.call('POST', '/v1/jobs', body);
  }
  job(id: string): Promise<Job> {
    return this.call('GET', `/v1/jobs/${id}`);
  }
  task(id: string): Promise<Task> {
    return this.call('GET', `/v1/tasks/${id}`);
  }
  async tasks(jobId: string): Promise<Task[]> {
    const out: Task[] = [];
    let cursor: string | null = null;
    do {
      const page: { tasks: Task[]; nextCursor: string | null } = await this.call('GET', `/v1/jobs/${jobId}/tasks?limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
      out.push(...page.tasks);
      cursor = page.nextCursor;
    } while (cursor);
    return out;
  }
  async results(jobId: string): Promise<ResultLine[]> {
    const text = await this.call<string>('GET', `/v1/jobs/${jobId}/results`);
    return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as ResultLine);
  }
  async workers(): Promise<Worker[]> {
    return (await this.call<{ workers: Worker[] }>('GET', '/v1/workers')).workers;
  }
}

/** Polls `check` until it returns a value (not undefined), or fails after `timeoutMs`. */
export async function until<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 120_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Waits for a job to leave `active`; returns it. */
export function finished(api: Api, jobId: string, timeoutMs?: number): Promise<Job> {
  return until(`job ${jobId} to finish`, async () => {
    const j = await api.job(jobId);
    return j.state === 'active' ? undefined : j;
  }, timeoutMs);
}

/**
 * True if a process id is alive. A zombie counts as dead: in some containers PID 1 never
 * reaps orphans, so a killed grandchild lingers as `Z` though it no longer runs.
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** A loopback port with nothing listening on it. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}
