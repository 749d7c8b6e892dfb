// The latency reference: the least a manager could do between "a task was submitted over HTTP"
// and "a waiting worker holds it" — parse the JSON body, push one WebSocket frame, answer 201.
// No database, no validation. Run as its own process, like the manager. Prints `listening on URL`.
import http from 'node:http';
import { WebSocketServer } from 'ws';

let worker = null;
let seq = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString());
    const taskId = `task-${++seq}`;
    const msg = JSON.stringify({ type: 'tasks', tasks: [{ taskId, jobId: 'job-1', key: null, attempt: 1, leaseId: String(seq), spec: body.tasks[0] }] });
    if (worker && worker.readyState === worker.OPEN) worker.send(msg);
    const out = JSON.stringify({ id: 'job-1', accepted: 1 });
    res.writeHead(201, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
    res.end(out);
  });
});
const wss = new WebSocketServer({ server, path: '/v1/worker', perMessageDeflate: false });
wss.on('connection', (ws) => {
  worker = ws;
  ws.on('message', () => {});
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
