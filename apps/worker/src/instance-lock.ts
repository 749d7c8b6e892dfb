/**
 * One worker daemon per work dir.
 *
 * Why: two daemons on one work dir (a second one started by hand while systemd runs the first,
 * say) read one worker id, so the manager replaces their sessions in turn (close 4409); each
 * re-sends the other's results from the shared outbox and takes the other's running records for
 * orphans of a crash. Refusing the second one at its start is the only safe answer.
 *
 * The lock is a Unix socket listening in the work dir. The kernel closes it when its process
 * dies, however it dies (kill -9 included), which a pid file cannot promise (a dead worker's
 * pid can belong to anything later). A socket file left behind by a dead worker refuses
 * connections and is replaced. It also holds across containers that share the directory,
 * whose pids mean nothing to each other.
 */
import { createConnection, createServer, type Server } from 'node:net';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';

/** The lock's file name in the work dir. */
export const LOCK_NAME = 'worker.sock';

/** Linux's limit for a socket path (sun_path is 108 bytes with its NUL); a longer one is cut. */
const MAX_SOCKET_PATH = 107;

/** How long a connection to the lock may take before its holder counts as alive anyway. */
const ANSWER_TIMEOUT_MS = 2_000;

/** Another live worker holds this work dir. */
export class WorkDirBusyError extends Error {
  override readonly name = 'WorkDirBusyError';
}

export interface WorkDirLock {
  /** Stops listening and removes the socket file (a normal exit). */
  release(): Promise<void>;
}

/**
 * Takes the work dir's lock, or throws WorkDirBusyError naming the work dir. Where no lock can
 * be made (a path too long for a socket, a directory it cannot write), `onUnavailable` hears why
 * and the worker runs without one: a work dir it cannot write stops it later with its own error,
 * and a long path is no reason to refuse to run.
 */
export async function lockWorkDir(workDir: string, onUnavailable: (why: string) => void): Promise<WorkDirLock> {
  const path = join(workDir, LOCK_NAME);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    onUnavailable(`the path ${path} is longer than a Unix socket's ${MAX_SOCKET_PATH} bytes`);
    return { release: async () => {} };
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    const server = createServer((socket) => socket.destroy());
    try {
      await listen(server, path);
      server.unref(); // the lock never keeps the process alive
      return { release: () => new Promise<void>((resolve) => server.close(() => resolve())) };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EADDRINUSE') {
        onUnavailable(`${path}: ${code ?? String(err)}`);
        return { release: async () => {} };
      }
      // Taken twice: a worker started alongside this one won the race for a stale file.
      if (attempt > 0 || (await answers(path))) {
        throw new WorkDirBusyError(`another pullman-worker is running with the work dir ${workDir} (it holds ${path}); stop it first, or give this one a PULLMAN_WORK_DIR of its own`);
      }
      await unlink(path).catch(() => {}); // left by a worker that died without closing it
    }
  }
  throw new Error('unreachable');
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Whether a live process listens on `path`. A holder too slow to answer counts as alive. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(path);
    const done = (alive: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(alive);
    };
    const timer = setTimeout(() => done(true), ANSWER_TIMEOUT_MS);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
