// The dispatch reference for everything but the database: the least a manager could do per task
// on the worker channel. It speaks the worker protocol the simulated workers speak (hello ->
// welcome, pull -> tasks, result -> acks) from memory: no SQLite, no validation, no metrics. Like
// the manager it batches a turn's work: each session's acks and next tasks leave together, corked,
// after the turn's messages were read. Run as its own process, like the manager.
// Usage: node wire-floor.mjs <tasks>. Prints `listening on URL`.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const total = Number(process.argv[2]);
if (!Number.isSafeInteger(total) || total < 1) {
  process.stderr.write('usage: wire-floor.mjs <tasks>\n');
  process.exit(2);
}
const SPEC = '{"command":["true"]}';
let sent = 0;

const server = http.createServer((req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ server, path: '/v1/worker', perMessageDeflate: false });
const sessions = new Set();
let scheduled = false;

function flush() {
  scheduled = false;
  for (const s of sessions) {
    const frames = [];
    if (s.acks.length > 0) {
      frames.push(JSON.stringify({ type: 'acks', acks: s.acks }));
      s.acks = [];
    }
    const items = [];
    while (s.credits > 0 && sent < total) {
      s.credits--;
      sent++;
      items.push(`{"taskId":"task-${sent}","jobId":"job-1","key":null,"attempt":1,"leaseId":"${sent.toString(16).padStart(32, '0')}","spec":${SPEC}}`);
    }
    if (items.length > 0) frames.push(`{"type":"tasks","tasks":[${items.join(',')}]}`);
    if (frames.length === 0) continue;
    s.ws._socket.cork();
    for (const f of frames) s.ws.send(f);
    s.ws._socket.uncork();
  }
}

let workers = 0;
wss.on('connection', (ws) => {
  const s = { ws, credits: 0, acks: [] };
  sessions.add(s);
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.type === 'hello') {
      ws.send(JSON.stringify({ type: 'welcome', protocol: 1, workerId: `w-${++workers}`, sessionId: `s-${workers}`, heartbeatIntervalMs: 5_000, leaseTtlMs: 30_000, resumed: [], lost: [] }));
      return;
    }
    if (m.type === 'pull') s.credits += m.credits;
    else if (m.type === 'result') s.acks.push({ taskId: m.taskId, leaseId: m.leaseId, status: 'recorded' });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  });
  ws.on('close', () => sessions.delete(s));
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
