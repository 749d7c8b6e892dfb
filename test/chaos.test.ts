/**
 * The chaos scenarios, small: real processes, a few hundred to a few thousand tasks each.
 * `npm run chaos` runs the same scenarios large (test/chaos/large.chaos.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { killAllProcs } from './support/procs.js';
import { diskFull, hungTasks, managerKills, networkCuts, silentWorker, workerKills, type ScenarioResult } from './chaos/scenarios.js';

afterEach(killAllProcs);

const report = (r: ScenarioResult) => {
  console.log(`[chaos] ${JSON.stringify(r)}`);
  expect(r.tasks).toBeGreaterThan(0);
};

describe('chaos (small)', () => {
  it('the manager killed with SIGKILL every 2 s: nothing lost, nothing recorded twice', async () => {
    report(await managerKills({ tasks: 1500, workers: 2, slots: 2, kills: 3, everyMs: 2_000, timeoutMs: 150_000 }));
  });

  it('workers killed with SIGKILL and restarted: nothing lost, nothing recorded twice', async () => {
    report(await workerKills({ tasks: 200, workers: 3, kills: 5, everyMs: 1_000, timeoutMs: 120_000 }));
  });

  it('the link to two of three workers dropped for 10 s, then blackholed for 10 s', async () => {
    report(await networkCuts({ tasks: 150, cuts: [{ mode: 'drop', ms: 10_000 }, { mode: 'blackhole', ms: 10_000 }], timeoutMs: 120_000 }));
  });

  it('a worker that keeps its socket open but never heartbeats loses its tasks to the others', async () => {
    report(await silentWorker({ tasks: 30, silent: 2, timeoutMs: 60_000 }));
  });

  it('hung tasks are killed at their timeout, retried, and fail with TIMED_OUT', async () => {
    report(await hungTasks({ hung: 3, normal: 20, timeoutMs: 60_000 }));
  });

  it('a full database refuses submissions with 507 STORAGE_FULL, corrupts nothing, and serves again when space returns', async () => {
    report(await diskFull({ maxPages: 300, timeoutMs: 90_000 }));
  });
});
