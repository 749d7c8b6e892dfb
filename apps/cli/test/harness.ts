/**
 * CLI test harness: the built `pullman-manager` and `pullman-worker` as real processes on
 * loopback, and the built `pullman` binary run to its exit. Mirrors test/harness.ts (kept
 * separate so the two suites can change independently). Waits poll state; nothing sleeps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
export const ROOT = root;
export const MANAGER_JS = join(root, 'apps/manager/dist/server.js');
export const WORKER_JS = join(root, 'apps/worker/dist/main.js');
export const CLI_JS = join(root, 'apps/cli/dist/main.js');
export const DEMO_JS = join(root, 'apps/cli/dist/demo.js');

const procs = new Set<ChildProcess>();

/** Kills every process the harness started (afterEach). */
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

export const tempDir = (prefix: string): string => mkdtempSync(join(tmpdir(), `pullman-cli-${prefix}-`));

export interface Manager {
  url: string;
  dataDir: string;
  adminToken: string;
  workerToken: string;
}

export async function startManager(): Promise<Manager> {
  const dataDir = tempDir('mgr');
  const proc = spawn(process.execPath, [MANAGER_JS, '--port', '0', '--data-dir', dataDir], {
    env: { PATH: process.env.PATH, PULLMAN_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.add(proc);
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      const m = /^listening on (http\S+)$/.exec(line);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', (code) => reject(new Error(`manager exited ${code}: ${stderr}`)));
  });
  return {
    url,
    dataDir,
    adminToken: readFileSync(join(dataDir, 'admin.token'), 'utf8').trim(),
    workerToken: readFileSync(join(dataDir, 'worker.token'), 'utf8').trim(),
  };
}

export interface WorkerProc {
  proc: ChildProcess;
  exited: Promise<number | null>;
}

export function startWorker(m: Manager, name: string, slots = 2): WorkerProc {
  const proc = spawn(process.execPath, [WORKER_JS, 'run'], {
    env: {
      PATH: process.env.PATH,
      PULLMAN_MANAGER_URL: m.url,
      PULLMAN_WORKER_TOKEN_FILE: join(m.dataDir, 'worker.token'),
      PULLMAN_NAME: name,
      PULLMAN_SLOTS: String(slots),
      PULLMAN_WORK_DIR: tempDir(`wrk-${name}`),
      PULLMAN_READY: 'none',
      PULLMAN_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  procs.add(proc);
  return { proc, exited: once(proc, 'exit').then(([code]) => code as number | null) };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node apps/cli/dist/main.js ARGS` to its exit. The environment is only PATH plus
 * `env`, so nothing from the developer's shell (a PULLMAN_TOKEN, say) leaks in.
 */
export async function pullman(args: string[], opts: { env?: Record<string, string>; cwd?: string; input?: string } = {}): Promise<CliResult> {
  const proc = spawn(process.execPath, [CLI_JS, ...args], {
    env: { PATH: process.env.PATH, ...opts.env },
    cwd: opts.cwd ?? tempDir('cwd'),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  procs.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdin!.end(opts.input ?? '');
  const [code] = (await once(proc, 'close')) as [number | null];
  procs.delete(proc);
  return { code, stdout, stderr };
}

/** PULLMAN_URL and PULLMAN_TOKEN for a manager. */
export const envFor = (m: Manager): Record<string, string> => ({ PULLMAN_URL: m.url, PULLMAN_TOKEN: m.adminToken });

/** Polls `check` until it returns a value (not undefined); fails after `timeoutMs`. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
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
    await new Promise((r) => setTimeout(r, 100));
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
