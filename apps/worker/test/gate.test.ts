import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseWorkerCommand, type WorkerConfig } from '../src/config.js';
import { createGate, GATE_EXIT_CODES, GateError, type GateContext } from '../src/gate.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
const timers: NodeJS.Timeout[] = [];
afterEach(() => {
  for (const t of timers.splice(0)) clearTimeout(t);
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function freshDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `pullman-gate-${name}-`));
  dirs.push(dir);
  return dir;
}

function config(over: Partial<WorkerConfig>): WorkerConfig {
  return { ...parseWorkerCommand(['wait-ready'], {}).config, ...over };
}

function context(over: Partial<WorkerConfig>, signal: AbortSignal = new AbortController().signal): GateContext {
  return { config: config(over), log, signal };
}

async function gateError(promise: Promise<unknown>): Promise<GateError> {
  const err = await promise.then(
    () => {
      throw new Error('expected the gate to refuse');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GateError);
  return err as GateError;
}

describe('readiness gate', () => {
  it('none: ready at once, off Azure', async () => {
    const gate = await createGate('none');
    expect(gate.mode).toBe('none');
    await expect(gate.wait(context({ ready: 'none' }))).resolves.toEqual({ vm: null });
  });

  it('cloud-init: ready at once when boot-finished exists', async () => {
    const marker = join(freshDir('ci-exists'), 'boot-finished');
    writeFileSync(marker, '');
    const gate = await createGate('cloud-init');
    expect(gate.mode).toBe('cloud-init');
    await expect(gate.wait(context({ ready: 'cloud-init', cloudInitBootFinished: marker, readyIntervalMs: 50, readyTimeoutMs: 60_000 }))).resolves.toEqual({ vm: null });
  });

  it('cloud-init: waits for boot-finished to appear', async () => {
    const marker = join(freshDir('ci-later'), 'boot-finished');
    const gate = await createGate('cloud-init');
    let created = false;
    timers.push(
      setTimeout(() => {
        writeFileSync(marker, '');
        created = true;
      }, 300),
    );
    const result = await gate.wait(context({ ready: 'cloud-init', cloudInitBootFinished: marker, readyIntervalMs: 50, readyTimeoutMs: 60_000 }));
    expect(result).toEqual({ vm: null });
    expect(created).toBe(true); // it really waited for the file
  });

  it('cloud-init: times out with reason "timeout" and exit code 3 when boot-finished never appears', async () => {
    const marker = join(freshDir('ci-never'), 'boot-finished');
    const gate = await createGate('cloud-init');
    const err = await gateError(gate.wait(context({ ready: 'cloud-init', cloudInitBootFinished: marker, readyIntervalMs: 50, readyTimeoutMs: 200 })));
    expect(err.reason).toBe('timeout');
    expect(err.exitCode).toBe(3);
    expect(err.message).toContain(marker);
  });

  it('cloud-init: an abort gives reason "aborted"', async () => {
    const marker = join(freshDir('ci-abort'), 'boot-finished');
    const gate = await createGate('cloud-init');
    const ac = new AbortController();
    const waiting = gate.wait(context({ ready: 'cloud-init', cloudInitBootFinished: marker, readyIntervalMs: 50, readyTimeoutMs: 60_000 }, ac.signal));
    timers.push(setTimeout(() => ac.abort(), 150));
    const err = await gateError(waiting);
    expect(err.reason).toBe('aborted');
    expect(err.exitCode).toBe(GATE_EXIT_CODES.aborted);
  });

  it('cloud-init: an already aborted signal gives reason "aborted"', async () => {
    const marker = join(freshDir('ci-preabort'), 'boot-finished');
    const gate = await createGate('cloud-init');
    const err = await gateError(gate.wait(context({ ready: 'cloud-init', cloudInitBootFinished: marker, readyIntervalMs: 50, readyTimeoutMs: 60_000 }, AbortSignal.abort())));
    expect(err.reason).toBe('aborted');
  });

  it('azure: is a gate of its own', async () => {
    expect((await createGate('azure')).mode).toBe('azure');
  });

  it('auto: no readiness gate when IMDS does not answer', async () => {
    // A port nothing listens on: the probe is refused at once, as off Azure.
    const closed = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as AddressInfo;
        srv.close(() => resolve(port));
      });
    });
    const gate = await createGate('auto', { imdsUrl: `http://127.0.0.1:${closed}` });
    expect(gate.mode).toBe('none');
  });

  it('auto: the azure gate when IMDS answers', async () => {
    const srv = createServer((_req, res) => res.end('{}')).listen(0, '127.0.0.1');
    await once(srv, 'listening');
    try {
      const gate = await createGate('auto', { imdsUrl: `http://127.0.0.1:${(srv.address() as AddressInfo).port}` });
      expect(gate.mode).toBe('azure');
    } finally {
      srv.close();
    }
  });

  it('gives each failure reason its own exit code, none of them 0, 1 or 2', () => {
    const codes = Object.values(GATE_EXIT_CODES);
    expect(new Set(codes).size).toBe(codes.length);
    for (const code of codes) expect(code).toBeGreaterThan(2);
    expect(new GateError('timeout', 'x').exitCode).toBe(3);
  });
});
