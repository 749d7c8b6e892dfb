/**
 * A scripted manager for worker tests: a bare WebSocket server on loopback that hands every
 * message, parsed, to the test, which answers as its scenario needs. The real worker connects to
 * it as to a manager; the token is not checked.
 */
import { once } from 'node:events';
import { WebSocketServer, type WebSocket } from 'ws';

export type Frame = Record<string, unknown>;

export interface ScriptedManager {
  url: string;
  workerToken: string;
  /** Connections accepted so far (one per worker session). */
  readonly sessions: number;
  /** The connections open now. */
  clients(): WebSocket[];
}

const servers: WebSocketServer[] = [];

export async function startScriptedManager(onMessage: (ws: WebSocket, msg: Frame) => void): Promise<ScriptedManager> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  servers.push(server);
  await once(server, 'listening');
  let sessions = 0;
  server.on('connection', (ws: WebSocket) => {
    sessions++;
    ws.on('message', (data) => onMessage(ws, JSON.parse(data.toString()) as Frame));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    workerToken: 'scripted-worker-token-0123456789',
    get sessions() {
      return sessions;
    },
    clients: () => [...server.clients],
  };
}

/** Closes every scripted manager started so far (for afterEach). */
export async function closeScriptedManagers(): Promise<void> {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
}

/** A welcome frame; the timings default to ones that stay out of a short test's way. */
export const welcome = (protocol: number, o: { heartbeatIntervalMs?: number; leaseTtlMs?: number } = {}): string =>
  JSON.stringify({ type: 'welcome', protocol, workerId: 'w-scripted', sessionId: 's-1', heartbeatIntervalMs: o.heartbeatIntervalMs ?? 60_000, leaseTtlMs: o.leaseTtlMs ?? 600_000, resumed: [], lost: [] });

/** A tasks frame with one `true` task. */
export const oneTask = (taskId: string, leaseId: string): string =>
  JSON.stringify({ type: 'tasks', tasks: [{ taskId, jobId: 'job-1', key: null, attempt: 1, leaseId, spec: { command: ['true'] } }] });
