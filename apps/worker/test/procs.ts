/** What the worker's tests ask /proc about the processes they start. */
import { readFileSync } from 'node:fs';
import { expect, vi } from 'vitest';

/** The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, session, ...). */
export function procStat(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/**
 * Whether a process still exists. A zombie counts as gone: it no longer runs, and in some
 * containers PID 1 never reaps the orphans it inherits.
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
  try {
    const state = procStat(pid)[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false; // gone between the two checks
  }
}

export async function expectGone(pid: number): Promise<void> {
  await vi.waitFor(() => expect(alive(pid)).toBe(false), { timeout: 10_000, interval: 50 });
}

export const parentOf = (pid: number): number => Number(procStat(pid)[1]);
