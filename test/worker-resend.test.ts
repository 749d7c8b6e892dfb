/**
 * The real worker against a scripted manager that refuses its first result with a non-fatal
 * STORAGE_FULL (the manager's disk was full), then has room again. The worker must re-send the
 * result on the same session — not leave it in its outbox until some later reconnect — and
 * forget it only once it is acked.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from './harness.js';
import { killAllProcs, startWorker } from './support/procs.js';
import { closeScriptedManagers, startScriptedManager, welcome, type Frame } from './support/scripted-manager.js';

afterEach(async () => {
  await killAllProcs();
  await closeScriptedManagers();
});

describe('worker after a non-fatal manager error', () => {
  // On protocol 1 results travel one per `result` message; on 2, in `results` messages.
  it.each([1, 2])('re-sends a result refused with STORAGE_FULL and deletes it from the outbox once acked (protocol %i)', async (protocol) => {
    const results: Frame[] = [];
    const frames: unknown[] = [];
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') {
        ws.send(welcome(protocol, { heartbeatIntervalMs: 500, leaseTtlMs: 30_000 }));
        ws.send(JSON.stringify({ type: 'tasks', tasks: [{ taskId: 'task-1', jobId: 'job-1', key: 'k', attempt: 1, leaseId: 'lease-1', spec: { command: ['true'] } }] }));
      } else if (msg.type === (protocol === 1 ? 'result' : 'results')) {
        frames.push(msg.type);
        const result = msg.type === 'results' ? (msg.results as Frame[])[0]! : msg;
        results.push(result);
        if (results.length === 1) ws.send(JSON.stringify({ type: 'error', code: 'STORAGE_FULL', message: 'manager database is full; retry later', fatal: false }));
        else ws.send(JSON.stringify({ type: 'ack', taskId: result.taskId, leaseId: result.leaseId, status: 'recorded' }));
      }
    });

    const w = startWorker(m, { name: 'resend', slots: 1 });
    await until('the result re-sent', () => (results.length >= 2 ? true : undefined), 60_000, 50);
    expect(results[1]).toMatchObject({ taskId: 'task-1', leaseId: 'lease-1', report: { exitCode: 0 } });
    expect(m.sessions).toBe(1); // the same session, no reconnect needed
    expect(frames).toEqual([protocol === 1 ? 'result' : 'results', protocol === 1 ? 'result' : 'results']);
    await until('the outbox emptied', () => (readdirSync(join(w.workDir, 'outbox')).filter((f) => !f.startsWith('.')).length === 0 ? true : undefined), 30_000, 50);
    expect(w.proc.exitCode).toBeNull();
  });
});
