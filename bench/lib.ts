/**
 * Bench plumbing: the real manager as a child process, /proc readings, a bounded HTTP client,
 * and a simulated worker that speaks the real WebSocket protocol (docs/protocol.md).
 *
 * Everything here is loopback-only (127.0.0.1) and every wait is bounded by a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { sendFrames } from '@pullman/protocol';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const MANAGER_JS = join(ROOT, 'apps/manager/dist/server.js');
export const WORKER_JS = join(ROOT, 'apps/worker/dist/main.js');

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const tempDir = (prefix: string): string => mkdtempSync(join(tmpdir(), `pullman-bench-${prefix}-`));
export const rmDir = (dir: string): void => rmSync(dir, { recursive: true, force: true });

/** Rejects after `ms` with a message naming what was awaited. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `pred` every `intervalMs` until it is true, for at most `ms`. */
export async function waitUntil(ms: number, what: string, pred: () => boolean | Promise<boolean>, intervalMs = 10): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(intervalMs);
  }
}

// ---- /proc ---------------------------------------------------------------------------------------

/** VmRSS and VmHWM (peak RSS) of a process, in bytes. */
export function procMem(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/**
 * CPU seconds from /proc/<pid>/stat: the process's own (utime + stime, fields 14 and 15), or
 * with `children`, those of the children it waited for (cutime + cstime, 16 and 17: the tasks a
 * worker ran).
 */
function statCpuSeconds(pid: number, children: boolean): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the ")" of the command name, which may itself hold spaces.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const at = children ? 13 : 11;
  const CLK_TCK = 100; // Linux USER_HZ, fixed at 100 on every architecture Node runs on
  return (Number(f[at]) + Number(f[at + 1])) / CLK_TCK;
}

/** CPU seconds (user + system) a process has used so far. */
export const procCpuSeconds = (pid: number): number => statCpuSeconds(pid, false);

/** CPU seconds of a process's waited-for children: the tasks a worker ran. */
export const childCpuSeconds = (pid: number): number => statCpuSeconds(pid, true);

/** Pids of a process's live children (every thread's), from /proc. */
export function liveChildren(pid: number): number[] {
  const out: number[] = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      out.push(...readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

// ---- the manager -----------------------------------------------------------------------------------

export interface Manager {
  proc: ChildProcess;
  pid: number;
  url: string;
  port: number;
  dataDir: string;
  adminToken: string;
  workerToken: string;
  stderr(): string;
  /** SIGTERM and wait for a clean exit (the CPU profile, if any, is written then). */
  stop(): Promise<void>;
}

export interface ManagerOptions {
  dataDir?: string;
  port?: number;
  dbSync?: 'normal' | 'full';
  /** Extra node flags, e.g. --cpu-prof --cpu-prof-dir=DIR. */
  nodeFlags?: string[];
  heartbeat?: string;
  leaseTtl?: string;
}

const live = new Set<ChildProcess>();
/** SIGKILLs every child this process started and has not reaped (on error paths and exit). */
export function killChildren(): void {
  for (const p of live) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  live.clear();
}
process.on('exit', killChildren);

export function track(proc: ChildProcess): ChildProcess {
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  return proc;
}

export async function startManager(o: ManagerOptions = {}): Promise<Manager> {
  const dataDir = o.dataDir ?? tempDir('mgr');
  const args = [
    ...(o.nodeFlags ?? []),
    MANAGER_JS,
    '--host', '127.0.0.1',
    '--port', String(o.port ?? 0),
    '--data-dir', dataDir,
    '--log-level', 'warn',
    '--db-sync', o.dbSync ?? 'normal',
    '--heartbeat-interval', o.heartbeat ?? '5s',
    '--lease-ttl', o.leaseTtl ?? '30s',
  ];
  const env = { PATH: process.env.PATH, HOME: process.env.HOME };
  const proc = track(spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-8_000)));
  const exited = once(proc, 'exit');
  const url = await within(30_000, 'manager "listening on" line', new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      const m = /^listening on (http\S+)$/.exec(line);
      if (m) resolve(m[1]!);
    });
    void exited.then(([code]) => reject(new Error(`manager exited (${code}) before listening: ${err}`)));
  }));
  const tokens = (role: string) => readFileSync(join(dataDir, `${role}.token`), 'utf8').trim();
  return {
    proc,
    pid: proc.pid!,
    url,
    port: Number(new URL(url).port),
    dataDir,
    adminToken: tokens('admin'),
    workerToken: tokens('worker'),
    stderr: () => err,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      try {
        await within(30_000, 'manager exit after SIGTERM', exited);
      } catch (e) {
        proc.kill('SIGKILL');
        throw e;
      }
    },
  };
}

// ---- HTTP ------------------------------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });

/** One HTTP request on loopback with a keep-alive agent; rejects on non-2xx or after `timeoutMs`. */
export function request(
  url: string,
  opts: { method?: string; token?: string; body?: string | AsyncIterable<string | Buffer> | Iterable<string | Buffer>; contentType?: string; timeoutMs?: number } = {},
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers: Record<string, string> = {};
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (opts.contentType) headers['content-type'] = opts.contentType;
    if (typeof opts.body === 'string') headers['content-length'] = String(Buffer.byteLength(opts.body));
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method: opts.method ?? 'GET', headers, agent, timeout: opts.timeoutMs ?? 120_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if ((res.statusCode ?? 0) >= 300) reject(new Error(`${opts.method ?? 'GET'} ${u.pathname}: ${res.statusCode} ${text.slice(0, 500)}`));
        else resolve({ status: res.statusCode!, text });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${opts.method ?? 'GET'} ${u.pathname}: timed out`)));
    req.on('error', reject);
    if (opts.body === undefined) req.end();
    else if (typeof opts.body === 'string') req.end(opts.body);
    else {
      const body = opts.body;
      void (async () => {
        try {
          for await (const chunk of body as AsyncIterable<string | Buffer>) {
            if (!req.write(chunk)) await once(req, 'drain');
          }
          req.end();
        } catch (e) {
          req.destroy(e as Error);
        }
      })();
    }
  });
}

export async function api<T>(m: { url: string; adminToken: string }, method: string, path: string, body?: unknown): Promise<T> {
  const r = await request(`${m.url}${path}`, { method, token: m.adminToken, ...(body === undefined ? {} : { body: JSON.stringify(body), contentType: 'application/json' }) });
  return JSON.parse(r.text) as T;
}

/** `count` NDJSON lines of no-op TaskSpecs, in chunks of about 64 KiB. */
export function* ndjsonTasks(count: number, spec: object = { command: ['true'] }): Generator<string> {
  const line = JSON.stringify(spec) + '\n';
  const perChunk = Math.max(1, Math.floor(65_536 / line.length));
  for (let i = 0; i < count; i += perChunk) yield line.repeat(Math.min(perChunk, count - i));
}

/** Creates an open job, streams `count` no-op tasks (or `spec`) into it as NDJSON, optionally seals it. */
export async function submitNoop(m: Manager, count: number, seal = true, spec?: object): Promise<{ jobId: string; seconds: number }> {
  const job = await api<{ id: string }>(m, 'POST', '/v1/jobs', { name: `bench-${count}`, open: true });
  const t0 = performance.now();
  const r = await request(`${m.url}/v1/jobs/${job.id}/tasks`, { method: 'POST', token: m.adminToken, contentType: 'application/x-ndjson', body: ndjsonTasks(count, spec), timeoutMs: 600_000 });
  const seconds = (performance.now() - t0) / 1000;
  const { accepted } = JSON.parse(r.text) as { accepted: number };
  if (accepted !== count) throw new Error(`submitted ${count} tasks, manager accepted ${accepted}`);
  if (seal) await api(m, 'POST', `/v1/jobs/${job.id}/seal`);
  return { jobId: job.id, seconds };
}

// ---- simulated workers -------------------------------------------------------------------------------

const OK_REPORT = { exitCode: 0, signal: null, timedOut: false, cancelled: false, durationMs: 0, stdoutTail: '', stderrTail: '', output: null, error: null };

export interface SimWorkerOptions {
  url: string;
  token: string;
  name: string;
  slots: number;
  /** Run tasks at once: answer each delivery with results and re-grant the credits. */
  autoComplete?: boolean;
  /**
   * The newest protocol version to offer in hello (default 2). The session speaks what welcome
   * says: on 2 a delivery's results go back in one `results` frame, on 1 one `result` frame each.
   */
  protocol?: number;
  onTasks?: (tasks: Array<{ taskId: string; leaseId: string }>, at: number) => void;
  onAcks?: (n: number) => void;
  /** Send heartbeats every welcome.heartbeatIntervalMs, first one at a random phase. */
  heartbeat?: boolean;
  /** Reconnect after a close with exponential backoff and full jitter, like apps/worker. */
  reconnect?: boolean;
  /** No hello: the open socket counts as welcomed (for bench/relay.mjs, which has no protocol). */
  raw?: boolean;
}

/** Reconnect backoff of the reference worker: uniform in [0, min(30 s, 500 ms * 2^attempt)). */
export const backoffDelay = (attempt: number): number => Math.floor(Math.random() * Math.min(30_000, 500 * 2 ** Math.min(attempt, 16)));

/**
 * A worker session over the real WebSocket protocol, minus execution: tasks "finish" the moment
 * they arrive. Keeps its worker id across reconnects, like the real daemon.
 */
export class SimWorker {
  workerId: string | undefined;
  welcomed = 0;
  connected = false;
  acked = 0;
  private ws: WebSocket | null = null;
  private hbTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private stopped = false;
  /** The version welcome agreed on. */
  private protocol = 1;
  private welcomeWaiters: Array<() => void> = [];

  constructor(readonly o: SimWorkerOptions) {}

  connect(): void {
    if (this.stopped) return;
    const ws = new WebSocket(`${this.o.url.replace(/^http/, 'ws')}/v1/worker`, { headers: { authorization: `Bearer ${this.o.token}` }, perMessageDeflate: false, handshakeTimeout: 30_000 });
    this.ws = ws;
    ws.on('open', () => {
      if (this.o.raw) {
        this.connected = true;
        for (const w of this.welcomeWaiters.splice(0)) w();
        return;
      }
      ws.send(JSON.stringify({ type: 'hello', protocol: this.o.protocol ?? 2, ...(this.workerId ? { workerId: this.workerId } : {}), name: this.o.name, hostname: 'bench', slots: this.o.slots, labels: [], version: 'bench', vm: null, running: [] }));
    });
    ws.on('message', (data) => this.onMessage(data.toString()));
    ws.on('error', () => {}); // 'close' follows
    ws.on('close', () => {
      this.connected = false;
      if (this.hbTimer) clearInterval(this.hbTimer);
      this.hbTimer = null;
      if (this.ws === ws) this.ws = null;
      if (this.o.reconnect && !this.stopped) this.retryTimer = setTimeout(() => this.connect(), backoffDelay(this.attempt++));
    });
  }

  /** Resolves once the next (or current) session is welcomed. */
  waitWelcome(): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((r) => this.welcomeWaiters.push(r));
  }

  pull(credits: number): void {
    this.send(`{"type":"pull","credits":${credits}}`);
  }

  send(text: string): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  close(): void {
    this.stopped = true;
    if (this.hbTimer) clearInterval(this.hbTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.ws?.terminate();
  }

  private onMessage(text: string): void {
    const at = performance.now();
    const msg = JSON.parse(text) as { type: string; [k: string]: unknown };
    switch (msg.type) {
      case 'welcome': {
        this.workerId = msg.workerId as string;
        this.protocol = msg.protocol as number;
        this.connected = true;
        this.welcomed++;
        this.attempt = 0;
        if (this.o.heartbeat) {
          const every = msg.heartbeatIntervalMs as number;
          const first = setTimeout(() => {
            this.send('{"type":"heartbeat"}');
            this.hbTimer = setInterval(() => this.send('{"type":"heartbeat"}'), every);
          }, Math.random() * every);
          this.hbTimer = first;
        }
        for (const w of this.welcomeWaiters.splice(0)) w();
        return;
      }
      case 'tasks': {
        const tasks = msg.tasks as Array<{ taskId: string; leaseId: string; spec: { slots?: number } }>;
        this.o.onTasks?.(tasks, at);
        if (this.o.autoComplete) {
          // As apps/worker does: the turn's results, then one pull with their slots, corked.
          let credits = 0;
          for (const t of tasks) credits += t.spec.slots ?? 1;
          const results = tasks.map((t) => `{"taskId":"${t.taskId}","leaseId":"${t.leaseId}","report":${REPORT_JSON}}`);
          const frames = this.protocol >= 2 ? [`{"type":"results","results":[${results.join(',')}]}`] : results.map((r) => `{"type":"result",${r.slice(1)}`);
          if (this.ws?.readyState === WebSocket.OPEN) sendFrames(this.ws, [...frames, `{"type":"pull","credits":${credits}}`]);
        }
        return;
      }
      case 'ack':
        this.acked++;
        this.o.onAcks?.(1);
        return;
      case 'acks': {
        const n = (msg.acks as unknown[]).length;
        this.acked += n;
        this.o.onAcks?.(n);
        return;
      }
      case 'error':
        if (msg.fatal) throw new Error(`manager sent a fatal error: ${String(msg.message)}`);
        return;
      default:
        return;
    }
  }
}

const REPORT_JSON = JSON.stringify(OK_REPORT);

// ---- statistics --------------------------------------------------------------------------------------

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
