/**
 * The durable result outbox. A finished result is written and fsynced here while it is sent
 * (the daemon does not wait for the write; see startTask there), and deleted only when the
 * manager acks it, so neither a manager outage nor a worker crash loses finished work. One file
 * per result: an ack deletes exactly one file, and a torn write (crash mid-write) can only ever
 * be a temp file, which is ignored.
 */
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutionReport } from '@pullman/protocol';
import { syncDir, writeSynced } from './durable.js';

export interface PendingResult {
  taskId: string;
  leaseId: string;
  report: ExecutionReport;
}

export class Outbox {
  readonly dir: string;

  constructor(workDir: string) {
    this.dir = join(workDir, 'outbox');
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  private file(taskId: string, leaseId: string): string {
    return join(this.dir, `${taskId}.${leaseId}.json`);
  }

  /**
   * Writes a result durably: temp file, fsync, rename, fsync the directory. Asynchronous: the
   * fsyncs run on libuv's thread pool. They used to block the event loop (10% of the worker's
   * time with two slots running no-op tasks), stalling the other slots' spawns and exits.
   */
  async put(result: PendingResult): Promise<void> {
    const final = this.file(result.taskId, result.leaseId);
    const tmp = `${final}.tmp`;
    await writeSynced(tmp, JSON.stringify(result), 'w');
    await rename(tmp, final);
    await syncDir(this.dir);
  }

  /** Forgets a result the manager acknowledged (recorded or stale). */
  async remove(taskId: string, leaseId: string): Promise<void> {
    await rm(this.file(taskId, leaseId), { force: true });
  }

  /** Every result still waiting for an ack, oldest name first. Leftover temp files are removed. */
  async pending(): Promise<PendingResult[]> {
    const out: PendingResult[] = [];
    for (const name of (await readdir(this.dir)).sort()) {
      const path = join(this.dir, name);
      if (name.endsWith('.tmp')) {
        await rm(path, { force: true });
        continue;
      }
      if (!name.endsWith('.json')) continue;
      try {
        out.push(JSON.parse(await readFile(path, 'utf8')) as PendingResult);
      } catch {
        // Unreadable despite the rename protocol (disk trouble): keep it for a human, skip it.
        await rename(path, `${path}.corrupt`).catch(() => {});
      }
    }
    return out;
  }
}
