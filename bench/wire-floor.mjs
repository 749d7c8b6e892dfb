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
//
// Prints `listening on URL` once ready (after queueing the tasks, in SQLite mode).
import http from 'node:http';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';
import { openFloor } from './sqlite-floor.mjs';

const total = Number(process.argv[2]);
const dataDir = process.argv[3];
if (!Number.isSafeInteger(total) || total < 1) {
  process.stderr.write('usage: wire-floor.mjs <tasks> [data dir]\n');
  process.exit(2);
}
const SPEC = '{"command":["true"]}';

/** Where tasks come from: a counter, or the raw SQLite floor's statements. */
const queue = dataDir ? sqliteQueue(join(dataDir, 'floor.db')) : memoryQueue();

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
  const { db, claim, complete } = openFloor(path, total);
  let lease = 0;
  const turn = db.transaction((work) => {
    const t = Date.now();
    for (const w of work) for (const r of w.results) complete(t, r.result, Number(r.taskId.slice('task-'.length)), r.leaseId);
    for (const w of work) {
      if (w.credits < 1) continue;
      const l = String(++lease).padStart(32, '0');
      w.claimed = claim(l, w.id, t, w.credits).map((row) => ({ id: row.id, lease: l, spec: row.spec }));
      w.credits -= w.claimed.length;
    }
  });
  return { turn };
}

const server = http.createServer((req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, path: '/v1/worker', perMessageDeflate: false });
const sessions = new Set();
let scheduled = false;

function flush() {
  scheduled = false;
  const work = [...sessions];
  queue.turn(work);
  for (const s of work) {
    const frames = [];
    if (s.results.length > 0) {
      frames.push(JSON.stringify({ type: 'acks', acks: s.results.map((r) => ({ taskId: r.taskId, leaseId: r.leaseId, status: 'recorded' })) }));
      s.results = [];
    }
    if (s.claimed.length > 0) {
      frames.push(`{"type":"tasks","tasks":[${s.claimed.map((t) => `{"taskId":"task-${t.id}","jobId":"job-1","key":null,"attempt":1,"leaseId":"${t.lease}","spec":${t.spec}}`).join(',')}]}`);
      s.claimed = [];
    }
    if (frames.length === 0) continue;
    s.ws._socket.cork();
    for (const f of frames) s.ws.send(f);
    s.ws._socket.uncork();
  }
}

let workers = 0;
wss.on('connection', (ws) => {
  const s = { ws, id: `w-${++workers}`, credits: 0, results: [], claimed: [] };
  sessions.add(s);
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.type === 'hello') {
      ws.send(JSON.stringify({ type: 'welcome', protocol: Math.min(m.protocol, 2), workerId: s.id, sessionId: s.id, heartbeatIntervalMs: 5_000, leaseTtlMs: 30_000, resumed: [], lost: [] }));
      return;
    }
    if (m.type === 'pull') s.credits += m.credits;
    else if (m.type === 'results') for (const r of m.results) s.results.push({ taskId: r.taskId, leaseId: r.leaseId, result: JSON.stringify(r.report) });
    else if (m.type === 'result') s.results.push({ taskId: m.taskId, leaseId: m.leaseId, result: JSON.stringify(m.report) });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  });
  ws.on('close', () => sessions.delete(s));
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
