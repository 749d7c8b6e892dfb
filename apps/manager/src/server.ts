#!/usr/bin/env node
/**
 * pullman-manager: reads configuration, opens the queue, listens, and shuts down cleanly.
 * Everything else lives in the app plugin (app.ts).
 */
import { pino } from 'pino';
import { PULLMAN_VERSION, PullmanError } from '@pullman/protocol';
import { TaskStore } from '@pullman/store';
import { buildApp } from './app.js';
import { loadManagerConfig } from './config.js';
import { loadToken } from './tokens.js';

/** Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadManagerConfig(process.argv.slice(2));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version') process.exit(0);
    return fail(err, 2);
  }

  const log = pino({ level: config.logLevel, base: { service: 'pullman-manager' } });
  let tokens;
  try {
    const admin = loadToken(config.adminToken);
    const worker = loadToken(config.workerToken);
    for (const [role, t] of [['admin', admin], ['worker', worker]] as const) {
      // Say where a token is, never what it is.
      if (t.generated) log.info({ path: t.path }, `generated the ${role} token`);
    }
    tokens = { admin: admin.token, worker: worker.token };
  } catch (err) {
    return fail(err, 2);
  }

  const store = new TaskStore({
    path: config.dbPath,
    sync: config.dbSync,
    leaseTtlMs: config.leaseTtlMs,
    ...(config.dbMaxPages !== null ? { maxPages: config.dbMaxPages } : {}),
    // Off the event loop: an inline checkpoint stalled the commit that triggered it by ~3 ms.
    checkpoint: 'background',
    onCheckpointError: (message) => log.warn({ db: config.dbPath }, `background WAL checkpoint failed (retrying): ${message}`),
  });
  // No session survives a restart. Workers reconnect and resume their leases; give them one
  // full TTL to do so before the reaper treats the leases as lost.
  const { offline, extended } = store.transaction(() => ({ offline: store.markAllWorkersOffline(), extended: store.extendAllLeasesForRestart() }));
  log.info({ db: config.dbPath, sync: config.dbSync, workersOffline: offline, leasesExtended: extended }, 'database open');

  const app = await buildApp({
    store,
    tokens,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    leaseTtlMs: config.leaseTtlMs,
    logger: log,
    https: config.tls,
    version: PULLMAN_VERSION,
    workerBundle: config.workerBundle,
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    try {
      await app.close();
      store.close(); // checkpoints the WAL into the main file
      log.info('stopped');
      process.exit(0);
    } catch (err) {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));

  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    store.close();
    return fail(new PullmanError('CONFIG_INVALID', `--port / PULLMAN_PORT: cannot listen on ${config.host}:${config.port} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`), 2);
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const scheme = config.tls ? 'https' : 'http';
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  // The one plain line on stdout: scripts (and the demo) read the URL from it.
  process.stdout.write(`listening on ${scheme}://${host}:${port}\n`);
}

function fail(err: unknown, exitCode: number): never {
  const message = err instanceof PullmanError ? err.message : (err as Error)?.message ?? String(err);
  process.stderr.write(`pullman-manager: ${message}\n`);
  process.exit(exitCode);
}

main().catch((err: unknown) => fail(err, 1));
