/**
 * Real manager and worker processes for the chaos, fuzz and security suites: like harness.ts,
 * plus what those suites need — extra flags and environment, the raw output of every process
 * (to scan logs for tokens), restarts on the same data dir and port, and kill -9 by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Api, MANAGER_JS, WORKER_JS, tempDir } from '../harness.js';

const procs = new Set<ChildProcess>();
/** Everything any process started here ever wrote, kept after it exits (for token scans). */
const transcripts: string[] = [];

export async function killAllProcs(): Promise<void> {
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

/** All output of all processes started so far, this file's run. */
export const allOutput = (): string => transcripts.join('\n');

export interface Proc {
  proc: ChildProcess;
  logs: Array<Record<string, unknown>>;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(pred: (line: Record<string, unknown>) => boolean, what?: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

function track(proc: ChildProcess, onLine?: (line: string) => void): Proc {
  procs.add(proc);
  const index = transcripts.push('') - 1;
  const logs: Array<Record<string, unknown>> = [];
  const waiters: Array<{ pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = [];
  proc.stderr!.on('data', (d: Buffer) => (transcripts[index] += d.toString()));
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
    output: () => transcripts[index]!,
    exited,
    waitForLog(pred, what = 'log line', timeoutMs = 60_000) {
      const found = logs.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
        waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
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
  args?: string[];
  env?: Record<string, string>;
}

export interface Manager extends Proc {
  url: string;
  port: number;
  dataDir: string;
  dbPath: string;
  adminToken: string;
  workerToken: string;
  api: Api;
  opts: ManagerOpts;
}

export async function startManager(opts: ManagerOpts = {}): Promise<Manager> {
  const dataDir = opts.dataDir ?? tempDir('mgr');
  const args = [MANAGER_JS, '--port', String(opts.port ?? 0), '--data-dir', dataDir, '--lease-ttl', opts.leaseTtl ?? '30s', '--heartbeat-interval', opts.heartbeat ?? '5s', ...(opts.args ?? [])];
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
export async function restartManager(m: Manager, overrides: Partial<ManagerOpts> = {}): Promise<Manager> {
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
  workDir?: string;
  url?: string;
  env?: Record<string, string>;
}

export interface WorkerProc extends Proc {
  name: string;
  workDir: string;
  opts: WorkerOpts;
}

export function startWorker(m: { url: string; workerToken: string }, opts: WorkerOpts): WorkerProc {
  const workDir = opts.workDir ?? tempDir(`wrk-${opts.name}`);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    PULLMAN_MANAGER_URL: opts.url ?? m.url,
    PULLMAN_WORKER_TOKEN: m.workerToken,
    PULLMAN_NAME: opts.name,
    PULLMAN_SLOTS: String(opts.slots ?? 2),
    PULLMAN_WORK_DIR: workDir,
    PULLMAN_READY: 'none',
    PULLMAN_KILL_GRACE: '1s',
    ...opts.env,
  };
  const p = track(spawn(process.execPath, [WORKER_JS, 'run'], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  return { ...p, name: opts.name, workDir, opts: { ...opts, workDir } };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
