// The dispatch references for the worker channel: the least a manager could do per task. It speaks
// the worker protocol the simulated workers speak (hello -> welcome, pull -> tasks, results -> acks),
// with no validation and no metrics, and like the manager it batches a turn's work: each session's
// acks and next tasks leave together, corked, after the turn's messages were read. Run as its own
// process, like the manager.
//
//   node wire-floor.mjs <tasks>              tasks from memory: the wire alone
//   node wire-floor.mjs <tasks> <data dir>   tasks in SQLite: the wire plus the raw claim+complete
//     floor's statements (the manager's schema and pragmas, one transaction per turn completing the
//     turn's results and claiming for every session with credits; no attempts, counters or
//     fencing by worker). The least a manager on one event loop could do.
//   node wire-floor.mjs <tasks> <data dir> thread
//                                            the same statements on a worker thread of their own:
//     the event loop reads and writes the sockets while the thread runs the previous turn's
//     transaction. What the least manager could gain from moving SQLite off its event loop.
//
// Prints `listening on URL` once ready (after queueing the tasks, in SQLite mode).
import http from 'node:http';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { WebSocketServer } from 'ws';
import { encodeResult } from '@pullman/store';
import { openFloor } from './sqlite-floor.mjs';

if (!isMainThread) sqliteThread();
else main();

function main() {
  const total = Number(process.argv[2]);
  const dataDir = process.argv[3];
  const threaded = process.argv[4] === 'thread';
  if (!Number.isSafeInteger(total) || total < 1 || (process.argv[4] !== undefined && !threaded)) {
    process.stderr.write('usage: wire-floor.mjs <tasks> [data dir [thread]]\n');
    process.exit(2);
  }
  const SPEC = '{"command":["true"]}';

  /** Where tasks come from: a counter, or the raw SQLite floor's statements, here or on a thread. */
  const queue = !dataDir ? memoryQueue() : threaded ? threadQueue(join(dataDir, 'floor.db')) : sqliteQueue(join(dataDir, 'floor.db'));

  function memoryQueue() {
    let sent = 0;
    return {
      turn(work) {
        for (const w of work) {
          const items = [];
          while (w.credits > 0 && sent < total) {
            w.credits--;
            sent++;
            items.push({ id: sent, lease: sent.toString(16).padStart(32, '0'), spec: SPEC });
          }
          w.claimed = items;
        }
      },
    };
  }

  function sqliteQueue(path) {
    const turn = floorTurn(path, total);
    return {
      turn(work) {
        const claimed = turn({ results: work.map((w) => w.results), credits: work.map((w) => w.credits), ids: work.map((w) => w.id) });
        work.forEach((w, i) => {
          w.claimed = claimed[i];
          w.credits -= w.claimed.length;
        });
      },
    };
  }

  /**
   * The SQLite floor's turn on a worker thread. One turn is in flight at a time; results and
   * credits that arrive meanwhile wait for the next, so each transaction takes everything that
   * piled up while the last one ran. A session's credits are taken into the turn and what the
   * claim did not use is given back with its answer. (Letting two or three turns be in flight
   * measured the same.)
   */
  function threadQueue(path) {
    const thread = new Worker(new URL(import.meta.url), { workerData: { path, total } });
    let busy = false;
    let ready;
    const opened = new Promise((r) => (ready = r));
    let inFlight = [];
    thread.on('message', (m) => {
      if (m.type === 'ready') return ready();
      busy = false;
      inFlight.forEach((s, i) => {
        const claimed = m.claimed[i];
        s.credits += s.offered - claimed.length;
        s.starved = s.offered > 0 && claimed.length === 0; // the queue has nothing left for it
        s.claimed = claimed;
        send(s, s.acking);
      });
      schedule();
    });
    thread.on('error', (err) => {
      process.stderr.write(`wire-floor thread: ${err.stack}\n`);
      process.exit(1);
    });
    return {
      opened,
      async: true,
      busy: () => busy,
      turn(work) {
        busy = true;
        inFlight = work;
        // Taken into the turn: its results (acked when it answers) and its credits.
        for (const s of work) {
          [s.acking, s.results] = [s.results, []];
          [s.offered, s.credits] = [s.credits, 0];
        }
        thread.postMessage({ results: work.map((s) => s.acking), credits: work.map((s) => s.offered), ids: work.map((s) => s.id) });
      },
    };
  }

  const server = http.createServer((req, res) => {
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ server, path: '/v1/worker', perMessageDeflate: false });
  const sessions = new Set();
  let scheduled = false;

  function flush() {
    scheduled = false;
    if (queue.async) {
      if (queue.busy()) return; // the thread's answer schedules the next turn
      const work = [...sessions].filter((s) => s.results.length > 0 || (s.credits > 0 && !s.starved));
      if (work.length > 0) queue.turn(work);
      return;
    }
    const work = [...sessions];
    queue.turn(work);
    for (const s of work) {
      send(s, s.results);
      s.results = [];
    }
  }

  /** Writes a session's acks for `acked` and its claimed tasks, corked into one write. */
  function send(s, acked) {
    const frames = [];
    if (acked.length > 0) {
      frames.push(JSON.stringify({ type: 'acks', acks: acked.map((r) => ({ taskId: r.taskId, leaseId: r.leaseId, status: 'recorded' })) }));
    }
    if (s.claimed.length > 0) {
      frames.push(`{"type":"tasks","tasks":[${s.claimed.map((t) => `{"taskId":"task-${t.id}","jobId":"job-1","key":null,"attempt":1,"leaseId":"${t.lease}","spec":${t.spec}}`).join(',')}]}`);
      s.claimed = [];
    }
    if (frames.length === 0) return;
    s.ws._socket.cork();
    for (const f of frames) s.ws.send(f);
    s.ws._socket.uncork();
  }

  let workers = 0;
  wss.on('connection', (ws) => {
    const s = { ws, id: `w-${++workers}`, credits: 0, offered: 0, starved: false, results: [], acking: [], claimed: [] };
    sessions.add(s);
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m.type === 'hello') {
        ws.send(JSON.stringify({ type: 'welcome', protocol: Math.min(m.protocol, 2), workerId: s.id, sessionId: s.id, heartbeatIntervalMs: 5_000, leaseTtlMs: 30_000, resumed: [], lost: [] }));
        return;
      }
      if (m.type === 'pull') {
        s.credits += m.credits;
        s.starved = false;
      }
      else if (m.type === 'results') for (const r of m.results) s.results.push({ taskId: r.taskId, leaseId: r.leaseId, result: encodeResult(r.report) });
      else if (m.type === 'result') s.results.push({ taskId: m.taskId, leaseId: m.leaseId, result: encodeResult(m.report) });
      schedule();
    });
    ws.on('close', () => sessions.delete(s));
  });
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    setImmediate(flush);
  }
  Promise.resolve(queue.opened).then(() => {
    server.listen(0, '127.0.0.1', () => process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`));
  });
  process.on('SIGTERM', () => process.exit(0));
}

/**
 * Opens the floor's database and returns its turn, one transaction: completes every session's
 * results, then claims up to each session's credits. Arrays are per session (results, credits,
 * ids); returns the tasks claimed for each. sqliteQueue runs it on the event loop, the thread of
 * `thread` mode on its own.
 */
function floorTurn(path, total) {
  const { db, claim, complete } = openFloor(path, total);
  let lease = 0;
  return db.transaction(({ results, credits, ids }) => {
    const t = Date.now();
    for (const rs of results) for (const r of rs) complete(t, r.result, Number(r.taskId.slice('task-'.length)), r.leaseId);
    return credits.map((c, i) => {
      if (c < 1) return [];
      const l = String(++lease).padStart(32, '0');
      return claim(l, ids[i], t, c).map((row) => ({ id: row.id, lease: l, spec: row.spec }));
    });
  });
}

/** The worker thread of `thread` mode. */
function sqliteThread() {
  const turn = floorTurn(workerData.path, workerData.total);
  parentPort.on('message', (m) => parentPort.postMessage({ claimed: turn(m) }));
  parentPort.postMessage({ type: 'ready' });
}
