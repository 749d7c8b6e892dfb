/**
 * Live progress of a job, shared by `pullman submit --wait`, `pullman job --watch` and the demo.
 * On a terminal: a cli-progress bar redrawn in place. Elsewhere (CI logs, files, pipes): one
 * plain line at the first update, then at most one every `intervalMs`, and one at the end.
 */
import cliProgress from 'cli-progress';
import { formatDuration, type Job } from '@pullman/protocol';

export interface ProgressOptions {
  /** Where to draw; default process.stdout. */
  stream?: NodeJS.WriteStream;
  /** Draw a bar (true) or print lines (false); default: whether `stream` is a terminal. */
  tty?: boolean;
  /** Least time between two plain lines; default 5 s. */
  intervalMs?: number;
  /** Clock, for rate and ETA. */
  now?: () => number;
}

export interface ProgressDisplay {
  update(job: Job): void;
  /** Draws the last state and releases the terminal (cursor, line). Safe to call twice. */
  stop(): void;
}

/** How far back the tasks/s rate looks: long enough to be steady, short enough to follow changes. */
const RATE_WINDOW_MS = 10_000;

export interface ProgressFigures {
  done: number;
  failed: number;
  cancelled: number;
  running: number;
  queued: number;
  total: number;
  /** Terminal tasks: done + failed + cancelled. */
  finished: number;
  percent: number;
  /** Terminal tasks per second over the recent window, or null before there is a window. */
  rate: number | null;
  /** Milliseconds left at the current rate, or null when unknown. */
  etaMs: number | null;
}

/** Turns successive job snapshots into counts, a rate and an ETA. */
export class ProgressMeter {
  readonly #samples: Array<{ t: number; finished: number }> = [];
  constructor(private readonly now: () => number = Date.now) {}

  measure(job: Job): ProgressFigures {
    const c = job.counts;
    const finished = c.succeeded + c.failed + c.cancelled;
    const t = this.now();
    this.#samples.push({ t, finished });
    while (this.#samples.length > 2 && t - this.#samples[1]!.t >= RATE_WINDOW_MS) this.#samples.shift();
    const first = this.#samples[0]!;
    const span = t - first.t;
    const rate = span >= 500 ? ((finished - first.finished) * 1000) / span : null;
    const left = c.total - finished;
    const etaMs = left === 0 ? 0 : rate && rate > 0 ? (left / rate) * 1000 : null;
    return {
      done: c.succeeded,
      failed: c.failed,
      cancelled: c.cancelled,
      running: c.running,
      queued: c.queued,
      total: c.total,
      finished,
      percent: c.total === 0 ? 100 : Math.floor((finished * 100) / c.total),
      rate,
      etaMs,
    };
  }
}

export const formatRate = (rate: number | null): string => (rate === null ? '-' : rate >= 100 ? rate.toFixed(0) : rate.toFixed(1));
export const formatEta = (etaMs: number | null): string => (etaMs === null ? '-' : etaMs === 0 ? '0s' : formatDuration(Math.max(1_000, Math.round(etaMs / 1_000) * 1_000)));

/** The counts as words, shared by the bar, the plain line and summaries. */
export function countsText(f: Pick<ProgressFigures, 'done' | 'failed' | 'cancelled' | 'running' | 'queued'>): string {
  const parts = [`${f.done} done`, `${f.failed} failed`, `${f.running} running`, `${f.queued} queued`];
  if (f.cancelled) parts.push(`${f.cancelled} cancelled`);
  return parts.join(', ');
}

/** The counts for the bar, where width is short: `done 120 failed 4 running 4 queued 70`. */
function compactCounts(f: ProgressFigures): string {
  return `done ${f.done} failed ${f.failed} running ${f.running} queued ${f.queued}${f.cancelled ? ` cancelled ${f.cancelled}` : ''}`;
}

/** One plain progress line, e.g. `job-3: 62% 124/200 | 120 done, 4 failed, ... | 38.1 tasks/s | ETA 2s`. */
export function progressLine(jobId: string, f: ProgressFigures): string {
  return `${jobId}: ${f.percent}% ${f.finished}/${f.total} | ${countsText(f)} | ${formatRate(f.rate)} tasks/s | ETA ${formatEta(f.etaMs)}`;
}

export function createProgress(options: ProgressOptions = {}): ProgressDisplay {
  const stream = options.stream ?? process.stdout;
  const tty = options.tty ?? Boolean(stream.isTTY);
  const meter = new ProgressMeter(options.now);
  return tty ? new BarDisplay(stream, meter) : new LineDisplay(stream, meter, options.intervalMs ?? 5_000, options.now ?? Date.now);
}

class BarDisplay implements ProgressDisplay {
  readonly #bar: cliProgress.SingleBar;
  #started = false;
  #stopped = false;

  constructor(stream: NodeJS.WriteStream, private readonly meter: ProgressMeter) {
    this.#bar = new cliProgress.SingleBar({
      stream,
      // Fits 80 columns: the bar takes what the counts leave (the job id is printed above it).
      format: '{bar} {percentage}% | {counts} | {rate}/s | ETA {etaText}',
      barCompleteChar: '\u2588',
      barIncompleteChar: '\u2591',
      barsize: Math.max(10, Math.min(40, (stream.columns || 80) - 66)),
      hideCursor: true,
      clearOnComplete: false,
      linewrap: false,
      fps: 10,
    });
  }

  update(job: Job): void {
    if (this.#stopped) return;
    const f = this.meter.measure(job);
    const payload = { counts: compactCounts(f), rate: formatRate(f.rate), etaText: formatEta(f.etaMs) };
    if (!this.#started) {
      this.#started = true;
      this.#bar.start(f.total, f.finished, payload);
    } else {
      this.#bar.setTotal(f.total); // an open job can grow
      this.#bar.update(f.finished, payload);
    }
  }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#started) this.#bar.stop();
  }
}

class LineDisplay implements ProgressDisplay {
  #last: { jobId: string; figures: ProgressFigures } | null = null;
  #printedAt = -Infinity;
  #printedLine = '';
  #stopped = false;

  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly meter: ProgressMeter,
    private readonly intervalMs: number,
    private readonly now: () => number,
  ) {}

  update(job: Job): void {
    if (this.#stopped) return;
    this.#last = { jobId: job.id, figures: this.meter.measure(job) };
    if (this.now() - this.#printedAt >= this.intervalMs) this.#print();
  }

  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#print();
  }

  #print(): void {
    if (!this.#last) return;
    const line = progressLine(this.#last.jobId, this.#last.figures);
    this.#printedAt = this.now();
    if (line === this.#printedLine) return; // nothing moved: say nothing
    this.#printedLine = line;
    this.stream.write(`${line}\n`);
  }
}
