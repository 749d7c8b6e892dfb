/**
 * CLI test harness: the e2e harness (test/harness.ts) starts the real manager and worker
 * processes; this adds the built `pullman` binary run to its exit. Waits poll state; nothing
 * sleeps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killAll as killHarness, startWorker as startHarnessWorker, tempDir, type ManagerHandle } from '../../../test/harness.js';

export { freePort, startManager, tempDir, until } from '../../../test/harness.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
export const ROOT = root;
export const CLI_JS = join(root, 'apps/cli/dist/main.js');
export const DEMO_JS = join(root, 'apps/cli/dist/demo.js');

/** CLI runs still in flight (the managers and workers are the harness's). */
const cliRuns = new Set<ChildProcess>();

/** Kills every process the tests started (afterEach). */
export async function killAll(): Promise<void> {
  for (const p of cliRuns) p.kill('SIGKILL');
  cliRuns.clear();
  await killHarness();
}

export type Manager = ManagerHandle;

export interface WorkerProc {
  proc: ChildProcess;
  exited: Promise<number | null>;
}

export function startWorker(m: Manager, name: string, slots = 2): WorkerProc {
  const w = startHarnessWorker(m, { name, slots });
  return { proc: w.proc, exited: w.exited.then(({ code }) => code) };
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
  cliRuns.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdin!.end(opts.input ?? '');
  const [code] = (await once(proc, 'close')) as [number | null];
  cliRuns.delete(proc);
  return { code, stdout, stderr };
}

/** PULLMAN_URL and PULLMAN_TOKEN for a manager. */
export const envFor = (m: Manager): Record<string, string> => ({ PULLMAN_URL: m.url, PULLMAN_TOKEN: m.adminToken });
