#!/usr/bin/env node
/**
 * pullman-worker: `run` (default) = readiness gate, then the work loop; `wait-ready` = only
 * the gate, for systemd ExecStartPre.
 *
 * Exit codes: 0 drained or ready; 1 runtime failure or forced stop; 2 bad configuration or a
 * refused token; 3-8 the gate's refusals (see GATE_EXIT_CODES in gate.ts).
 */
import { pino, type Logger } from 'pino';
import { PULLMAN_VERSION, PullmanError } from '@pullman/protocol';
import { parseWorkerCommand, type WorkerConfig } from './config.js';
import { WorkerDaemon } from './daemon.js';
import { GateError, createGate, type GateResult } from './gate.js';

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseWorkerCommand(process.argv.slice(2));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.help' || code === 'commander.version') return 0;
    return fail(err, 2);
  }
  const { command, config } = parsed;
  const log = pino({ level: config.logLevel, base: { service: 'pullman-worker', name: config.name } });
  log.info({ command, version: PULLMAN_VERSION, manager: config.managerUrl, slots: config.slots, labels: config.labels, ready: config.ready, workDir: config.workDir }, 'state starting');

  // The gate can be interrupted by a signal; the work loop drains on the first and dies on the second.
  const abort = new AbortController();
  let daemon: WorkerDaemon | null = null;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal }, 'second signal: forcing exit');
      if (daemon) daemon.forceStop();
      else process.exit(1);
      return;
    }
    log.info({ signal }, 'signal received: draining');
    if (daemon) daemon.drain(signal);
    else abort.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let gate: GateResult;
  try {
    gate = await waitReady(config, log, abort.signal);
  } catch (err) {
    if (err instanceof GateError) {
      log.error({ reason: err.reason }, err.message);
      return fail(err, err.reason === 'aborted' ? 0 : err.exitCode);
    }
    throw err;
  }
  if (command === 'wait-ready') return 0;

  daemon = new WorkerDaemon({ config: { ...config, token: config.token! }, log, vm: gate.vm });
  return daemon.run();
}

async function waitReady(config: WorkerConfig, log: Logger, signal: AbortSignal): Promise<GateResult> {
  const gate = await createGate(config.ready);
  log.info({ from: 'starting', to: 'waiting-ready', gate: gate.mode }, 'state waiting-ready');
  const result = await gate.wait({ config, log, signal });
  log.info({ gate: gate.mode, vm: result.vm }, 'ready');
  return result;
}

function fail(err: unknown, exitCode: number): number {
  const message = err instanceof PullmanError || err instanceof GateError ? err.message : (err as Error)?.message ?? String(err);
  process.stderr.write(`pullman-worker: ${message}\n`);
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => process.exit(fail(err, 1)),
);
