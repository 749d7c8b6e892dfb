/**
 * Process helpers for the chaos, fuzz and security suites: the e2e harness (test/harness.ts)
 * under the names those suites use, with a shorter kill grace for workers so that stopped
 * tasks die quickly in fault scenarios.
 */
import { startWorker as startHarnessWorker, type WorkerHandle, type WorkerOpts } from '../harness.js';

export {
  allOutput,
  killAll as killAllProcs,
  restartManager,
  startManager,
  type ManagerHandle as Manager,
  type ManagerOpts,
  type Proc,
  type WorkerOpts,
} from '../harness.js';

export type WorkerProc = WorkerHandle;

export function startWorker(m: { url: string; workerToken: string }, opts: WorkerOpts): WorkerProc {
  return startHarnessWorker(m, { ...opts, env: { PULLMAN_KILL_GRACE: '1s', ...opts.env } });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
