/**
 * One worker daemon per work dir.
 *
 * Why: two daemons on one work dir (a second one started by hand while systemd runs the first,
 * say) read one worker id, so the manager replaces their sessions in turn (close 4409); each
 * re-sends the other's results from the shared outbox and takes the other's running records for
 * orphans of a crash. Refusing the second one at its start is the only safe answer.
 *
 * The lock is a Unix socket in Linux's abstract namespace, named after the work dir's device
 * and inode (so every spelling of the path, symlinks included, names one lock). Binding it is
 * atomic, and the kernel frees it the moment its process dies, however it dies: no file is left
 * behind to judge stale. A socket file in the work dir was tried first and lost: replacing a
 * dead holder's file (connect, unlink, listen) let two workers started together both win, and
 * a holder under another uid looked dead (EACCES) and was replaced. Its scope is one host (one
 * network namespace): two hosts sharing a work dir over NFS are not stopped by it.
 */
import { createServer, type Server } from 'node:net';
import { stat } from 'node:fs/promises';

/** Another live worker holds this work dir. */
export class WorkDirBusyError extends Error {
  override readonly name = 'WorkDirBusyError';
}

export interface WorkDirLock {
  /** Stops listening (a normal exit); the kernel does the same at any other. */
  release(): Promise<void>;
}

/** The lock's name for a work dir: its identity on this host, not its path. */
export async function lockName(workDir: string): Promise<string> {
  const { dev, ino } = await stat(workDir);
  return `\0pullman-worker:${dev}:${ino}`;
}

/**
 * Takes the work dir's lock, or throws WorkDirBusyError naming the work dir. Where no lock can
 * be made (no such dir yet, a system without abstract sockets), `onUnavailable` hears why and
 * the worker runs without one: a work dir it cannot use stops it later with its own error.
 */
export async function lockWorkDir(workDir: string, onUnavailable: (why: string) => void): Promise<WorkDirLock> {
  let name: string;
  try {
    name = await lockName(workDir);
  } catch (err) {
    onUnavailable(`${workDir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    return { release: async () => {} };
  }
  // Nobody connects: holding the name is the whole point, so a connection is closed at once.
  const server = createServer((socket) => socket.destroy());
  try {
    await listen(server, name);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') {
      throw new WorkDirBusyError(`another pullman-worker is running with the work dir ${workDir}; stop it first, or give this one a PULLMAN_WORK_DIR of its own`);
    }
    onUnavailable(`an abstract socket for ${workDir}: ${code ?? String(err)}`);
    return { release: async () => {} };
  }
  server.unref(); // the lock never keeps the process alive
  return { release: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

function listen(server: Server, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(name, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
