/**
 * `npm run chaos`: the chaos scenarios at full size. The headline run is the issue's: kill -9
 * the manager every 2 s, 10 times, during a 20,000-task run with 4 workers. Every scenario
 * prints one `[chaos] {...}` line of measurements (docs/reliability.md records them) and
 * writes them all to $TMPDIR/pullman-chaos-results.json.
 */
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { killAllProcs } from '../support/procs.js';
import { diskFull, hungTasks, managerKills, networkCuts, silentWorker, workerKills, type ScenarioResult } from './scenarios.js';

const results: ScenarioResult[] = [];
afterEach(killAllProcs);
afterAll(() => {
  const file = join(tmpdir(), 'pullman-chaos-results.json');
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`[chaos] results written to ${file}`);
});

const record = (r: ScenarioResult) => {
  console.log(`[chaos] ${JSON.stringify(r)}`);
  results.push(r);
  expect(r.tasks).toBeGreaterThan(0);
};

describe('chaos (large)', () => {
  it('manager kill -9 every 2 s, 10 times, during 20,000 tasks on 4 workers', async () => {
    record(await managerKills({ tasks: 20_000, workers: 4, slots: 2, kills: 10, everyMs: 2_000, timeoutMs: 900_000 }));
  });

  it('workers kill -9 and restarted, 20 times', async () => {
    record(await workerKills({ tasks: 2_000, workers: 4, kills: 20, everyMs: 1_500, timeoutMs: 600_000 }));
  });

  it('network: drop 20 s, blackhole 30 s', async () => {
    record(await networkCuts({ tasks: 600, cuts: [{ mode: 'drop', ms: 20_000 }, { mode: 'blackhole', ms: 30_000 }], timeoutMs: 600_000 }));
  });

  it('silent workers', async () => {
    record(await silentWorker({ tasks: 300, silent: 5, timeoutMs: 300_000 }));
  });

  it('hung tasks', async () => {
    record(await hungTasks({ hung: 10, normal: 200, timeoutMs: 300_000 }));
  });

  it('disk full', async () => {
    record(await diskFull({ maxPages: 1_000, timeoutMs: 300_000 }));
  });
});
