import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import request from 'supertest';
import { MAX_JSON_DEPTH, PROTOCOL_VERSION, parseTaskId, type HelloMessage } from '@pullman/protocol';
import { MAX_LOSSES } from '@pullman/store';
import { ADMIN, WORKER, auth, startManager, type TestManager } from './helpers.js';
import { TestWorker, okReport } from './ws-client.js';

const TTL = 30_000;
let m: TestManager;
const workers: TestWorker[] = [];

beforeEach(async () => {
  m = await startManager({ listen: true, leaseTtlMs: TTL, heartbeatIntervalMs: 5_000 });
});
afterEach(async () => {
  for (const w of workers.splice(0)) w.ws.terminate();
  await m.close();
});

async function connect(token = WORKER): Promise<TestWorker> {
  const w = await TestWorker.connect(m.url, token);
  workers.push(w);
  return w;
}

/** A welcomed worker that pulled `credits` and received its first tasks. */
async function pulling(hello: Partial<HelloMessage>, credits = 1) {
  const w = await connect();
  await w.hello(hello);
  w.send({ type: 'pull', credits });
  return { w, tasks: (await w.next('tasks')).tasks };
}

async function submit(tasks: unknown[]): Promise<string> {
  const res = await request(m.app.server).post('/v1/jobs').set(auth()).send({ tasks });
  expect(res.status).toBe(201);
  return res.body.id as string;
}

const leaseExpiry = (taskId: string): number =>
  (m.store.db.prepare('SELECT lease_expires_at AS e FROM tasks WHERE id = ?').get(parseTaskId(taskId)) as { e: number }).e;

describe('worker channel', () => {
  it('rejects an upgrade without the worker token', async () => {
    await expect(TestWorker.connect(m.url, 'nope-nope-nope-nope')).rejects.toThrow('HTTP 401');
    await expect(TestWorker.connect(m.url, ADMIN)).rejects.toThrow('HTTP 403');
  });

  it('welcomes a worker with the heartbeat interval and lease TTL, and lists it', async () => {
    const w = await connect();
    const welcome = await w.hello({ name: 'vm-1', slots: 3, labels: ['gpu'] });
    expect(welcome).toMatchObject({ protocol: PROTOCOL_VERSION, heartbeatIntervalMs: 5_000, leaseTtlMs: TTL, resumed: [], lost: [] });
    const res = await request(m.app.server).get(`/v1/workers/${welcome.workerId}`).set(auth());
    expect(res.body).toMatchObject({ name: 'vm-1', slots: 3, labels: ['gpu'], state: 'ready', usedSlots: 0 });
  });

  it('serves each worker at the lower of its newest protocol version and the manager\'s', async () => {
    expect(PROTOCOL_VERSION).toBe(4);
    for (const older of [1, 2, 3]) expect((await (await connect()).hello({ protocol: older })).protocol).toBe(older);
    // A worker newer than this manager is served at the manager's newest and falls back to it.
    expect((await (await connect()).hello({ protocol: 7 })).protocol).toBe(PROTOCOL_VERSION);
  });

  it('settles every entry of a results message on its own and acks them in one frame', async () => {
    const jobId = await submit([{ command: ['a'] }, { command: ['b'] }, { command: ['c'], retries: 1 }]);
    const w = await connect();
    await w.hello({ slots: 3 });
    w.send({ type: 'pull', credits: 3 });
    const [a, b, c] = (await w.next('tasks')).tasks;
    w.send({
      type: 'results',
      results: [
        { taskId: a!.taskId, leaseId: a!.leaseId, report: okReport },
        { taskId: b!.taskId, leaseId: 'not-the-lease', report: okReport }, // fenced off: stale
        { taskId: c!.taskId, leaseId: c!.leaseId, report: { ...okReport, exitCode: 3 } },
        { taskId: 'task-nonsense', leaseId: 'x', report: okReport }, // no such task: stale
      ],
    });
    // An id that names no task is answered at once; the others together after their commit.
    expect(await w.next('ack')).toEqual({ type: 'ack', taskId: 'task-nonsense', leaseId: 'x', status: 'stale' });
    const { acks } = await w.next('acks');
    expect(acks).toEqual([
      { taskId: a!.taskId, leaseId: a!.leaseId, status: 'recorded' },
      { taskId: b!.taskId, leaseId: 'not-the-lease', status: 'stale' },
      { taskId: c!.taskId, leaseId: c!.leaseId, status: 'recorded' },
    ]);
    expect(m.store.getTask(parseTaskId(a!.taskId)!)!.state).toBe('succeeded');
    expect(m.store.getTask(parseTaskId(b!.taskId)!)!.state).toBe('running');
    // exit 3 with retries left: failed this attempt, queued again.
    const retried = m.store.getTask(parseTaskId(c!.taskId)!)!;
    expect(retried.state).toBe('queued');
    expect(retried.history!.map((h) => h.outcome)).toEqual(['failed']);
    const job = await request(m.app.server).get(`/v1/jobs/${jobId}`).set(auth());
    expect(job.body.counts).toMatchObject({ succeeded: 1, running: 1, queued: 1 });
  });

  it('refuses a result whose output nests deeper than MAX_JSON_DEPTH as a protocol error of that session alone', async () => {
    await submit([{ command: ['a'] }, { command: ['b'] }]);
    const { w: bad, tasks: [t] } = await pulling({ name: 'bad', slots: 1 });
    const { w: good, tasks: [u] } = await pulling({ name: 'good', slots: 1 });
    // Sent raw: the test client's own JSON.stringify could not serialise this either.
    const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    const report = JSON.stringify(okReport).replace('"output":null', `"output":${deep}`);
    bad.ws.send(`{"type":"results","results":[{"taskId":"${t!.taskId}","leaseId":"${t!.leaseId}","report":${report}}]}`);
    expect(await good.result(u!.taskId, u!.leaseId)).toMatchObject({ status: 'recorded' });
    expect(await bad.next('error')).toMatchObject({ code: 'PROTOCOL_ERROR', fatal: true, message: `message.results.0.report.output: nested deeper than ${MAX_JSON_DEPTH} levels` });
    expect((await bad.closed).code).toBe(4400);
    expect(m.store.getTask(parseTaskId(t!.taskId)!)!.state).toBe('running'); // nothing recorded
  });

  it('refuses a results message on a protocol 1 session', async () => {
    const w = await connect();
    await w.hello({ protocol: 1 });
    w.send({ type: 'results', results: [{ taskId: 'task-1', leaseId: 'l', report: okReport }] });
    expect(await w.next('error')).toMatchObject({ code: 'PROTOCOL_ERROR', fatal: true, message: 'results needs protocol 2; this session speaks 1' });
    expect((await w.closed).code).toBe(4400);
  });

  it('takes the release reason unhealthy from protocol 3 on, and refuses it on older sessions', async () => {
    await submit([{ command: ['x'] }, { command: ['y'] }]);
    const { w: old, tasks: [t] } = await pulling({ name: 'old', protocol: 2 });
    old.send({ type: 'release', taskId: t!.taskId, leaseId: t!.leaseId, reason: 'unhealthy' });
    expect(await old.next('error')).toMatchObject({ code: 'PROTOCOL_ERROR', fatal: true, message: 'release reason unhealthy needs protocol 3; this session speaks 2' });
    expect((await old.closed).code).toBe(4400);
    expect(m.store.getTask(parseTaskId(t!.taskId)!)!.state).toBe('running'); // not released

    const { w, tasks: [u] } = await pulling({ name: 'new', protocol: 3 });
    w.send({ type: 'release', taskId: u!.taskId, leaseId: u!.leaseId, reason: 'unhealthy' });
    expect((await w.next('ack')).status).toBe('recorded');
    const task = m.store.getTask(parseTaskId(u!.taskId)!)!;
    expect(task.state).toBe('queued');
    expect(task.history).toMatchObject([{ outcome: 'released', error: { message: 'released by worker (unhealthy)' } }]);
  });

  it('sends no work to a worker that gave a task back as unhealthy, until it reports health null; its credits stay', async () => {
    await submit([{ command: ['y'] }]);
    const { w, tasks: [t] } = await pulling({ name: 'w', protocol: 3 }, 2);
    w.send({ type: 'release', taskId: t!.taskId, leaseId: t!.leaseId, reason: 'unhealthy' });
    expect((await w.next('ack')).status).toBe('recorded');
    // Not back to w on its remaining credit: another worker gets it.
    const { tasks: toV } = await pulling({ name: 'v', protocol: 3 });
    expect(toV.map((x) => x.taskId)).toEqual([t!.taskId]);
    // Shown unhealthy though it never said why; its own reason, once sent, replaces the note.
    const shown = async () => ((await request(m.app.server).get('/v1/workers').set(auth())).body as { workers: Array<{ name: string; state: string; problem: string | null }> }).workers.find((x) => x.name === 'w');
    expect(await shown()).toMatchObject({ state: 'unhealthy', problem: 'gave a task back as unhealthy' });
    w.send({ type: 'health', problem: 'disk full' });
    await vi.waitFor(async () => expect(await shown()).toMatchObject({ state: 'unhealthy', problem: 'disk full' }));
    // Healthy again, w gets work on the credit it kept (v has none left).
    w.send({ type: 'health', problem: null });
    await submit([{ command: ['z'] }]);
    expect((await w.next('tasks')).tasks.map((x) => x.spec.command)).toEqual([['z']]);
  });

  it('shows a worker that reports a problem as unhealthy until it reports none, from protocol 3 on', async () => {
    const old = await connect();
    await old.hello({ name: 'old', protocol: 2 });
    old.send({ type: 'health', problem: 'disk full' });
    expect(await old.next('error')).toMatchObject({ code: 'PROTOCOL_ERROR', fatal: true, message: 'health needs protocol 3; this session speaks 2' });

    const w = await connect();
    const { workerId } = await w.hello({ name: 'w', protocol: 3 });
    const state = async () => (await request(m.app.server).get(`/v1/workers/${workerId}`).set(auth())).body as { state: string; problem: string | null };
    w.send({ type: 'health', problem: 'cannot prepare the task\'s files under /w: ENOSPC' });
    await vi.waitFor(async () => expect(await state()).toMatchObject({ state: 'unhealthy', problem: "cannot prepare the task's files under /w: ENOSPC" }));
    w.send({ type: 'health', problem: null });
    await vi.waitFor(async () => expect(await state()).toMatchObject({ state: 'ready', problem: null }));
  });

  it('gives a worker id claimed from another host a new id, instead of letting two hosts replace each other', async () => {
    const a = await connect();
    const { workerId } = await a.hello({ name: 'a', hostname: 'vmss000001' });
    // A VM made from an image that carries the first one's worker-id file.
    const b = await connect();
    const welcome = await b.hello({ name: 'b', hostname: 'vmss000002', workerId });
    expect(welcome.workerId).not.toBe(workerId);
    // Both stay connected: nobody was replaced.
    const listed = (await request(m.app.server).get('/v1/workers').set(auth())).body as { workers: Array<{ id: string; state: string }> };
    expect(listed.workers.map((w) => [w.id, w.state]).sort()).toEqual([[workerId, 'ready'], [welcome.workerId, 'ready']].sort());
    // The first host reconnecting keeps its id.
    const again = await connect();
    expect((await again.hello({ name: 'a', hostname: 'vmss000001', workerId })).workerId).toBe(workerId);
    expect((await a.closed).code).toBe(4409);
  });

  it('closes a session whose first message is not hello, with a protocol error', async () => {
    const w = await connect();
    w.send({ type: 'pull', credits: 1 });
    const err = await w.next('error');
    expect(err).toMatchObject({ code: 'PROTOCOL_ERROR', fatal: true });
    expect((await w.closed).code).toBe(4400);
  });

  it('answers malformed messages with a protocol error naming the problem', async () => {
    const w = await connect();
    w.send({ type: 'hello', protocol: 1, name: 'x', hostname: 'h', slots: 0, labels: [], version: '1', vm: null, running: [] });
    const err = await w.next('error');
    expect(err.message).toContain('slots');
  });

  it('a waiting pull receives a task submitted later', async () => {
    const w = await connect();
    await w.hello();
    w.send({ type: 'pull', credits: 2 });
    const jobId = await submit([{ command: ['true'], key: 'late' }]);
    const msg = await w.next('tasks');
    expect(msg.tasks).toHaveLength(1);
    expect(msg.tasks[0]).toMatchObject({ jobId, key: 'late', attempt: 1, spec: { command: ['true'] } });
    const ack = await w.result(msg.tasks[0]!.taskId, msg.tasks[0]!.leaseId);
    expect(ack.status).toBe('recorded');
    const job = await request(m.app.server).get(`/v1/jobs/${jobId}`).set(auth());
    expect(job.body).toMatchObject({ state: 'succeeded', counts: { succeeded: 1, total: 1 } });
  });

  it('hands nothing to a session that is closing, and deals its task to the next worker', async () => {
    const w1 = await connect();
    await w1.hello({ name: 'closing' });
    w1.send({ type: 'pull', credits: 1 }); // nothing queued: it waits
    // A peer that never answers the close: the server's socket stays closing (ws waits 30 s).
    w1.ws.close = () => {};
    w1.ws.send('{"type":"nonsense"}');
    expect(await w1.next('error')).toMatchObject({ code: 'PROTOCOL_ERROR', fatal: true });
    const jobId = await submit([{ command: ['true'], key: 'not-for-the-closing-one' }]);
    const { tasks: items } = (await request(m.app.server).get(`/v1/jobs/${jobId}/tasks`).set(auth())).body as { tasks: Array<{ id: string; state: string; attempts: number }> };
    expect(items.map((t) => [t.state, t.attempts])).toEqual([['queued', 0]]); // never leased
    const { tasks } = await pulling({ name: 'next' });
    expect(tasks).toMatchObject([{ taskId: items[0]!.id, attempt: 1 }]);
  });

  it('claims again by itself after a claim whose commit failed, with nothing else happening', async () => {
    const jobId = await submit([{ command: ['true'], key: 'after-full-disk' }]);
    // The lease fails to commit (a trigger on the manager's own connection stands in for a full
    // disk); the function counts the attempts, outside the transaction that rolls back.
    let failedClaims = 0;
    m.store.db.function('count_failed_claim', () => ++failedClaims);
    m.store.db.exec(`CREATE TEMP TRIGGER no_lease BEFORE UPDATE OF state ON main.tasks WHEN new.state = 'running'
                     BEGIN SELECT count_failed_claim(); SELECT RAISE(ABORT, 'no space'); END`);
    const w = await connect();
    await w.hello();
    w.send({ type: 'pull', credits: 1 });
    await vi.waitFor(() => expect(failedClaims).toBeGreaterThan(0), { timeout: 10_000, interval: 20 });
    m.store.db.exec('DROP TRIGGER no_lease');
    // The worker sends nothing more; the manager's retry claims the task for it.
    const msg = await w.next('tasks');
    expect(msg.tasks[0]).toMatchObject({ jobId, key: 'after-full-disk', attempt: 1 });
  });

  describe('a submission hands its tasks to a waiting worker', () => {
    /** Every state a task row enters, in order, from temporary triggers on the manager's own connection. */
    function recordTransitions(): (taskId: string) => string[] {
      m.store.db.exec(`
        CREATE TEMP TABLE IF NOT EXISTS transitions (seq INTEGER PRIMARY KEY, task_id INTEGER, state TEXT);
        CREATE TEMP TRIGGER IF NOT EXISTS t_insert AFTER INSERT ON main.tasks BEGIN INSERT INTO transitions (task_id, state) VALUES (new.id, new.state); END;
        CREATE TEMP TRIGGER IF NOT EXISTS t_update AFTER UPDATE OF state ON main.tasks WHEN new.state <> old.state
        BEGIN INSERT INTO transitions (task_id, state) VALUES (new.id, new.state); END;`);
      return (taskId) => (m.store.db.prepare('SELECT state FROM transitions WHERE task_id = ? ORDER BY seq').all(parseTaskId(taskId)) as Array<{ state: string }>).map((r) => r.state);
    }

    /** Pulls, then waits for an answer that the manager sends after it handled the pull. */
    async function waitWith(w: TestWorker, credits: number): Promise<void> {
      w.send({ type: 'pull', credits });
      expect((await w.result('task-999999', 'no-such-lease')).status).toBe('stale');
    }

    it('inserts it already leased to the worker: it never waits in the queue', async () => {
      const states = recordTransitions();
      const w = await connect();
      await w.hello();
      await waitWith(w, 1);
      const jobId = await submit([{ command: ['true'], key: 'now' }]);
      const [task] = (await w.next('tasks')).tasks;
      expect(task).toMatchObject({ jobId, key: 'now', attempt: 1 });
      expect((await w.result(task!.taskId, task!.leaseId)).status).toBe('recorded');
      expect(states(task!.taskId)).toEqual(['running', 'succeeded']);
    });

    it('a worker dealt only a duplicate key still gets the rest of the submission, from the queue', async () => {
      const res = await request(m.app.server).post('/v1/jobs').set(auth()).send({ open: true, tasks: [{ key: 'a', command: ['true'] }] });
      const jobId = res.body.id as string;
      const { w, tasks: [a] } = await pulling({});
      expect((await w.result(a!.taskId, a!.leaseId)).status).toBe('recorded');
      await waitWith(w, 1);
      // 'a' comes first in queue order, so the worker is dealt it, and it is a duplicate.
      const added = await request(m.app.server).post(`/v1/jobs/${jobId}/tasks`).set(auth()).send({ tasks: [{ key: 'a', command: ['true'] }, { key: 'b', command: ['true'] }] });
      expect(added.body).toEqual({ accepted: 1, duplicates: 1 });
      expect((await w.next('tasks')).tasks.map((t) => t.key)).toEqual(['b']);
    });
  });

  it('holds credits granted before welcome until the worker is registered, then serves them under its id', async () => {
    // Against the protocol (pull belongs after welcome), but it must not lease a task to nobody.
    await submit([{ command: ['true'], key: 'early' }]);
    const w = await connect();
    w.send({ type: 'hello', protocol: PROTOCOL_VERSION, name: 'eager', hostname: 'localhost', slots: 1, labels: [], version: '0.1.0', vm: null, running: [] });
    w.send({ type: 'pull', credits: 1 });
    const { workerId } = await w.next('welcome');
    const [task] = (await w.next('tasks')).tasks;
    expect(task!.key).toBe('early');
    expect(m.store.getTask(parseTaskId(task!.taskId)!)!.workerId).toBe(workerId);
    expect((await w.result(task!.taskId, task!.leaseId)).status).toBe('recorded');
  });

  it('never sends more slots than the credits granted', async () => {
    await submit([{ command: ['a'], slots: 2 }, { command: ['b'], slots: 2 }, { command: ['c'], slots: 1 }]);
    const w = await connect();
    await w.hello({ slots: 3 });
    w.send({ type: 'pull', credits: 3 });
    const msg = await w.next('tasks');
    const slots = msg.tasks.reduce((n, t) => n + (t.spec.slots ?? 1), 0);
    expect(slots).toBeLessThanOrEqual(3);
    expect(msg.tasks.map((t) => t.spec.command![0])).toEqual(['a', 'c']);
  });

  it('heartbeats keep a lease alive past its TTL', async () => {
    await submit([{ command: ['sleep', '1000'] }]);
    const w = await connect();
    await w.hello();
    w.send({ type: 'pull', credits: 1 });
    const [task] = (await w.next('tasks')).tasks;
    const first = leaseExpiry(task!.taskId);
    for (let i = 0; i < 4; i++) {
      m.clock.advance(TTL / 2);
      const before = leaseExpiry(task!.taskId);
      w.send({ type: 'heartbeat' });
      await vi.waitFor(() => expect(leaseExpiry(task!.taskId)).toBeGreaterThan(before));
      await m.app.pullman.reaper.tick();
    }
    // Two TTLs have passed since the claim; the heartbeats kept the task leased.
    expect(leaseExpiry(task!.taskId)).toBeGreaterThan(first + TTL);
    expect(m.store.getTask(parseTaskId(task!.taskId)!)!.state).toBe('running');
    expect((await w.result(task!.taskId, task!.leaseId)).status).toBe('recorded');
  });

  it('a silent worker loses its tasks after the TTL and another worker gets them', async () => {
    await submit([{ command: ['work'], key: 'only' }]);
    const silent = await connect();
    await silent.hello({ name: 'silent' });
    silent.send({ type: 'pull', credits: 1 });
    const [lost] = (await silent.next('tasks')).tasks;

    m.clock.advance(TTL + 1);
    // This one joins after the silence began, so only `silent` has been quiet past the TTL.
    const other = await connect();
    const { workerId: otherId } = await other.hello({ name: 'other' });
    other.send({ type: 'pull', credits: 1 });

    const swept = await m.app.pullman.reaper.tick();
    expect(swept.requeued).toBe(1);
    expect((await silent.closed).code).toBe(1006); // terminated by the manager

    const [again] = (await other.next('tasks')).tasks;
    expect(again).toMatchObject({ taskId: lost!.taskId, attempt: 2 });
    expect(again!.leaseId).not.toBe(lost!.leaseId);
    expect((await other.result(again!.taskId, again!.leaseId)).status).toBe('recorded');

    const task = (await request(m.app.server).get(`/v1/tasks/${lost!.taskId}`).set(auth())).body;
    expect(task).toMatchObject({ state: 'succeeded', workerId: otherId, attempts: 2 });
    expect(task.history.map((h: { outcome: string }) => h.outcome)).toEqual(['lost', 'succeeded']);
  });

  it('answers a stale result with `stale` and records the task once', async () => {
    await submit([{ command: ['work'] }]);
    const a = await connect();
    const { workerId: aId } = await a.hello({ name: 'a' });
    a.send({ type: 'pull', credits: 1 });
    const [first] = (await a.next('tasks')).tasks;
    // a is cut off past the TTL; its task is requeued and b takes it.
    await a.close();
    m.clock.advance(TTL + 1);
    await m.app.pullman.reaper.tick();
    const b = await connect();
    await b.hello({ name: 'b' });
    b.send({ type: 'pull', credits: 1 });
    const [second] = (await b.next('tasks')).tasks;
    expect(second!.taskId).toBe(first!.taskId);

    // a comes back and delivers the result from its outbox: the lease is no longer current.
    const a2 = await connect();
    const welcome = await a2.hello({ name: 'a', workerId: aId, running: [] });
    expect(welcome.workerId).toBe(aId);
    const staleAck = await a2.result(first!.taskId, first!.leaseId, { exitCode: 3 });
    expect(staleAck).toMatchObject({ status: 'stale', taskId: first!.taskId });
    const taskSeq = parseTaskId(first!.taskId)!;
    expect(m.store.getTask(taskSeq)!.state).toBe('running');
    expect(m.store.getTask(taskSeq)!.result).toBeNull();

    expect((await b.result(second!.taskId, second!.leaseId)).status).toBe('recorded');
    const task = m.store.getTask(taskSeq)!;
    expect(task.state).toBe('succeeded');
    expect(task.result!.exitCode).toBe(0);
    // A second report for the same lease is stale too: recorded exactly once.
    expect((await b.result(second!.taskId, second!.leaseId)).status).toBe('stale');
  });

  it('propagates a task cancel to the worker running it', async () => {
    await submit([{ command: ['sleep', '100'] }]);
    const w = await connect();
    await w.hello();
    w.send({ type: 'pull', credits: 1 });
    const [t] = (await w.next('tasks')).tasks;
    const res = await request(m.app.server).post(`/v1/tasks/${t!.taskId}/cancel`).set(auth());
    expect(res.body.state).toBe('cancelled');
    expect(await w.next('cancel')).toMatchObject({ taskId: t!.taskId, leaseId: t!.leaseId });
    // The killed task's report arrives after the lease was voided: stale, nothing changes.
    expect((await w.result(t!.taskId, t!.leaseId, { exitCode: null, signal: 'SIGTERM', cancelled: true })).status).toBe('stale');
    expect(m.store.getTask(parseTaskId(t!.taskId)!)!.state).toBe('cancelled');
  });

  it('tells a reconnecting worker of a task cancelled around its hello: in welcome.lost before, by a cancel after', async () => {
    // Either way the worker must hear of it, or it runs a cancelled task to its end.
    for (const cancelFirst of [true, false]) {
      await submit([{ command: ['sleep', '100'] }]);
      const w1 = await connect();
      const { workerId } = await w1.hello({ name: 'r' });
      w1.send({ type: 'pull', credits: 1 });
      const [t] = (await w1.next('tasks')).tasks;
      await w1.close();
      const cancel = async () => expect((await request(m.app.server).post(`/v1/tasks/${t!.taskId}/cancel`).set(auth())).body.state).toBe('cancelled');
      if (cancelFirst) await cancel();
      const w2 = await connect();
      const welcome = await w2.hello({ name: 'r', workerId, running: [{ taskId: t!.taskId, leaseId: t!.leaseId }] });
      if (cancelFirst) {
        expect(welcome).toMatchObject({ resumed: [], lost: [t!.taskId] });
      } else {
        expect(welcome.resumed).toEqual([t!.taskId]);
        await cancel();
        expect(await w2.next('cancel')).toMatchObject({ taskId: t!.taskId, leaseId: t!.leaseId });
      }
      await w2.close();
    }
  });

  it('propagates a job cancel to every worker running its tasks', async () => {
    const jobId = await submit([{ command: ['a'] }, { command: ['b'] }, { command: ['c'] }]);
    const w = await connect();
    await w.hello({ slots: 2 });
    w.send({ type: 'pull', credits: 2 });
    const running = (await w.next('tasks')).tasks;
    const res = await request(m.app.server).post(`/v1/jobs/${jobId}/cancel`).set(auth());
    expect(res.body).toMatchObject({ state: 'cancelled', counts: { cancelled: 3, queued: 0, running: 0 } });
    const cancelled = [await w.next('cancel'), await w.next('cancel')].map((c) => c.taskId).sort();
    expect(cancelled).toEqual(running.map((t) => t.taskId).sort());
  });

  it('a reconnecting worker resumes its leases and its result is recorded', async () => {
    await submit([{ command: ['long'] }, { command: ['other'] }]);
    const w1 = await connect();
    const { workerId } = await w1.hello({ name: 'flaky' });
    w1.send({ type: 'pull', credits: 1 });
    const [t] = (await w1.next('tasks')).tasks;
    await w1.close();
    await vi.waitFor(async () => expect((await request(m.app.server).get(`/v1/workers/${workerId}`).set(auth())).body.state).toBe('offline'));

    const w2 = await connect();
    const welcome = await w2.hello({ name: 'flaky', workerId, running: [{ taskId: t!.taskId, leaseId: t!.leaseId }, { taskId: 'task-999', leaseId: 'gone-lease' }] });
    expect(welcome.workerId).toBe(workerId);
    expect(welcome.resumed).toEqual([t!.taskId]);
    expect(welcome.lost).toEqual(['task-999']);
    // The resumed lease belongs to the new session: its heartbeats extend it.
    m.clock.advance(TTL / 2);
    const before = leaseExpiry(t!.taskId);
    w2.send({ type: 'heartbeat' });
    await vi.waitFor(() => expect(leaseExpiry(t!.taskId)).toBeGreaterThan(before));
    expect((await w2.result(t!.taskId, t!.leaseId)).status).toBe('recorded');
  });

  describe('leases the reconnected worker does not hold', () => {
    /** A worker that received two tasks, then lost its link: `missing` is the one whose frame "died". */
    async function reconnectHolding(protocol: number) {
      await submit([{ command: ['kept'] }, { command: ['never-arrived'] }]);
      const w1 = await connect();
      const { workerId } = await w1.hello({ name: 'flaky', protocol });
      w1.send({ type: 'pull', credits: 2 });
      const [kept, missing] = (await w1.next('tasks')).tasks;
      await w1.close(); // as if the second task's frame died with the link (or with the manager)
      const w2 = await connect();
      const welcome = await w2.hello({ name: 'flaky', protocol, workerId, running: [{ taskId: kept!.taskId, leaseId: kept!.leaseId }] });
      expect(welcome.resumed).toEqual([kept!.taskId]);
      expect(m.store.getTask(parseTaskId(missing!.taskId)!)!.state).toBe('running'); // hello alone takes nothing back
      return { w2, kept: kept!, missing: missing! };
    }

    /** A worker whose task finished while it was disconnected, back on a new session, owing the result. */
    async function finishedOffline() {
      await submit([{ command: ['done-offline'] }]);
      const w1 = await connect();
      const { workerId } = await w1.hello({ name: 'flaky' });
      w1.send({ type: 'pull', credits: 1 });
      const [t] = (await w1.next('tasks')).tasks;
      await w1.close();
      const w2 = await connect();
      await w2.hello({ name: 'flaky', workerId, running: [] });
      return { w2, t: t! };
    }

    it('are taken back at the first pull, from protocol 4 on, not after the TTL', async () => {
      const { w2, kept, missing } = await reconnectHolding(PROTOCOL_VERSION);
      w2.send({ type: 'pull', credits: 1 });
      // No clock advance: the lease has not expired, and the task comes back at once.
      const [again] = (await w2.next('tasks')).tasks;
      expect(again).toMatchObject({ taskId: missing.taskId, attempt: 2 });
      const history = (await request(m.app.server).get(`/v1/tasks/${missing.taskId}`).set(auth())).body.history as Array<{ outcome: string; error: { message: string } | null }>;
      expect(history.map((h) => h.outcome)).toEqual(['lost', 'running']);
      expect(history[0]!.error!.message).toBe('not on its worker when it reconnected');
      // The lease it listed is untouched.
      expect((await w2.result(kept.taskId, kept.leaseId)).status).toBe('recorded');
      expect((await request(m.app.server).get('/metrics').set(auth())).text).toMatch(/pullman_tasks_requeued_total\{reason="not-on-worker"\} 1/);
    });

    it('wait for their TTL on a protocol 3 session, whose worker made no promise about its order', async () => {
      const { w2, missing } = await reconnectHolding(3);
      w2.send({ type: 'pull', credits: 1 });
      // The pull's dispatch round commits before this result's settle: then the take-back would have run.
      expect((await w2.result('task-999999', 'no-such-lease')).status).toBe('stale');
      // Still the lease its frame carried, on its first attempt: not taken back (and dealt again).
      expect(m.store.getTask(parseTaskId(missing.taskId)!)!).toMatchObject({ state: 'running', attempts: 1 });
      expect(m.store.db.prepare('SELECT lease_id AS l FROM tasks WHERE id = ?').get(parseTaskId(missing.taskId))).toEqual({ l: missing.leaseId });
    });

    it('stay when a result re-sent before the first pull failed to commit: that session takes nothing back', async () => {
      const { w2, t } = await finishedOffline();
      // The result's commit fails (a trigger on the manager's own connection stands in for a
      // full disk); the worker re-sends it later, after its first pull.
      m.store.db.exec(`CREATE TEMP TRIGGER no_success BEFORE UPDATE OF state ON main.tasks WHEN new.state = 'succeeded' BEGIN SELECT RAISE(ABORT, 'no space'); END`);
      w2.send({ type: 'results', results: [{ taskId: t!.taskId, leaseId: t!.leaseId, report: okReport }] });
      expect(await w2.next('error')).toMatchObject({ fatal: false });
      m.store.db.exec('DROP TRIGGER no_success');
      w2.send({ type: 'pull', credits: 1 });
      expect((await w2.result('task-999999', 'no-such-lease')).status).toBe('stale'); // the pull was handled
      w2.send({ type: 'results', results: [{ taskId: t!.taskId, leaseId: t!.leaseId, report: okReport }] });
      expect(await w2.next('ack')).toMatchObject({ taskId: t!.taskId, status: 'recorded' });
      expect(m.store.getTask(parseTaskId(t!.taskId)!)!).toMatchObject({ state: 'succeeded', attempts: 1 });
    });

    it('stay with a second live process of the same worker id: a hello that replaces an open session takes nothing back', async () => {
      // Containers from one image with its work dir baked in and a fixed hostname share an id.
      await submit([{ command: ['long'] }, { command: ['other'] }]);
      const w1 = await connect();
      const { workerId } = await w1.hello({ name: 'c1', hostname: 'worker', slots: 1 });
      w1.send({ type: 'pull', credits: 1 });
      const [a] = (await w1.next('tasks')).tasks;
      const w2 = await connect();
      await w2.hello({ name: 'c2', hostname: 'worker', slots: 1, workerId, running: [] });
      w2.send({ type: 'pull', credits: 1 });
      const [got] = (await w2.next('tasks')).tasks;
      expect(got!.taskId).not.toBe(a!.taskId);
      expect(m.store.getTask(parseTaskId(a!.taskId)!)!).toMatchObject({ state: 'running', attempts: 1 });
    });

    it('do not include a result re-sent before the first pull: it is recorded, not requeued', async () => {
      const { w2, t } = await finishedOffline();
      // As a worker re-sends its outbox: the results, then the pull.
      w2.send({ type: 'results', results: [{ taskId: t!.taskId, leaseId: t!.leaseId, report: okReport }] });
      w2.send({ type: 'pull', credits: 1 });
      expect(await w2.next('ack')).toMatchObject({ taskId: t!.taskId, leaseId: t!.leaseId, status: 'recorded' });
      expect(m.store.getTask(parseTaskId(t!.taskId)!)!).toMatchObject({ state: 'succeeded', attempts: 1 });
    });
  });

  it('counts a release past MAX_LOSSES as a failed task, not a requeued one', async () => {
    await submit([{ command: ['a'] }]);
    const { w, tasks: [t] } = await pulling({ name: 'r' });
    m.store.db.prepare('UPDATE tasks SET losses = ? WHERE id = ?').run(MAX_LOSSES, parseTaskId(t!.taskId));
    w.send({ type: 'release', taskId: t!.taskId, leaseId: t!.leaseId, reason: 'drain' });
    expect((await w.next('ack')).status).toBe('recorded');
    expect(m.store.getTask(parseTaskId(t!.taskId)!)!.state).toBe('failed');
    const text = (await request(m.app.server).get('/metrics').set(auth())).text;
    expect(text).toMatch(/pullman_tasks_requeued_total\{reason="released"\} 0\n/);
    expect(text).toMatch(/pullman_tasks_finished_total\{outcome="failed"\} 1\n/);
  });

  it('a released task is requeued without spending a retry and goes to another worker', async () => {
    await submit([{ command: ['x'], retries: 0 }]);
    const a = await connect();
    await a.hello({ name: 'a' });
    a.send({ type: 'pull', credits: 1 });
    const [t] = (await a.next('tasks')).tasks;
    a.send({ type: 'draining', reason: 'test' });
    a.send({ type: 'release', taskId: t!.taskId, leaseId: t!.leaseId, reason: 'drain' });
    expect((await a.next('ack')).status).toBe('recorded');
    const b = await connect();
    await b.hello({ name: 'b' });
    b.send({ type: 'pull', credits: 1 });
    const [again] = (await b.next('tasks')).tasks;
    expect(again!.taskId).toBe(t!.taskId);
    expect((await b.result(again!.taskId, again!.leaseId)).status).toBe('recorded');
    expect(m.store.getTask(parseTaskId(t!.taskId)!)!.state).toBe('succeeded');
  });

  it('sends drain to a worker drained through the API and stops dispatching to it', async () => {
    const w = await connect();
    const { workerId } = await w.hello();
    const res = await request(m.app.server).post(`/v1/workers/${workerId}/drain`).set(auth());
    expect(res.body.state).toBe('draining');
    await w.next('drain');
    w.send({ type: 'pull', credits: 1 });
    await submit([{ command: ['x'] }]);
    // Another worker proves the dispatcher ran; the draining one got nothing.
    const other = await connect();
    await other.hello({ name: 'other' });
    other.send({ type: 'pull', credits: 1 });
    await other.next('tasks');
    expect(w.received.filter((msg) => msg.type === 'tasks')).toEqual([]);
  });

  it('bye marks the worker gone and requeues what it still held', async () => {
    await submit([{ command: ['x'] }]);
    const w = await connect();
    const { workerId } = await w.hello();
    w.send({ type: 'pull', credits: 1 });
    const [t] = (await w.next('tasks')).tasks;
    w.send({ type: 'bye' });
    expect((await w.closed).code).toBe(1000);
    await vi.waitFor(() => expect(m.store.getTask(parseTaskId(t!.taskId)!)!.state).toBe('queued'));
    expect(m.store.getWorker(workerId)!.state).toBe('gone');
  });

  it('declares an offline worker gone once its leases have had a full TTL', async () => {
    const w = await connect();
    const { workerId } = await w.hello();
    await w.close();
    await vi.waitFor(() => expect(m.store.getWorker(workerId)!.state).toBe('offline'));
    await m.app.pullman.reaper.tick();
    expect(m.store.getWorker(workerId)!.state).toBe('offline');
    m.clock.advance(TTL + 1);
    expect((await m.app.pullman.reaper.tick()).gone).toBe(1);
    expect(m.store.getWorker(workerId)!.state).toBe('gone');
  });
});
