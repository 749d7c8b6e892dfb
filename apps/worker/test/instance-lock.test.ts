/**
 * One worker per work dir: the lock is an abstract Unix socket named after a key kept in the
 * work dir, freed by the kernel however its holder dies (instance-lock.ts). Real sockets, files
 * and a real child process, no stand-ins.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KEY_FILE, WorkDirBusyError, lockName, lockWorkDir } from '../src/instance-lock.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const workDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'pullman-lock-'));
  dirs.push(d);
  return d;
};
const noWarning = (why: string) => {
  throw new Error(`unexpected: ${why}`);
};

describe('lockWorkDir', () => {
  it('refuses a second holder while the first lives, under any path to the dir, and is free once released', async () => {
    const dir = workDir();
    const first = await lockWorkDir(dir, noWarning);
    await expect(lockWorkDir(dir, noWarning)).rejects.toThrow(new WorkDirBusyError(`another pullman-worker is running with the work dir ${dir}; stop it first, or give this one a PULLMAN_WORK_DIR of its own`));
    const link = join(workDir(), 'link');
    symlinkSync(dir, link);
    await expect(lockWorkDir(link, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError);
    await expect(lockWorkDir(`${dir}/./`, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError);
    await first.release();
    const again = await lockWorkDir(dir, noWarning);
    await again.release();
  });

  it('goes to exactly one of several takers at once', async () => {
    const dir = workDir();
    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, () => lockWorkDir(dir, noWarning)));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(WorkDirBusyError);
    for (const o of outcomes) if (o.status === 'fulfilled') await o.value.release();
  });

  it('is free the moment a holder is killed with SIGKILL', async () => {
    const dir = workDir();
    const name = await lockName(dir);
    const holder = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(name)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await once(holder.stdout!, 'data');
    await expect(lockWorkDir(dir, noWarning)).rejects.toBeInstanceOf(WorkDirBusyError);
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const lock = await lockWorkDir(dir, noWarning);
    await lock.release();
  });

  it('names each work dir by a key of its own, made once, readable by its owner only', async () => {
    const [a, b] = [workDir(), workDir()];
    // Workers starting together on a new dir agree on one key.
    const names = await Promise.all(Array.from({ length: 5 }, () => lockName(a)));
    expect(new Set(names).size).toBe(1);
    expect(names[0]).toMatch(/^\0pullman-worker:[0-9a-f]{32}$/);
    expect(await lockName(b)).not.toBe(names[0]);
    expect(statSync(join(a, KEY_FILE)).mode & 0o777).toBe(0o600);
    expect(readdirSync(a)).toEqual([KEY_FILE]); // no temporary file left
  });

  it('runs without a lock, saying why, where none can be made', async () => {
    const warnings: string[] = [];
    const lock = await lockWorkDir(join(workDir(), 'no-such-dir'), (why) => warnings.push(why));
    await lock.release();
    const edited = workDir();
    writeFileSync(join(edited, KEY_FILE), 'not a key\n');
    const other = await lockWorkDir(edited, (why) => warnings.push(why));
    await other.release();
    expect(warnings).toEqual([expect.stringMatching(/no-such-dir: ENOENT$/), expect.stringContaining('does not hold a lock key (32 hex digits)')]);
  });
});
