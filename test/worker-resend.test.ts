/**
 * The real worker against a scripted manager that refuses its first result with a non-fatal
 * STORAGE_FULL (the manager's disk was full), then has room again. The worker must re-send the
 * result on the same session — not leave it in its outbox until some later reconnect — and
 * forget it only once it is acked.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { readOutboxOf } from '@pullman/worker';
import { tempDir, until } from './harness.js';
import { killAllProcs, startWorker } from './support/procs.js';
import { closeScriptedManagers, startScriptedManager, welcome, type Frame } from './support/scripted-manager.js';

function failOutboxWrites(workDir: string): void {
  rmSync(join(workDir, 'outbox', 'journal'));
  mkdirSync(join(workDir, 'outbox', 'journal'));
}

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
    await until('the outbox emptied', async () => ((await readOutboxOf(w.workDir)).pending.length === 0 ? true : undefined), 30_000, 50);
    expect(w.proc.exitCode).toBeNull();
  });
});

describe('worker after a reconnect', () => {
  it('sends a result that finished between sessions even when its outbox write failed', async () => {
    const dir = tempDir('resend-gate');
    const go = join(dir, 'go');
    const hellos: Frame[] = [];
    const results: Frame[] = [];
    let second: WebSocket | null = null;
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') {
        hellos.push(msg);
        if (hellos.length === 1) ws.send(welcome(2));
        else second = ws; // welcomed by the test, once the task has finished
      } else if (msg.type === 'pull' && hellos.length === 1) {
        // The task waits for the test; then the session drops under it.
        ws.send(JSON.stringify({ type: 'tasks', tasks: [{ taskId: 'task-9', jobId: 'job-1', key: null, attempt: 1, leaseId: 'lease-9', spec: { shell: `while [ ! -e ${go} ]; do sleep 0.02; done` } }] }));
      } else if (msg.type === 'results') {
        results.push(...(msg.results as Frame[]));
      }
    });
    const w = startWorker(m, { name: 'between', slots: 1 });
    await until('the task running', async () => ((await readOutboxOf(w.workDir)).running.length === 1 ? true : undefined), 30_000, 20);
    // The journal's name is a directory now: the outbox sees its file gone, makes it again,
    // and the rename onto a directory fails, so the result's write does.
    failOutboxWrites(w.workDir);
    await w.waitForLog((l) => l.msg === 'task started', 'task start');
    // Drop the session; the worker reconnects, and its second hello waits unanswered.
    for (const client of m.clients()) client.terminate();
    await until('the second hello', () => (second ? true : undefined), 30_000, 20);
    expect(hellos[1]!.running).toEqual([{ taskId: 'task-9', leaseId: 'lease-9' }]);
    writeFileSync(go, '');
    // Finished while not welcomed: nothing is sent yet, once its write has failed.
    await until('the failed write logged', () => (w.logs.some((l) => l.msg?.startsWith('result not written to the outbox')) ? true : undefined), 30_000, 20);
    expect(results).toEqual([]);
    second!.send(welcome(2));
    await until('the result sent on the new session', () => (results.length > 0 ? true : undefined), 30_000, 20);
    expect(results).toEqual([expect.objectContaining({ taskId: 'task-9', leaseId: 'lease-9', report: expect.objectContaining({ exitCode: 0 }) })]);
  });
});

describe('worker after a reconnect, with a result sent but not acked', () => {
  it('sends it again on the next session even when its outbox write failed', async () => {
    const results: Array<{ session: number; taskId: unknown }> = [];
    let hellos = 0;
    let first: WebSocket | null = null;
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') {
        hellos++;
        ws.send(welcome(2));
      } else if (msg.type === 'pull' && hellos === 1) {
        first = ws; // the task follows once the test has set its trap
      } else if (msg.type === 'results') {
        // Never acked: the session drops first.
        for (const r of msg.results as Frame[]) results.push({ session: hellos, taskId: r.taskId });
      }
    });
    const w = startWorker(m, { name: 'unacked', slots: 1 });
    await until('the first pull (the outbox has been read)', () => (first ? true : undefined), 30_000, 20);
    // The journal's name is a directory now: the outbox sees its file gone, makes it again,
    // and the rename onto a directory fails, so the result's write does.
    failOutboxWrites(w.workDir);
    first!.send(JSON.stringify({ type: 'tasks', tasks: [{ taskId: 'task-7', jobId: 'job-1', key: null, attempt: 1, leaseId: 'lease-7', spec: { command: ['true'] } }] }));
    await until('the result sent on the first session', () => (results.length === 1 ? true : undefined), 30_000, 20);
    await until('its outbox write failed', () => (w.logs.some((l) => l.msg?.startsWith('result not written to the outbox')) ? true : undefined), 30_000, 20);
    for (const client of m.clients()) client.terminate();
    await until('the result sent on the second session', () => (results.some((r) => r.session === 2) ? true : undefined), 30_000, 20);
    expect(results).toEqual([{ session: 1, taskId: 'task-7' }, { session: 2, taskId: 'task-7' }]);
  });
});

describe('worker running a task again under a new lease while the old run ends', () => {
  it('keeps the new run\'s record when the old run\'s goes', async () => {
    const dir = tempDir('two-leases');
    const go = join(dir, 'go');
    let session: WebSocket | null = null;
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') ws.send(welcome(2));
      else if (msg.type === 'pull' && !session) session = ws;
    });
    const w = startWorker(m, { name: 'two-leases', slots: 2 });
    const workDir = w.workDir;
    await until('the first pull', () => (session ? true : undefined), 30_000, 20);
    const task = (leaseId: string, attempt: number, shell: string) => JSON.stringify({ type: 'tasks', tasks: [{ taskId: 'task-5', jobId: 'job-1', key: null, attempt, leaseId, spec: { shell } }] });
    const records = async () => (await readOutboxOf(workDir)).running.map((r) => r.leaseId).sort();
    session!.send(task('lease-a', 1, `while [ ! -e ${go} ]; do sleep 0.02; done; exit 3`));
    await until('the first run recorded', async () => ((await records()).includes('lease-a') ? true : undefined), 30_000, 20);
    // The manager claimed the task again (its lease had expired, say) while the old process
    // still runs here: both runs are held, each under its own lease.
    session!.send(task('lease-b', 2, 'sleep 300'));
    await until('the second run recorded', async () => ((await records()).length === 2 ? true : undefined), 30_000, 20);
    writeFileSync(go, '');
    // The first run ends; its record goes once its outbox write has ended.
    await until('the first run done with', async () => ((await records()).length < 2 ? true : undefined), 30_000, 20);
    // Kept by task, there was one record, replaced by the second run's, and the first
    // run's removal took it: a crash would neither kill the second run's process nor hand its
    // lease back.
    expect(await records()).toEqual(['lease-b']);
  });
});

describe('worker with an outbox it cannot read', () => {
  // The outbox is read once, at start; a reconnect sends the results held in memory.
  it('still pulls after a reconnect', async () => {
    let hellos = 0;
    const pulls: number[] = [];
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') {
        hellos++;
        ws.send(welcome(2));
      } else if (msg.type === 'pull') {
        pulls.push(hellos);
      }
    });
    const w = startWorker(m, { name: 'broken-outbox', slots: 2 });
    await until('the first pull', () => (pulls.includes(1) ? true : undefined), 30_000, 20);
    // The outbox directory is a file now (disk trouble); then the session drops.
    rmSync(join(w.workDir, 'outbox'), { recursive: true });
    writeFileSync(join(w.workDir, 'outbox'), '');
    for (const client of m.clients()) client.terminate();
    await until('a pull on the second session', () => (pulls.includes(2) ? true : undefined), 30_000, 20);
    expect(w.proc.exitCode).toBeNull();
  });
});

describe('worker credits after a reconnect', () => {
  it('grants each slot once when a task finishes while welcome handling waits for a write', async () => {
    const dir = tempDir('credits-gate');
    const go = join(dir, 'go');
    let hellos = 0;
    let first: WebSocket | null = null;
    const results: Array<{ session: number; taskId: unknown }> = [];
    const secondPulls: number[] = [];
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') {
        hellos++;
        // The second welcome names the worker anew: it writes the id before going on.
        ws.send(hellos === 1 ? welcome(2) : JSON.stringify({ ...(JSON.parse(welcome(2)) as Frame), workerId: 'w-renamed' }));
      } else if (msg.type === 'pull') {
        if (hellos === 1) first = ws;
        else secondPulls.push(msg.credits as number);
      } else if (msg.type === 'results') {
        for (const r of msg.results as Frame[]) results.push({ session: hellos, taskId: r.taskId });
      }
    });
    const w = startWorker(m, { name: 'credits', slots: 2 });
    await until('the first pull', () => (first ? true : undefined), 30_000, 20);
    // The worker-id file is a FIFO now: writing the new id hangs until the test reads it.
    const idFile = join(w.workDir, 'worker-id');
    rmSync(idFile);
    execFileSync('mkfifo', [idFile]);
    first!.send(JSON.stringify({ type: 'tasks', tasks: [
      { taskId: 'task-b', jobId: 'job-1', key: null, attempt: 1, leaseId: 'lease-b', spec: { shell: `while [ ! -e ${go} ]; do sleep 0.02; done` } },
    ] }));
    await until('task b running', async () => ((await readOutboxOf(w.workDir)).running.length === 1 ? true : undefined), 30_000, 20);
    for (const client of m.clients()) client.terminate();
    // Logged just before the id is written: from here welcome handling waits for the write.
    await until('the second registration', () => (w.logs.filter((l) => l.msg === 'registered with the manager').length === 2 ? true : undefined), 30_000, 20);
    writeFileSync(go, '');
    await until('task b reported on the new session', () => (results.some((r) => r.taskId === 'task-b' && r.session === 2) ? true : undefined), 30_000, 20);
    expect(readFileSync(idFile, 'utf8')).toBe('w-renamed\n'); // lets the write through: welcome handling goes on
    await until('the new session\'s pull', () => (secondPulls.length > 0 ? true : undefined), 30_000, 20);
    // One grant of both free slots. Task b's freed slot granted on its own as well (before the
    // session was synced) would have made three credits for two slots.
    expect(secondPulls[0]).toBe(2);
    expect(secondPulls).toEqual([2]);
  });
});
