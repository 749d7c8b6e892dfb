#!/usr/bin/env node
/**
 * pullman-worker: `run` (default) = readiness gate, then the work loop; `wait-ready` = only
 * the gate, for systemd ExecStartPre.
 *
 * Exit codes: 0 drained or ready; 1 runtime failure or forced stop; 2 bad configuration, a
 * refused token, or a work dir another worker runs on; 3-8 the gate's refusals (see
 * GATE_EXIT_CODES in gate.ts).
 */
import { mkdir } from 'node:fs/promises';
import { pino, type Logger } from 'pino';
import { ImdsClient, ScheduledEventsWatcher, msUntilNotBefore } from '@pullman/azure';
import { PULLMAN_VERSION, PullmanError } from '@pullman/protocol';
import { parseWorkerCommand, type WorkerConfig } from './config.js';
import { WorkerDaemon } from './daemon.js';
import { GateError, createGate, type GateResult } from './gate.js';
import { WorkDirBusyError, lockWorkDir, type WorkDirLock } from './instance-lock.js';

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

  // Before the gate, so that a second worker on this work dir is refused at once, not after
  // waiting for Azure. `wait-ready` (systemd's ExecStartPre) only waits, and takes no lock.
  let lock: WorkDirLock | null = null;
  if (command === 'run') {
    try {
      await mkdir(config.workDir, { recursive: true }).catch(() => {}); // the daemon reports what fails here
      lock = await lockWorkDir(config.workDir, (why) => log.warn({ workDir: config.workDir, why }, 'cannot lock the work dir: running without the check for a second worker on it'));
    } catch (err) {
      if (!(err instanceof WorkDirBusyError)) throw err;
      log.error({ workDir: config.workDir }, err.message);
      return fail(err, 2);
    }
  }

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

  let gate: GateResult & { mode: string };
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

  // On Azure the worker is known by its VM name unless told otherwise.
  const name = !config.nameExplicit && gate.vm ? gate.vm.name : config.name;
  const d = new WorkerDaemon({ config: { ...config, name, token: config.token! }, log, vm: gate.vm });
  daemon = d;
  const watcher = await scheduledEventsWatcher(config, gate, log, d);
  const code = await d.run();
  await watcher?.stop();
  await lock?.release();
  return code;
}

async function waitReady(config: WorkerConfig, log: Logger, signal: AbortSignal): Promise<GateResult & { mode: string }> {
  const gate = await createGate(config.ready, config, log);
  log.info({ from: 'starting', to: 'waiting-ready', gate: gate.mode }, 'state waiting-ready');
  const result = await gate.wait({ config, log, signal });
  log.info({ gate: gate.mode, vm: result.vm }, 'ready');
  return { ...result, mode: gate.mode };
}

/**
 * Watches Azure Scheduled Events when enabled (by default: whenever the gate is azure). An event
 * that takes this VM away drains the worker: tasks that can finish before NotBefore finish, the
 * rest are released, the manager is told, and only then is the event approved.
 */
async function scheduledEventsWatcher(config: WorkerConfig, gate: GateResult & { mode: string }, log: Logger, daemon: WorkerDaemon): Promise<ScheduledEventsWatcher | null> {
  const enabled = config.scheduledEvents === 'on' || (config.scheduledEvents === 'auto' && gate.mode === 'azure');
  if (!enabled) return null;
  const imds = new ImdsClient({ baseUrl: config.imdsUrl, log });
  const vmName = gate.compute?.name ?? (await imds.instance()).name;
  const watcher: ScheduledEventsWatcher = new ScheduledEventsWatcher({
    imds,
    vmName,
    log,
    onEvent: (event) => {
      // Leave time after the deadline to stop tasks (kill grace) and report before NotBefore.
      const margin = config.killGraceMs + 5_000;
      const deadlineAt = Date.now() + Math.max(0, msUntilNotBefore(event) - margin);
      daemon.drain(`scheduled event ${event.EventType} ${event.EventId}`, { deadlineAt, beforeExit: () => watcher.approve(event.EventId) });
    },
  });
  watcher.start();
  log.info({ vmName }, 'watching scheduled events');
  return watcher;
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
