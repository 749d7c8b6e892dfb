import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { MAX_MESSAGE_BYTES, MAX_RESULTS_PER_MESSAGE, WorkerMessage, compileChecker, type ResultItem } from '@pullman/protocol';
import { ReportSender, packResults } from '../src/sender.js';

const check = compileChecker(WorkerMessage, 'PROTOCOL_ERROR');
const report = { exitCode: 0, signal: null, timedOut: false, cancelled: false, durationMs: 1, stdoutTail: '', stderrTail: '', output: null, error: null };
const item = (n: number, stdoutTail = ''): ResultItem => ({ taskId: `task-${n}`, leaseId: `lease-${n}`, report: { ...report, stdoutTail } });

/** Parses and validates every frame, and returns the entries of each. */
function entries(frames: string[]): ResultItem[][] {
  return frames.map((f) => {
    const msg = check.parse(JSON.parse(f));
    if (msg.type !== 'results') throw new Error(`not a results frame: ${msg.type}`);
    return msg.results;
  });
}

describe('packResults', () => {
  it('puts results in one valid results frame, in order', () => {
    const items = [1, 2, 3].map((n) => item(n));
    expect(entries(packResults(items))).toEqual([items]);
    expect(packResults([])).toEqual([]);
  });

  it('splits at MAX_RESULTS_PER_MESSAGE entries', () => {
    const items = Array.from({ length: MAX_RESULTS_PER_MESSAGE * 2 + 1 }, (_, n) => item(n));
    const packed = entries(packResults(items));
    expect(packed.map((e) => e.length)).toEqual([MAX_RESULTS_PER_MESSAGE, MAX_RESULTS_PER_MESSAGE, 1]);
    expect(packed.flat()).toEqual(items);
  });

  it('keeps every frame within the byte limit, counting UTF-8 bytes, not characters', () => {
    // 80 results of 30,000 'é' (60,000 bytes in UTF-8): 4.6 MiB in all, but only 2.3 M characters.
    const items = Array.from({ length: 80 }, (_, n) => item(n, 'é'.repeat(30_000)));
    const frames = packResults(items);
    expect(frames.length).toBe(2);
    for (const f of frames) expect(Buffer.byteLength(f)).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
    expect(entries(frames).flat()).toEqual(items);
    // A tight limit: each frame holds as many as fit, and no fewer.
    const small = packResults(items.slice(0, 5), 150_000);
    expect(small.map((f) => Buffer.byteLength(f) <= 150_000)).toEqual([true, true, true]);
    expect(entries(small).map((e) => e.length)).toEqual([2, 2, 1]);
  });

  it('gives a result larger than the limit a frame of its own rather than dropping it', () => {
    const items = [item(1), item(2, 'x'.repeat(5_000)), item(3)];
    expect(entries(packResults(items, 2_000)).map((e) => e.map((r) => r.taskId))).toEqual([['task-1'], ['task-2'], ['task-3']]);
  });
});

describe('ReportSender over a real WebSocket', () => {
  let server: WebSocketServer;
  let client: WebSocket;
  let frames: string[];

  beforeEach(async () => {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(server, 'listening');
    frames = [];
    server.on('connection', (ws) => ws.on('message', (data) => frames.push(data.toString())));
    client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    await once(client, 'open');
  });
  afterEach(async () => {
    client.terminate();
    await new Promise<void>((r) => server.close(() => r()));
  });

  /** Waits until the server has `n` frames (the sender flushes at the end of the turn). */
  const received = async (n: number): Promise<unknown[]> => {
    while (frames.length < n) await new Promise((r) => setTimeout(r, 5));
    return frames.map((f) => JSON.parse(f) as unknown);
  };

  it('on protocol 2, sends one turn\'s results in one results frame and its credits in one pull', async () => {
    const sender = new ReportSender(() => client);
    sender.protocol = 2;
    sender.result(item(1));
    sender.pull(1);
    sender.result(item(2));
    sender.pull(2);
    expect(await received(2)).toEqual([
      { type: 'results', results: [item(1), item(2)] },
      { type: 'pull', credits: 3 },
    ]);
    // The next turn is a frame of its own.
    sender.result(item(3));
    expect((await received(3))[2]).toEqual({ type: 'results', results: [item(3)] });
  });

  it('on protocol 1, sends one result frame per result, then the pull', async () => {
    const sender = new ReportSender(() => client);
    sender.result(item(1));
    sender.result(item(2));
    sender.pull(2);
    expect(await received(3)).toEqual([
      { type: 'result', ...item(1) },
      { type: 'result', ...item(2) },
      { type: 'pull', credits: 2 },
    ]);
  });

  it('sends nothing queued before a reset, or while there is no open socket', async () => {
    let socket: WebSocket | null = client;
    const sender = new ReportSender(() => socket);
    sender.protocol = 2;
    sender.result(item(1));
    sender.pull(1);
    sender.reset(); // the session ended: these are re-sent from the outbox after the next welcome
    socket = null;
    sender.result(item(2));
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    socket = client;
    sender.pull(4);
    expect(await received(1)).toEqual([{ type: 'pull', credits: 4 }]);
  });
});
