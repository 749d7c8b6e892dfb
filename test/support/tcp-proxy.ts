/**
 * A TCP proxy on loopback between workers and the manager, for network faults:
 *  - `up`: bytes flow both ways;
 *  - `drop`: every connection is reset, and new ones are reset as they arrive (a link that
 *    refuses: the peers learn at once);
 *  - `blackhole`: nothing flows and nothing is refused (a partition: the peers learn nothing).
 *    Bytes sent meanwhile are held, as TCP would keep retransmitting them; a side that closed
 *    meanwhile is closed on the other side when the link heals, as a retransmission would then
 *    be answered with a reset.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';

export type LinkMode = 'up' | 'drop' | 'blackhole';

interface Pair {
  client: Socket;
  upstream: Socket | null;
  toUpstream: Buffer[];
  toClient: Buffer[];
  clientEnded: boolean;
  upstreamEnded: boolean;
}

export class TcpProxy {
  private server: Server | null = null;
  private readonly pairs = new Set<Pair>();
  private mode: LinkMode = 'up';
  port = 0;
  /** Connections accepted over the proxy's life. */
  accepted = 0;

  constructor(
    private readonly targetHost: string,
    private targetPort: number,
  ) {}

  /** Points the proxy at another upstream port (a restarted manager). */
  retarget(port: number): void {
    this.targetPort = port;
  }

  async start(): Promise<string> {
    this.server = createServer((client) => this.accept(client));
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.port = (this.server.address() as { port: number }).port;
    return `127.0.0.1:${this.port}`;
  }

  get current(): LinkMode {
    return this.mode;
  }

  setMode(mode: LinkMode): void {
    const was = this.mode;
    this.mode = mode;
    if (mode === 'drop') for (const p of [...this.pairs]) this.kill(p);
    if (mode === 'up' && was === 'blackhole') for (const p of [...this.pairs]) this.heal(p);
  }

  async stop(): Promise<void> {
    for (const p of [...this.pairs]) this.kill(p);
    if (this.server) await new Promise<void>((r) => this.server!.close(() => r()));
  }

  private accept(client: Socket): void {
    this.accepted++;
    if (this.mode === 'drop') {
      client.resetAndDestroy();
      return;
    }
    const pair: Pair = { client, upstream: null, toUpstream: [], toClient: [], clientEnded: false, upstreamEnded: false };
    this.pairs.add(pair);
    client.on('data', (d: Buffer) => {
      if (this.mode === 'up' && pair.upstream) pair.upstream.write(d);
      else pair.toUpstream.push(d);
    });
    client.on('error', () => {});
    client.on('close', () => {
      pair.clientEnded = true;
      if (this.mode !== 'blackhole') this.kill(pair);
    });
    if (this.mode === 'up') this.dial(pair);
  }

  private dial(pair: Pair): void {
    const upstream = connect(this.targetPort, this.targetHost);
    pair.upstream = upstream;
    upstream.on('connect', () => {
      for (const d of pair.toUpstream.splice(0)) upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (this.mode === 'up') pair.client.write(d);
      else pair.toClient.push(d);
    });
    upstream.on('error', () => {});
    upstream.on('close', () => {
      pair.upstreamEnded = true;
      if (this.mode !== 'blackhole') this.kill(pair);
    });
  }

  private heal(pair: Pair): void {
    if (pair.clientEnded || pair.upstreamEnded) return this.kill(pair);
    if (!pair.upstream) return this.dial(pair);
    for (const d of pair.toUpstream.splice(0)) pair.upstream.write(d);
    for (const d of pair.toClient.splice(0)) pair.client.write(d);
  }

  private kill(pair: Pair): void {
    this.pairs.delete(pair);
    if (!pair.client.destroyed) pair.client.resetAndDestroy();
    if (pair.upstream && !pair.upstream.destroyed) pair.upstream.resetAndDestroy();
  }
}
