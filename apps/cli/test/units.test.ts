/**
 * The pure parts of the CLI: the progress meter and plain-line display (with a fake clock),
 * and the submit input reader on real files.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Job, TaskSpec, Worker } from '@pullman/protocol';
import { CliError } from '../src/errors.js';
import { workersTable } from '../src/format.js';
import { fileSource, readTaskSpecs } from '../src/input.js';
import { ProgressMeter, createProgress } from '../src/progress.js';
import { tempDir } from './harness.js';

const job = (counts: Partial<Job['counts']>, total = 100): Job => ({
  id: 'job-7',
  name: null,
  state: 'active',
  sealed: true,
  createdAt: '2026-01-01T00:00:00.000Z',
  finishedAt: null,
  counts: { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0, total, ...counts },
});

describe('progress', () => {
  it('measures rate and ETA from successive snapshots', () => {
    let t = 0;
    const meter = new ProgressMeter(() => t);
    expect(meter.measure(job({ queued: 100 }))).toMatchObject({ finished: 0, percent: 0, rate: null, etaMs: null });
    t = 2_000;
    expect(meter.measure(job({ succeeded: 18, failed: 2, running: 4, queued: 76 }))).toMatchObject({ done: 18, failed: 2, finished: 20, percent: 20, rate: 10, etaMs: 8_000 });
    t = 4_000;
    expect(meter.measure(job({ succeeded: 100 }))).toMatchObject({ finished: 100, percent: 100, rate: 25, etaMs: 0 });
  });

  it('prints plain lines at most once per interval, and the last state on stop', () => {
    let t = 0;
    let text = '';
    const stream = new Writable({ write: (chunk, _enc, cb) => ((text += String(chunk)), cb()) }) as unknown as NodeJS.WriteStream;
    const p = createProgress({ stream, tty: false, intervalMs: 5_000, now: () => t });
    p.update(job({ queued: 100 }));
    t = 1_000;
    p.update(job({ succeeded: 10, queued: 90 }));
    t = 5_000;
    p.update(job({ succeeded: 50, running: 2, queued: 48 }));
    t = 6_000;
    p.update(job({ succeeded: 99, cancelled: 1 }));
    p.stop();
    p.stop();
    expect(text.split('\n')).toEqual([
      'job-7: 0% 0/100 | 0 done, 0 failed, 0 running, 100 queued | - tasks/s | ETA -',
      'job-7: 50% 50/100 | 50 done, 0 failed, 2 running, 48 queued | 10.0 tasks/s | ETA 5s',
      'job-7: 100% 100/100 | 99 done, 0 failed, 0 running, 0 queued, 1 cancelled | 16.7 tasks/s | ETA 0s',
      '',
    ]);
  });
});

describe('submit input', () => {
  async function read(text: string, lines = false): Promise<TaskSpec[]> {
    const file = join(tempDir('in'), 'tasks.txt');
    writeFileSync(file, text);
    const out: TaskSpec[] = [];
    for await (const s of readTaskSpecs(fileSource(file), { lines })) out.push(s);
    return out;
  }

  it('reads NDJSON, a JSON array, and --lines', async () => {
    expect(await read('{"command":["a"]}\r\n\n{"shell":"b","key":"k"}')).toEqual([{ command: ['a'] }, { shell: 'b', key: 'k' }]);
    expect(await read('\n  [\n {"command":["a"]},\n {"shell":"b"}\n]\n')).toEqual([{ command: ['a'] }, { shell: 'b' }]);
    expect(await read('#!/bin/sh\nrun --x 1\n\n   # skip\nrun --x 2\r\n', true)).toEqual([
      { key: 'line-2', shell: 'run --x 1' },
      { key: 'line-5', shell: 'run --x 2' },
    ]);
  });

  it('names the line of a mistake', async () => {
    await expect(read('{"command":["a"]}\nnot json\n')).rejects.toMatchObject({ exitCode: 2, message: expect.stringMatching(/tasks\.txt line 2: not valid JSON/) });
    await expect(read('{"command":["a"]}\nnot json\n')).rejects.toBeInstanceOf(CliError);
    await expect(read('{"command":["a"],"timeout":"soon"}')).rejects.toThrow(/tasks\.txt line 1\.timeout: /);
    await expect(read('[{"command":["a"]},{"retries":1}]')).rejects.toThrow(/tasks\.txt\[1\]: exactly one of "command" and "shell" is required \(got neither\)/);
    await expect(read('[1, 2')).rejects.toThrow(/not a valid JSON array/);
  });
});

describe('workersTable', () => {
  const worker = (id: string, state: Worker['state'], problem: string | null): Worker => ({
    id, name: id, hostname: 'h', state, slots: 2, usedSlots: 0, labels: [], vm: null, version: '1', problem,
    connectedAt: null, lastHeartbeatAt: null, tasksSucceeded: 0, tasksFailed: 0,
  });

  it('names, under the table, why each unhealthy worker takes no work', () => {
    const out = workersTable([worker('w-ok', 'ready', null), worker('w-disk', 'unhealthy', 'cannot prepare the task\'s files under /w: ENOSPC')]);
    const lines = out.split('\n');
    expect(lines[0]).toMatch(/^ID\s+NAME\s+STATE/);
    expect(lines.find((l) => l.startsWith('w-disk'))).toMatch(/\bunhealthy\b/);
    expect(lines.at(-1)).toBe("w-disk takes no work: cannot prepare the task's files under /w: ENOSPC");
    expect(out).not.toContain('w-ok takes no work');
  });
});
