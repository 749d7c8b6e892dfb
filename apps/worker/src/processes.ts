/**
 * Task process groups seen from outside: how the worker signals one, and how it recognises a
 * process as one of its tasks (by the environment every task gets: executor.ts) when it has
 * no child handle for it: after a crash of an earlier worker process, or of the spawn helper.
 */
import { readdir, readFile } from 'node:fs/promises';

/** Signals a task's whole process group (the task leads it: setsid). A group already gone is no error. */
export function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

/** True if the environment of `pid` holds every one of `entries` ("NAME=value"); guards against pid reuse. */
export async function environHas(pid: number, entries: readonly string[]): Promise<boolean> {
  const env = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
  if (!env) return false;
  const vars = new Set(env.split('\0'));
  return entries.every((e) => vars.has(e));
}

/** SIGKILLs every process whose environment holds all of `entries`, with its group. Reads all of /proc: for rare paths only. */
export async function killByEnvironment(entries: readonly string[]): Promise<void> {
  const pids = (await readdir('/proc').catch(() => [] as string[])).filter((n) => /^\d+$/.test(n)).map(Number);
  await Promise.all(pids.map(async (pid) => {
    if (!(await environHas(pid, entries))) return;
    killGroup(pid, 'SIGKILL');
    try {
      process.kill(pid, 'SIGKILL'); // not a group leader yet (killed before its setsid)
    } catch {
      // gone
    }
  }));
}
