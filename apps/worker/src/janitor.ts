/**
 * Keeps the work dir from filling the disk on a long-lived VM: full logs and kept scratch
 * directories older than the retention are removed, at start and then hourly. The outbox,
 * the running records and the worker id are never touched.
 *
 * Why: every attempt leaves two log files (and a failed one its scratch dir); at 100,000 tasks
 * a day that is 200,000 files a day. The results already carry the last 64 KiB of each stream.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';

export const SWEPT_DIRS = ['logs', 'scratch'] as const;

/** Removes entries of the swept dirs last modified before `now - retentionMs`. Returns how many. */
export async function sweepWorkDir(workDir: string, retentionMs: number, now = Date.now(), skip: ReadonlySet<string> = new Set()): Promise<number> {
  const cutoff = now - retentionMs;
  let removed = 0;
  for (const dir of SWEPT_DIRS) {
    const path = join(workDir, dir);
    let names: string[];
    try {
      names = await readdir(path);
    } catch {
      continue; // not created yet
    }
    for (const name of names) {
      if (skip.has(name)) continue;
      const entry = join(path, name);
      try {
        if ((await stat(entry)).mtimeMs < cutoff) {
          await rm(entry, { recursive: true, force: true });
          removed++;
        }
      } catch {
        // gone meanwhile
      }
    }
  }
  return removed;
}

/** Sweeps now and every hour until stopped; `active()` names entries in use (running attempts). */
export function startJanitor(workDir: string, retentionMs: number, log: Logger, active: () => ReadonlySet<string>): () => void {
  if (retentionMs <= 0) return () => {};
  const sweep = () =>
    void sweepWorkDir(workDir, retentionMs, Date.now(), active()).then(
      (n) => n > 0 && log.info({ removed: n, retentionMs }, 'removed old logs and scratch dirs'),
      (err: unknown) => log.warn({ err: (err as Error).message }, 'work dir sweep failed'),
    );
  sweep();
  const timer = setInterval(sweep, 3_600_000);
  timer.unref();
  return () => clearInterval(timer);
}
