/**
 * Copies the write-ahead log back into the database file from a thread of its own.
 *
 * Why: by default SQLite checkpoints inside the commit that fills the WAL past 1,000 pages, on
 * the committing thread. On the manager that is the event loop: measured here, the commit that
 * checkpoints took 2.5-4 ms (the idle-latency p99) and checkpoints cost ~7% of dispatch CPU.
 * A PASSIVE checkpoint on a second connection runs alongside the manager's writes (WAL lets
 * writers append while a checkpointer copies) and uses the machine's other core.
 *
 * The main connection keeps SQLite's own checkpoint as a backstop at a larger size
 * (BACKSTOP_PAGES): under writes that never pause the log is never fully copied at the moment
 * a write begins, so it never restarts from the top; the backstop's checkpoint then finds almost
 * every page already copied, finishes quickly, and lets the log restart.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** Pages (4 KiB) the WAL may reach before the main connection checkpoints it itself. */
export const BACKSTOP_PAGES = 10_000;

/** How often the thread checkpoints; a checkpoint with nothing to copy costs microseconds. */
const INTERVAL_MS = 100;

/** How long close() waits for the thread to close its connection. */
const STOP_TIMEOUT_MS = 5_000;

// Slots of the shared Int32Array.
const STOP = 0;
const STOPPED = 1;

// Plain CommonJS, run with `eval`: no file to find next to this module, whether it runs from
// dist/ or from TypeScript sources under a test runner. The thread sleeps in Atomics.wait so
// that a stop request wakes it at once; errors are reported once each, then retried.
const THREAD_SOURCE = `
const { workerData, parentPort } = require('node:worker_threads');
const state = new Int32Array(workerData.state);
let db = null;
let lastError = '';
try {
  const Database = require(workerData.driver);
  db = new Database(workerData.path, { fileMustExist: true });
  db.pragma('busy_timeout = 1000');
  while (Atomics.load(state, ${STOP}) === 0) {
    Atomics.wait(state, ${STOP}, 0, workerData.intervalMs);
    if (Atomics.load(state, ${STOP}) !== 0) break;
    try {
      db.pragma('wal_checkpoint(PASSIVE)');
      lastError = '';
    } catch (err) {
      if (String(err) !== lastError) parentPort.postMessage({ error: String(err) });
      lastError = String(err);
    }
  }
} catch (err) {
  parentPort.postMessage({ error: String(err) });
} finally {
  try { if (db) db.close(); } catch {}
  Atomics.store(state, ${STOPPED}, 1);
  Atomics.notify(state, ${STOPPED});
}
`;

export interface CheckpointerEvents {
  /** A checkpoint failed (it is retried); the data is not at risk. */
  onError?: ((message: string) => void) | undefined;
  /** The thread ended without being asked to: its owner should checkpoint inline again. */
  onExit?: (() => void) | undefined;
}

export class BackgroundCheckpointer {
  private readonly state = new Int32Array(new SharedArrayBuffer(8));
  private readonly worker: Worker;
  private stopped = false;
  private exited = false;

  constructor(path: string, events: CheckpointerEvents = {}) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(THREAD_SOURCE, { eval: true, workerData: { path, driver, state: this.state.buffer, intervalMs: INTERVAL_MS } });
    this.worker.on('message', (m: { error?: string }) => m.error && events.onError?.(m.error));
    this.worker.on('error', (err) => events.onError?.(String(err)));
    this.worker.on('exit', () => {
      this.exited = true;
      if (!this.stopped) events.onExit?.();
    });
    // The thread never keeps the process alive; close() stops it properly.
    this.worker.unref();
  }

  /**
   * Stops the thread and waits (synchronously, up to 5 s) until its connection is closed, so
   * the caller can then truncate the WAL or delete the files. A thread that already ended is
   * not waited for.
   */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.exited) return;
    Atomics.store(this.state, STOP, 1);
    Atomics.notify(this.state, STOP);
    Atomics.wait(this.state, STOPPED, 0, STOP_TIMEOUT_MS);
  }
}
