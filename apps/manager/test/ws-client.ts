/**
 * A minimal worker-channel client for tests: speaks the real protocol over a real socket and
 * lets a test await the next message of a given type.
 */
import WebSocket from 'ws';
import { PROTOCOL_VERSION, type ExecutionReport, type HelloMessage, type ManagerMessage, type WorkerMessage } from '@pullman/protocol';

type Of<T extends ManagerMessage['type']> = Extract<ManagerMessage, { type: T }>;

export class TestWorker {
  readonly received: ManagerMessage[] = [];
  private waiters: Array<{ type: string; resolve: (m: ManagerMessage) => void }> = [];
  closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString()) as ManagerMessage;
      const i = this.waiters.findIndex((w) => w.type === msg.type);
      if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(msg);
      else this.received.push(msg);
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static async connect(url: string, token: string): Promise<TestWorker> {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/worker`, { headers: { authorization: `Bearer ${token}` } });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    });
    return new TestWorker(ws);
  }

  send(msg: WorkerMessage | Record<string, unknown>): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** Resolves with the next message of `type` (already received or future). */
  next<T extends ManagerMessage['type']>(type: T): Promise<Of<T>> {
    const i = this.received.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(this.received.splice(i, 1)[0] as Of<T>);
    return new Promise((resolve) => this.waiters.push({ type, resolve: resolve as (m: ManagerMessage) => void }));
  }

  async hello(overrides: Partial<HelloMessage> = {}): Promise<Of<'welcome'>> {
    this.send({ type: 'hello', protocol: PROTOCOL_VERSION, name: 'test-worker', hostname: 'localhost', slots: 4, labels: [], version: '0.1.0', vm: null, running: [], ...overrides });
    return this.next('welcome');
  }

  async result(taskId: string, leaseId: string, report: Partial<ExecutionReport> = {}): Promise<Of<'ack'>> {
    this.send({ type: 'result', taskId, leaseId, report: { ...okReport, ...report } });
    return this.next('ack');
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close();
    return this.closed;
  }
}

export const okReport: ExecutionReport = {
  exitCode: 0,
  signal: null,
  timedOut: false,
  cancelled: false,
  durationMs: 12,
  stdoutTail: 'out\n',
  stderrTail: '',
  output: null,
  error: null,
};
