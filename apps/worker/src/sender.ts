/**
 * What the worker sends most: results and credits. Both are queued and leave together at the end
 * of the event-loop turn, in as few frames as the session's protocol allows: on protocol 2, every
 * result finished in the turn goes in one `results` frame (split only at MAX_RESULTS_PER_MESSAGE
 * or MAX_MESSAGE_BYTES), then one `pull` with the turn's credits; on protocol 1, one `result`
 * frame per result. The socket is corked, so it is one write either way.
 *
 * Why: receiving a frame costs the manager more than settling the result in it, and slots that
 * finish together (no-op tasks, the outbox re-sent after a reconnect) are common; one frame per
 * result halved what a 16-slot worker could push through (docs/benchmarks.md, results frame).
 * Waiting for the end of the turn (setImmediate, after the I/O callbacks) is what lets the
 * results of tasks whose exits were seen together meet; it adds no measurable latency.
 */
import type WebSocket from 'ws';
import { MAX_MESSAGE_BYTES, MAX_RESULTS_PER_MESSAGE, messageSince, sendFrames, type ResultItem } from '@pullman/protocol';

const HEAD = '{"type":"results","results":[';
const TAIL = ']}';

/**
 * Serialises results as `results` frames of at most `maxItems` entries and `maxBytes` bytes each.
 * A single result larger than `maxBytes` still gets a frame of its own rather than being dropped.
 * The worker's own limits keep that from happening: an output of at most 1 MiB and two tails of
 * 64 KiB, even with every tail character escaped six-fold, serialise to under 2 MiB.
 */
export function packResults(items: readonly ResultItem[], maxBytes = MAX_MESSAGE_BYTES, maxItems = MAX_RESULTS_PER_MESSAGE): string[] {
  const frames: string[] = [];
  let parts: string[] = [];
  let bytes = HEAD.length + TAIL.length;
  for (const { taskId, leaseId, report } of items) {
    const json = JSON.stringify({ taskId, leaseId, report });
    const size = Buffer.byteLength(json) + 1; // and its comma
    if (parts.length > 0 && (parts.length === maxItems || bytes + size > maxBytes)) {
      frames.push(HEAD + parts.join(',') + TAIL);
      parts = [];
      bytes = HEAD.length + TAIL.length;
    }
    parts.push(json);
    bytes += size;
  }
  if (parts.length > 0) frames.push(HEAD + parts.join(',') + TAIL);
  return frames;
}

export class ReportSender {
  /** The version agreed in welcome; until then, the oldest. */
  protocol = 1;
  private results: ResultItem[] = [];
  private credits = 0;
  private scheduled = false;

  /** `socket` is read at flush time: the current session's socket, or null between sessions. */
  constructor(private readonly socket: () => WebSocket | null) {}

  result(item: ResultItem): void {
    this.results.push(item);
    this.schedule();
  }

  pull(credits: number): void {
    this.credits += credits;
    this.schedule();
  }

  /**
   * Drops what is queued (the session ended). The daemon keeps its results (in the outbox and
   * in memory) and re-sends them after the next welcome, which also grants credits afresh.
   */
  reset(): void {
    this.results = [];
    this.credits = 0;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    const results = this.results;
    const credits = this.credits;
    this.reset();
    const ws = this.socket();
    if (!ws || ws.readyState !== ws.OPEN) return;
    const frames = this.protocol >= messageSince('results')
      ? packResults(results)
      : results.map((r) => JSON.stringify({ type: 'result', taskId: r.taskId, leaseId: r.leaseId, report: r.report }));
    if (credits > 0) frames.push(`{"type":"pull","credits":${credits}}`);
    sendFrames(ws, frames);
  }
}
