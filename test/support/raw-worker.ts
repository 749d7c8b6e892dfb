/**
 * A hand-written worker-channel client: speaks the protocol message by message, so tests can
 * misbehave on purpose (go silent, report on someone else's lease, send garbage).
 */
import { once } from 'node:events';
import WebSocket from 'ws';

export interface RawMessage {
  type: string;
  [k: string]: unknown;
}

export class RawWorker {
  readonly messages: RawMessage[] = [];
  closed: { code: number; reason: string } | null = null;
  private waiters: Array<() => void> = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      try {
        this.messages.push(JSON.parse(data.toString()) as RawMessage);
      } catch {
        this.messages.push({ type: '<unparseable>' });
      }
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
    ws.on('error', () => {});
  }

  /** Opens a session; resolves once the socket is open (rejects on an HTTP refusal). */
  static async connect(url: string, token: string, opts: { ca?: Buffer } = {}): Promise<RawWorker> {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/worker`, { headers: { authorization: `Bearer ${token}` }, ...(opts.ca ? { ca: opts.ca } : {}) });
    const refused = new Promise<never>((_, reject) => {
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`upgrade refused: HTTP ${res.statusCode}`), { status: res.statusCode })));
      ws.once('error', reject);
    });
    await Promise.race([once(ws, 'open'), refused]);
    return new RawWorker(ws);
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** hello, then waits for welcome. */
  async hello(name: string, extra: Record<string, unknown> = {}): Promise<RawMessage> {
    this.send({ type: 'hello', protocol: 1, name, hostname: name, slots: 4, labels: [], version: 'raw', vm: null, running: [], ...extra });
    return this.next((m) => m.type === 'welcome', 'welcome');
  }

  /** The first message matching `pred` (already received or later). */
  async next(pred: (m: RawMessage) => boolean, what: string, timeoutMs = 30_000): Promise<RawMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find(pred);
      if (found) return found;
      if (this.closed) throw new Error(`socket closed (${this.closed.code}) before ${what}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(0, deadline - Date.now()));
        this.waiters.push(() => (clearTimeout(t), r()));
      });
    }
  }

  /** Resolves when the manager closed the socket; returns the close code. */
  async whenClosed(timeoutMs = 30_000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('timed out waiting for the socket to close');
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(0, deadline - Date.now()));
        this.waiters.push(() => (clearTimeout(t), r()));
      });
    }
    return this.closed;
  }

  /** Every task delivered so far. */
  tasks(): Array<{ taskId: string; leaseId: string; attempt: number }> {
    return this.messages.filter((m) => m.type === 'tasks').flatMap((m) => m.tasks as Array<{ taskId: string; leaseId: string; attempt: number }>);
  }

  close(): void {
    this.ws.terminate();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}
