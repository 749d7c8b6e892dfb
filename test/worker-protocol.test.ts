/**
 * The real worker against a scripted manager that answers welcome with a chosen protocol version.
 * The worker starts with three results in its outbox (from a previous run) and must re-send them
 * the way the agreed version allows: on 2, in one `results` message; on 1, as three `result`
 * messages. Either way the freed slots follow in one `pull`, and every acked result leaves the
 * outbox.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION, sendFrames } from '@pullman/protocol';
import { readOutboxOf } from '@pullman/worker';
import { tempDir, until } from './harness.js';
import { killAllProcs, startWorker } from './support/procs.js';
import type { WebSocket } from 'ws';
import { closeScriptedManagers, oneTask, startScriptedManager, welcome, type Frame } from './support/scripted-manager.js';

afterEach(async () => {
  await killAllProcs();
  await closeScriptedManagers();
});

const report = { exitCode: 0, signal: null, timedOut: false, cancelled: false, durationMs: 5, stdoutTail: '', stderrTail: '', output: null, error: null };

async function run(welcomeProtocol: number): Promise<{ hello: Frame; frames: Frame[]; workDir: string }> {
  let hello: Frame | null = null;
  const frames: Frame[] = [];
  const m = await startScriptedManager((ws, msg) => {
    if (msg.type === 'hello') {
      hello = msg;
      ws.send(welcome(welcomeProtocol));
      return;
    }
    if (msg.type === 'heartbeat') return;
    frames.push(msg);
    const entries = msg.type === 'results' ? (msg.results as Array<{ taskId: string; leaseId: string }>) : msg.type === 'result' ? [msg as { taskId: string; leaseId: string }] : [];
    if (entries.length > 0) ws.send(JSON.stringify({ type: 'acks', acks: entries.map((e) => ({ taskId: e.taskId, leaseId: e.leaseId, status: 'recorded' })) }));
  });

  // Three results a previous run of this worker left in its outbox, one file each as releases
  // before the journal wrote them (outbox.ts folds them in).
  const workDir = tempDir('wrk-protocol');
  mkdirSync(join(workDir, 'outbox'), { recursive: true });
  for (const n of [1, 2, 3]) {
    writeFileSync(join(workDir, 'outbox', `task-${n}.lease-${n}.json`), JSON.stringify({ taskId: `task-${n}`, leaseId: `lease-${n}`, report: { ...report, durationMs: n } }));
  }
  startWorker(m, { name: 'protocol', slots: 2, workDir });
  await until('results and credits sent', () => (frames.some((f) => f.type === 'pull') ? true : undefined), 60_000, 50);
  await until('the outbox emptied', async () => ((await readOutboxOf(workDir)).pending.length === 0 ? true : undefined), 30_000, 50);
  return { hello: hello!, frames, workDir };
}

describe('the worker speaks the protocol version welcome agreed on', () => {
  it('on protocol 2, re-sends its outbox in one results message, then one pull', async () => {
    const { hello, frames } = await run(2);
    expect(hello.protocol).toBe(PROTOCOL_VERSION);
    expect(frames).toEqual([
      {
        type: 'results',
        results: [1, 2, 3].map((n) => ({ taskId: `task-${n}`, leaseId: `lease-${n}`, report: { ...report, durationMs: n } })),
      },
      { type: 'pull', credits: 2 },
    ]);
  });

  it('on protocol 1, re-sends the same outbox as one result message each, then one pull', async () => {
    const { frames } = await run(1);
    expect(frames).toEqual([
      ...[1, 2, 3].map((n) => ({ type: 'result', taskId: `task-${n}`, leaseId: `lease-${n}`, report: { ...report, durationMs: n } })),
      { type: 'pull', credits: 2 },
    ]);
  });
});

describe('the worker against a manager from before protocol negotiation', () => {
  it('offers version 1 after the refusal such a manager sends, and reports on it', async () => {
    const offered: unknown[] = [];
    const frames: Frame[] = [];
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') {
        offered.push(msg.protocol);
        if (msg.protocol !== 1) {
          // Word for word what a protocol-1-only manager answered, then its close code.
          ws.send(JSON.stringify({ type: 'error', code: 'PROTOCOL_ERROR', message: `protocol ${String(msg.protocol)} is not supported; this manager speaks 1`, fatal: true }));
          ws.close(4400, 'protocol error');
          return;
        }
        ws.send(welcome(1));
        ws.send(oneTask('task-9', 'lease-9'));
        return;
      }
      if (msg.type === 'heartbeat') return;
      frames.push(msg);
      if (msg.type === 'result') ws.send(JSON.stringify({ type: 'ack', taskId: msg.taskId, leaseId: msg.leaseId, status: 'recorded' }));
    });
    startWorker(m, { name: 'old-manager', slots: 1 });
    await until('the task reported', () => (frames.some((f) => f.type === 'result') ? true : undefined), 60_000, 50);
    expect(offered).toEqual([PROTOCOL_VERSION, 1]);
    expect(frames.find((f) => f.type === 'result')).toMatchObject({ taskId: 'task-9', leaseId: 'lease-9', report: { exitCode: 0 } });
    expect(frames.some((f) => f.type === 'results')).toBe(false);
  });
});

describe('the worker with a work dir that cannot hold a task', () => {
  /**
   * One task arrives while `scratch` is a file. The worker gives it back, with the reason the
   * agreed version has for it, says why it takes no work (protocol 3), and grants no credit until
   * a probe finds the dir usable; then exactly the credit it held back (the manager still holds
   * the other one).
   */
  async function run(welcomeProtocol: number): Promise<{ whilePaused: Frame[]; frames: Frame[] }> {
    const frames: Frame[] = [];
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') return void ws.send(welcome(welcomeProtocol));
      if (msg.type === 'heartbeat') return;
      frames.push(msg);
      if (msg.type === 'pull' && frames.length === 1) ws.send(oneTask('task-1', 'lease-1'));
      if (msg.type === 'release') ws.send(JSON.stringify({ type: 'ack', taskId: msg.taskId, leaseId: msg.leaseId, status: 'recorded' }));
    });
    const workDir = tempDir('wrk-unusable');
    writeFileSync(join(workDir, 'scratch'), '');
    const w = startWorker(m, { name: 'unusable', slots: 2, workDir });
    await w.waitForLog((l) => l.msg === 'the work dir still cannot hold a task', 'a failed probe', 60_000);
    const whilePaused = [...frames];
    rmSync(join(workDir, 'scratch'));
    mkdirSync(join(workDir, 'scratch'), { recursive: true }); // a probe may have made it first
    await until('the held-back credit', () => (frames.slice(whilePaused.length).some((f) => f.type === 'pull') ? true : undefined), 60_000, 50);
    return { whilePaused, frames };
  }

  it('on protocol 3, releases the task as unhealthy and grants its credit once the dir is usable', async () => {
    const { whilePaused, frames } = await run(3);
    const release = { type: 'release', taskId: 'task-1', leaseId: 'lease-1', reason: 'unhealthy' };
    const unhealthy = { type: 'health', problem: expect.stringMatching(/^cannot prepare the task's files under .*: E[A-Z]+ \(.*scratch/) };
    expect(whilePaused).toEqual([{ type: 'pull', credits: 2 }, release, unhealthy]);
    expect(frames).toEqual([{ type: 'pull', credits: 2 }, release, unhealthy, { type: 'health', problem: null }, { type: 'pull', credits: 1 }]);
  });

  it('on protocol 2, releases it with a reason that version knows, and says nothing of its health', async () => {
    const { whilePaused, frames } = await run(2);
    const release = { type: 'release', taskId: 'task-1', leaseId: 'lease-1', reason: 'shutdown' };
    expect(whilePaused).toEqual([{ type: 'pull', credits: 2 }, release]);
    expect(frames).toEqual([{ type: 'pull', credits: 2 }, release, { type: 'pull', credits: 1 }]);
  });

  it('after re-sending an unhealthy release, says again where it stands', async () => {
    // The release gets no ack but a non-fatal manager error, which the worker answers by
    // re-sending what is unacked, later. Meanwhile its dir is fixed and it reports health null.
    // The re-sent release marks it unhealthy again on a real manager: its health must follow.
    const frames: Frame[] = [];
    const workDir = tempDir('wrk-resend');
    writeFileSync(join(workDir, 'scratch'), '');
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') return void ws.send(welcome(3));
      if (msg.type === 'heartbeat') return;
      frames.push(msg);
      const releases = frames.filter((f) => f.type === 'release').length;
      if (msg.type === 'pull' && frames.length === 1) ws.send(oneTask('task-1', 'lease-1'));
      if (msg.type === 'release' && releases === 1) {
        rmSync(join(workDir, 'scratch'));
        mkdirSync(join(workDir, 'scratch'), { recursive: true });
      }
      if (msg.type === 'health' && msg.problem === null && releases === 1) ws.send(JSON.stringify({ type: 'error', code: 'STORAGE_FULL', message: 'manager database is full; retry later', fatal: false }));
      if (msg.type === 'release' && releases === 2) ws.send(JSON.stringify({ type: 'ack', taskId: msg.taskId, leaseId: msg.leaseId, status: 'stale' }));
    });
    startWorker(m, { name: 'resend', slots: 2, workDir });
    await until('health after the re-sent release', () => {
      const second = frames.findIndex((f, i) => f.type === 'release' && frames.slice(0, i).some((g) => g.type === 'release'));
      return second >= 0 && frames.slice(second + 1).some((f) => f.type === 'health') ? true : undefined;
    }, 30_000, 50);
    const release = { type: 'release', taskId: 'task-1', leaseId: 'lease-1', reason: 'unhealthy' };
    const kinds = frames.map((f) => (f.type === 'health' ? `health:${f.problem === null ? 'ok' : 'problem'}` : f.type));
    expect(kinds).toEqual(['pull', 'release', 'health:problem', 'health:ok', 'pull', 'release', 'health:ok']);
    expect(frames[5]).toEqual(release);
  });
});

describe('a task the worker is still starting', () => {
  it('is waited for by a drain that arrives with it, and reported before bye', async () => {
    // The task and the drain arrive in one write, so the worker reads the drain while the
    // task's files are being made and its process spawned. The drain must count that task:
    // it used to see no task running, say bye, and leave the task to run on after it.
    const frames: Frame[] = [];
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') return void ws.send(welcome(PROTOCOL_VERSION));
      if (msg.type === 'heartbeat') return;
      frames.push(msg);
      if (msg.type === 'pull' && frames.length === 1) sendFrames(ws, [oneTask('task-1', 'lease-1'), JSON.stringify({ type: 'drain' })]);
      const entries = msg.type === 'results' ? (msg.results as Array<{ taskId: string; leaseId: string }>) : msg.type === 'result' ? [msg as { taskId: string; leaseId: string }] : [];
      if (entries.length > 0) ws.send(JSON.stringify({ type: 'acks', acks: entries.map((e) => ({ taskId: e.taskId, leaseId: e.leaseId, status: 'recorded' })) }));
    });
    const w = startWorker(m, { name: 'starting', slots: 1 });
    expect((await w.exited).code).toBe(0);
    const kinds = frames.map((f) => f.type);
    expect(kinds).toEqual(['pull', 'draining', 'results', 'bye']);
    expect(frames[2]).toMatchObject({ results: [{ taskId: 'task-1', leaseId: 'lease-1', report: { exitCode: 0 } }] });
  });

  it('is stopped by a cancel that arrives with it, as soon as its process exists', async () => {
    const frames: Frame[] = [];
    const task = JSON.stringify({ type: 'tasks', tasks: [{ taskId: 'task-1', jobId: 'job-1', key: null, attempt: 1, leaseId: 'lease-1', spec: { command: ['sleep', '300'] } }] });
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') return void ws.send(welcome(PROTOCOL_VERSION));
      if (msg.type === 'heartbeat') return;
      frames.push(msg);
      if (msg.type === 'pull' && frames.length === 1) sendFrames(ws, [task, JSON.stringify({ type: 'cancel', taskId: 'task-1', leaseId: 'lease-1' })]);
    });
    startWorker(m, { name: 'cancelled-early', slots: 1 });
    await until('the task reported', () => frames.find((f) => f.type === 'results'), 60_000, 50);
    expect(frames.find((f) => f.type === 'results')).toMatchObject({ results: [{ taskId: 'task-1', leaseId: 'lease-1', report: { cancelled: true } }] });
  });
});

describe('a task delivered again under a new lease', () => {
  it('runs as a new attempt while the old lease\'s process still stops', async () => {
    // Cancelled, then requeued (a job retry) and dealt again to this worker on its spare credit,
    // while the first process still dies (a TERM trap). Held by task id alone, the new lease was
    // dropped as a duplicate: nobody ran it, and heartbeats kept it alive forever.
    const frames: Frame[] = [];
    const task = (leaseId: string, attempt: number) => JSON.stringify({ type: 'tasks', tasks: [{ taskId: 'task-1', jobId: 'job-1', key: null, attempt, leaseId, spec: {
      shell: 'trap "sleep 1; exit 143" TERM; if [ "$PULLMAN_ATTEMPT" = 1 ]; then sleep 300 & wait; fi',
    } }] });
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') return void ws.send(welcome(PROTOCOL_VERSION));
      if (msg.type === 'heartbeat') return;
      frames.push(msg);
      if (msg.type === 'pull' && frames.length === 1) ws.send(task('lease-1', 1));
    });
    const w = startWorker(m, { name: 'again', slots: 2 });
    await w.waitForLog((l) => l.msg === 'task started', 'task started', 60_000);
    sendFrames(m.clients()[0]!, [JSON.stringify({ type: 'cancel', taskId: 'task-1', leaseId: 'lease-1' }), task('lease-2', 2)]);
    const reported = () => frames.flatMap((f) => (f.type === 'results' ? (f.results as Array<{ leaseId: string; report: { exitCode: number | null; cancelled: boolean } }>) : []));
    await until('both leases reported', () => (reported().length === 2 ? true : undefined), 30_000, 50);
    expect(reported().find((r) => r.leaseId === 'lease-2')!.report).toMatchObject({ exitCode: 0, cancelled: false });
    expect(reported().find((r) => r.leaseId === 'lease-1')!.report).toMatchObject({ cancelled: true });
  });

  it('keeps the current lease through a reconnect whose welcome names the task both resumed and lost', async () => {
    // welcome's lists name tasks. Held under two leases (the old one's process still dying), the
    // task is listed twice in hello, and a real manager answers resumed: [it] for the current
    // lease and lost: [it] for the old one. Only the old run may stop.
    const frames: Frame[] = [];
    const hellos: Frame[] = [];
    const task = (leaseId: string, attempt: number) => JSON.stringify({ type: 'tasks', tasks: [{ taskId: 'task-1', jobId: 'job-1', key: null, attempt, leaseId, spec: {
      shell: 'if [ "$PULLMAN_ATTEMPT" = 1 ]; then trap "" TERM; sleep 15 & wait; else sleep 3; fi', // 1 ignores TERM, for longer than the test
    } }] });
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') {
        hellos.push(msg);
        const running = msg.running as Array<{ taskId: string; leaseId: string }>;
        const resumed = running.filter((r) => r.leaseId === 'lease-2').map((r) => r.taskId);
        const lost = running.filter((r) => r.leaseId !== 'lease-2').map((r) => r.taskId);
        return void ws.send(JSON.stringify({ ...JSON.parse(welcome(PROTOCOL_VERSION)), sessionId: `s-${hellos.length}`, resumed, lost }));
      }
      if (msg.type === 'heartbeat') return;
      frames.push(msg);
      if (msg.type === 'pull' && frames.length === 1) ws.send(task('lease-1', 1));
    });
    const w = startWorker(m, { name: 'two-leases', slots: 2, env: { PULLMAN_KILL_GRACE: '20s' } });
    await w.waitForLog((l) => l.msg === 'task started', 'task started', 60_000);
    sendFrames(m.clients()[0]!, [JSON.stringify({ type: 'cancel', taskId: 'task-1', leaseId: 'lease-1' }), task('lease-2', 2)]);
    await until('lease-2 started', () => (w.logs.filter((l) => l.msg === 'task started').length === 2 ? true : undefined), 30_000, 50);
    m.clients()[0]!.terminate(); // a network blip while lease-1's process still dies
    await until('the second hello', () => (hellos.length === 2 ? true : undefined), 30_000, 50);
    expect(hellos[1]!.running).toEqual(expect.arrayContaining([{ taskId: 'task-1', leaseId: 'lease-1' }, { taskId: 'task-1', leaseId: 'lease-2' }]));
    const reported = () => frames.flatMap((f) => (f.type === 'results' ? (f.results as Array<{ leaseId: string; report: { exitCode: number | null; cancelled: boolean } }>) : []));
    await until('lease-2 reported', () => reported().find((r) => r.leaseId === 'lease-2'), 30_000, 50);
    expect(reported().find((r) => r.leaseId === 'lease-2')!.report).toMatchObject({ exitCode: 0, cancelled: false });
  });

  it('stops the lost lease when the resumed one of the same task ends between hello and welcome (welcome answers hello\'s list)', async () => {
    const flagDir = tempDir('zz-flag');
    const go = join(flagDir, 'go');
    const frames: Frame[] = [];
    const hellos: Array<{ ws: WebSocket; msg: Frame }> = [];
    // lease-1 (attempt 1): its cancel never reached the worker (sent to a replaced session); runs on.
    // lease-2 (attempt 2): the current lease; ends once the test creates `go`.
    const task = (leaseId: string, attempt: number) => JSON.stringify({ type: 'tasks', tasks: [{ taskId: 'task-1', jobId: 'job-1', key: null, attempt, leaseId, spec: {
      shell: `if [ "$PULLMAN_ATTEMPT" = 1 ]; then sleep 300; else while [ ! -e ${go} ]; do sleep 0.1; done; fi`,
    } }] });
    const m = await startScriptedManager((ws, msg) => {
      if (msg.type === 'hello') {
        hellos.push({ ws, msg });
        if (hellos.length === 1) ws.send(welcome(PROTOCOL_VERSION));
        return; // the second welcome is sent by the test
      }
      if (msg.type === 'heartbeat') return;
      frames.push(msg);
      if (msg.type === 'pull' && frames.length === 1) sendFrames(ws, [task('lease-1', 1), task('lease-2', 2)]);
    });
    const w = startWorker(m, { name: 'window', slots: 2 });
    await until('both started', () => (w.logs.filter((l) => l.msg === 'task started').length === 2 ? true : undefined), 60_000, 50);
    m.clients()[0]!.terminate();
    await until('the second hello', () => (hellos.length === 2 ? true : undefined), 30_000, 50);
    expect(hellos[1]!.msg.running).toEqual(expect.arrayContaining([{ taskId: 'task-1', leaseId: 'lease-1' }, { taskId: 'task-1', leaseId: 'lease-2' }]));
    writeFileSync(go, ''); // lease-2 ends before the manager's answer arrives
    await w.waitForLog((l) => l.msg === 'task finished' && l.exitCode === 0, 'lease-2 finished', 30_000);
    // What the real manager answers for that hello: lease-2 resumed, lease-1 lost.
    hellos[1]!.ws.send(JSON.stringify({ ...JSON.parse(welcome(PROTOCOL_VERSION)), sessionId: 's-2', resumed: ['task-1'], lost: ['task-1'] }));
    const reported = () => frames.flatMap((f) => (f.type === 'results' ? (f.results as Array<{ leaseId: string; report: { cancelled: boolean } }>) : []));
    // lease-1's lease is gone: the worker must stop it (kill grace is 1s here).
    await until('lease-1 stopped and reported', () => reported().find((r) => r.leaseId === 'lease-1'), 10_000, 50);
    expect(reported().find((r) => r.leaseId === 'lease-1')!.report).toMatchObject({ cancelled: true });
  });
});
