/**
 * Manager configuration: flag > environment > default (CONTRACT.md), read and validated once
 * at start. Every error names the setting (flag and variable) and the value that is wrong.
 */
import { Command, Option } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PullmanError, parseDuration } from '@pullman/protocol';
import type { SyncMode } from '@pullman/store';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface ManagerConfig {
  host: string;
  port: number;
  dataDir: string;
  dbPath: string;
  heartbeatIntervalMs: number;
  leaseTtlMs: number;
  tls: { cert: Buffer; key: Buffer } | null;
  dbSync: SyncMode;
  /** PULLMAN_DB_MAX_PAGES (testing): cap the database at this many 4 KiB pages; null = no cap. */
  dbMaxPages: number | null;
  logLevel: LogLevel;
  /** The single-file worker bundle served at GET /v1/worker/bundle (need not exist). */
  workerBundle: string;
  /** Token sources; resolved (and generated if missing) by loadTokens at start. */
  adminToken: TokenSource;
  workerToken: TokenSource;
}

export type TokenSource =
  | { kind: 'value'; value: string; setting: string }
  | { kind: 'file'; path: string; setting: string }
  | { kind: 'generated'; path: string };

const configError = (setting: string, value: unknown, why: string): PullmanError =>
  new PullmanError('CONFIG_INVALID', `${setting}: ${JSON.stringify(value)} ${why}`);

function option(flags: string, env: string, description: string, defaultValue?: string): Option {
  const o = new Option(flags, description).env(env);
  return defaultValue === undefined ? o : o.default(defaultValue);
}

/** The commander program for `pullman-manager`; exported so --help stays in sync with the docs. */
export function managerProgram(): Command {
  return new Command('pullman-manager')
    .description('Pullman manager: durable task queue, HTTP API and worker channel')
    .addOption(option('--host <address>', 'PULLMAN_HOST', 'address to listen on', '127.0.0.1'))
    .addOption(option('--port <port>', 'PULLMAN_PORT', 'port to listen on (0 = any free port)', '8080'))
    .addOption(option('--data-dir <dir>', 'PULLMAN_DATA_DIR', 'directory holding pullman.db and generated tokens', './.pullman'))
    .addOption(option('--heartbeat-interval <duration>', 'PULLMAN_HEARTBEAT_INTERVAL', 'heartbeat interval told to workers', '5s'))
    .addOption(option('--lease-ttl <duration>', 'PULLMAN_LEASE_TTL', 'lease lifetime after each heartbeat', '30s'))
    .addOption(option('--tls-cert <file>', 'PULLMAN_TLS_CERT', 'TLS certificate (PEM); serve https/wss'))
    .addOption(option('--tls-key <file>', 'PULLMAN_TLS_KEY', 'TLS private key (PEM)'))
    .addOption(option('--db-sync <mode>', 'PULLMAN_DB_SYNC', 'normal (crash-safe) or full (power-loss safe)', 'normal'))
    .addOption(option('--log-level <level>', 'PULLMAN_LOG_LEVEL', `one of ${LOG_LEVELS.join(', ')}`, 'info'))
    .addOption(option('--worker-bundle <file>', 'PULLMAN_WORKER_BUNDLE', 'worker bundle served at GET /v1/worker/bundle (default: pullman-worker.cjs next to the manager)'))
    .exitOverride()
    .configureOutput({ writeErr: () => {} });
}

/**
 * Parses argv (without node and script) and env into a validated config.
 * Throws PullmanError(CONFIG_INVALID) naming the setting; commander usage errors are
 * rethrown as CONFIG_INVALID too, so the entry point has one error path.
 */
export function loadManagerConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ManagerConfig {
  const program = managerProgram();
  // commander reads option env vars from process.env; give it the env we were handed.
  const saved = process.env;
  process.env = env;
  let o: Record<string, string | undefined>;
  try {
    program.parse(argv as string[], { from: 'user' });
    o = program.opts();
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') throw err;
    throw new PullmanError('CONFIG_INVALID', (e.message ?? String(err)).replace(/^error: /, ''));
  } finally {
    process.env = saved;
  }

  const port = Number(o.port);
  if (!/^\d+$/.test(o.port ?? '') || port > 65_535) throw configError('--port / PULLMAN_PORT', o.port, 'is not a port number (0-65535)');
  const host = o.host ?? '';
  if (host.trim() === '') throw configError('--host / PULLMAN_HOST', o.host, 'is empty');

  const duration = (setting: string, value: string | undefined): number => {
    try {
      const ms = parseDuration(value ?? '', setting);
      if (ms <= 0) throw configError(setting, value, 'must be greater than 0');
      return ms;
    } catch (err) {
      if (err instanceof PullmanError && err.code === 'CONFIG_INVALID') throw err;
      throw configError(setting, value, 'is not a duration (use 500ms, 30s, 5m, 2h or integer milliseconds)');
    }
  };
  const heartbeatIntervalMs = duration('--heartbeat-interval / PULLMAN_HEARTBEAT_INTERVAL', o.heartbeatInterval);
  const leaseTtlMs = duration('--lease-ttl / PULLMAN_LEASE_TTL', o.leaseTtl);
  // A lease must survive at least one lost heartbeat, or a single delayed packet requeues work.
  if (leaseTtlMs < 2 * heartbeatIntervalMs) {
    throw configError('--lease-ttl / PULLMAN_LEASE_TTL', o.leaseTtl, `must be at least twice the heartbeat interval (${o.heartbeatInterval})`);
  }

  const dbSync = o.dbSync;
  if (dbSync !== 'normal' && dbSync !== 'full') throw configError('--db-sync / PULLMAN_DB_SYNC', dbSync, 'must be "normal" or "full"');
  // Hidden on purpose (environment only, no flag): a test setting that provokes SQLITE_FULL
  // without a small filesystem. docs/configuration.md mentions it under "Testing".
  const maxPagesText = env.PULLMAN_DB_MAX_PAGES;
  let dbMaxPages: number | null = null;
  if (maxPagesText !== undefined && maxPagesText !== '') {
    if (!/^\d{1,10}$/.test(maxPagesText) || Number(maxPagesText) < 1) throw configError('PULLMAN_DB_MAX_PAGES', maxPagesText, 'is not a positive number of pages');
    dbMaxPages = Number(maxPagesText);
  }
  const logLevel = o.logLevel as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) throw configError('--log-level / PULLMAN_LOG_LEVEL', o.logLevel, `must be one of ${LOG_LEVELS.join(', ')}`);

  let tls: ManagerConfig['tls'] = null;
  if (o.tlsCert !== undefined || o.tlsKey !== undefined) {
    if (!o.tlsCert) throw configError('--tls-cert / PULLMAN_TLS_CERT', o.tlsCert ?? '', 'is required when --tls-key is set');
    if (!o.tlsKey) throw configError('--tls-key / PULLMAN_TLS_KEY', o.tlsKey ?? '', 'is required when --tls-cert is set');
    tls = { cert: readSettingFile('--tls-cert / PULLMAN_TLS_CERT', o.tlsCert), key: readSettingFile('--tls-key / PULLMAN_TLS_KEY', o.tlsKey) };
  }

  const dataDir = resolve(o.dataDir ?? './.pullman');
  return {
    host,
    port,
    dataDir,
    dbPath: join(dataDir, 'pullman.db'),
    heartbeatIntervalMs,
    leaseTtlMs,
    tls,
    dbSync,
    dbMaxPages,
    logLevel,
    workerBundle: o.workerBundle ? resolve(o.workerBundle) : defaultWorkerBundle(),
    adminToken: tokenSource(env, 'ADMIN', join(dataDir, 'admin.token')),
    workerToken: tokenSource(env, 'WORKER', join(dataDir, 'worker.token')),
  };
}

/**
 * Where the worker bundle is when --worker-bundle is not given, relative to this module:
 * next to it in a release (`pullman-manager.mjs` and `pullman-worker.cjs` side by side), or
 * the worker's build output in the repository (`apps/manager/dist` -> `apps/worker/dist`).
 * The first that exists wins; if none does, the route answers 404 until one is built.
 */
export function defaultWorkerBundle(from: string = dirname(fileURLToPath(import.meta.url))): string {
  const candidates = [join(from, 'pullman-worker.cjs'), resolve(from, '../../worker/dist/pullman-worker.cjs')];
  return candidates.find((c) => existsSync(c)) ?? candidates[candidates.length - 1]!;
}

function tokenSource(env: NodeJS.ProcessEnv, role: 'ADMIN' | 'WORKER', generatedPath: string): TokenSource {
  const value = env[`PULLMAN_${role}_TOKEN`];
  const file = env[`PULLMAN_${role}_TOKEN_FILE`];
  if (value !== undefined && value !== '') return { kind: 'value', value, setting: `PULLMAN_${role}_TOKEN` };
  if (file !== undefined && file !== '') {
    if (!existsSync(file)) throw configError(`PULLMAN_${role}_TOKEN_FILE`, file, 'does not exist');
    return { kind: 'file', path: file, setting: `PULLMAN_${role}_TOKEN_FILE` };
  }
  return { kind: 'generated', path: generatedPath };
}

function readSettingFile(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw configError(setting, path, `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}
