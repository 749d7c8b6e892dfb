/**
 * Keeps the benchmark suite working: runs `bench/run.ts --smoke` (tiny sizes, every
 * measurement) as a child process and checks its result JSON is well formed. Benchmarks are
 * not tests: no speed thresholds here, only structure and positive finite numbers.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'pullman-bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MEASUREMENTS = ['dispatch', 'latency', 'submit', 'connections', 'local', 'memory', 'durability'];

describe('npm run bench -- --smoke', () => {
  it('typechecks (bench/ is not part of any workspace build)', async () => {
    const proc = spawn(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'bench')], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = (await once(proc, 'exit')) as [number | null];
    expect(code, out).toBe(0);
  });

  it('runs every measurement and writes a well-formed result', async () => {
    const out = join(dir, 'result.json');
    const proc = spawn(process.execPath, ['--import', 'tsx', join(root, 'bench/run.ts'), '--smoke', '--out', out], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 170_000);
    const [code] = (await once(proc, 'exit')) as [number | null];
    clearTimeout(timer);
    expect(code, stderr).toBe(0);
    expect(stdout).toContain('| measurement | figure | value |');

    const report = JSON.parse(readFileSync(out, 'utf8')) as {
      kind: string;
      mode: string;
      machine: { nproc: number; node: string; cpuModel: string; loadAverageBefore: number[] };
      measurements: Array<{ id: string; variants: Array<{ id: string; runs: Array<Record<string, unknown>> }> }>;
      rows: Array<{ measurement: string; unit: string; value: number; referenceValue: number | null; ratio: number | null; met: boolean | null; target: string }>;
    };
    expect(report.kind).toBe('pullman-bench');
    expect(report.mode).toBe('smoke');
    expect(report.machine.nproc).toBeGreaterThan(0);
    expect(report.machine.node).toBe(process.version);
    expect(report.measurements.map((m) => m.id)).toEqual(MEASUREMENTS);
    for (const m of report.measurements) {
      for (const v of m.variants) {
        expect(v.runs, v.id).toHaveLength(1);
        for (const [k, x] of Object.entries(v.runs[0]!)) {
          expect(typeof x === 'number' && Number.isFinite(x) && x >= 0, `${v.id}.${k} = ${String(x)}`).toBe(true);
        }
      }
    }
    expect(report.rows.length).toBeGreaterThanOrEqual(MEASUREMENTS.length);
    for (const r of report.rows) {
      // A CPU share over a one-second smoke window can honestly be 0; rates and sizes cannot.
      const min = r.unit.startsWith('%') ? 0 : Number.MIN_VALUE;
      expect(Number.isFinite(r.value) && r.value >= min, `${r.measurement}: value ${r.value}`).toBe(true);
      if (r.referenceValue !== null) expect(Number.isFinite(r.referenceValue) && r.referenceValue > 0, `${r.measurement}: reference`).toBe(true);
      if (r.ratio !== null) expect(Number.isFinite(r.ratio) && r.ratio >= (r.unit.startsWith('%') ? 0 : Number.MIN_VALUE), `${r.measurement}: ratio`).toBe(true);
      expect([true, false, null]).toContain(r.met);
    }
  });
});
