/**
 * `npm run demo` without its build step: the demo script end to end, as CI runs it (no TTY).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { DEMO_JS, ROOT } from './harness.js';

describe('the demo', () => {
  it('runs 200 Monte Carlo tasks on two workers, prints π within 0.2 and a summary, and exits 0', async () => {
    const proc = spawn(process.execPath, [DEMO_JS], { cwd: ROOT, env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const [code] = (await once(proc, 'close')) as [number | null];
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });

    const pi = /^π ≈ (\d+\.\d+)/m.exec(stdout);
    expect(pi, stdout).not.toBeNull();
    expect(Math.abs(Number(pi![1]) - 3.14159)).toBeLessThan(0.2);
    expect(stdout).toMatch(/^tasks +200 \(200 succeeded, 0 failed\)$/m);
    expect(stdout).toMatch(/^wall time +\d+\.\d+s$/m);
    expect(stdout).toMatch(/^rate +\d+\.\d+ tasks\/s$/m);
    // Not a terminal: plain progress lines, ending complete.
    expect(stdout).toMatch(/^job-1: 100% 200\/200 \| 200 done, 0 failed, 0 running, 0 queued/m);
    expect(stdout).toMatch(/stopping the workers and the manager\.\.\. done\n$/);
  });
});
