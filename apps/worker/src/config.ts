/**
 * Worker configuration: flag > environment > default (CONTRACT.md). Read and validated once
 * at start; an error names the setting and the value, and the daemon exits 2.
 */
import { Command, Option } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import { resolve } from 'node:path';
import { PullmanError, parseDuration } from '@pullman/protocol';

export const READY_MODES = ['auto', 'azure', 'cloud-init', 'none'] as const;
export type ReadyMode = (typeof READY_MODES)[number];
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export interface WorkerConfig {
  managerUrl: string;
  /** ws:// or wss:// URL of the worker channel. */
  channelUrl: string;
  /** Null only for `wait-ready`, which never talks to the manager. */
  token: string | null;
  ca: Buffer | null;
  /** PULLMAN_NAME, else the hostname; replaced by IMDS compute.name on Azure unless explicit. */
  name: string;
  nameExplicit: boolean;
  hostname: string;
  slots: number;
  labels: string[];
  workDir: string;
  ready: ReadyMode;
  readyIntervalMs: number;
  readyTimeoutMs: number;
  /** File whose existence means cloud-init finished (configurable for tests). */
  cloudInitBootFinished: string;
  imdsUrl: string;
  armUrl: string;
  scheduledEvents: 'on' | 'off' | 'auto';
  /** AZURE_CLIENT_ID: a user-assigned identity; null for the system-assigned one. */
  azureClientId: string | null;
  drainTimeoutMs: number;
  killGraceMs: number;
  keepFailedScratch: boolean;
  /** `auto`: start tasks through the Perl spawn helper when perl runs (spawn-helper.ts); `off`: fork them in-process. */
  spawnHelper: 'auto' | 'off';
  /** Full logs and kept scratch dirs older than this are removed (0 keeps them forever). */
  logRetentionMs: number;
  logLevel: (typeof LOG_LEVELS)[number];
}

const configError = (setting: string, value: unknown, why: string): PullmanError =>
  new PullmanError('CONFIG_INVALID', `${setting}: ${JSON.stringify(value)} ${why}`);

const opt = (flags: string, env: string, description: string, def?: string): Option => {
  const o = new Option(flags, description).env(env);
  return def === undefined ? o : o.default(def);
};

/** Adds the options every subcommand shares. */
function withOptions(cmd: Command): Command {
  return cmd
    .addOption(opt('--manager <url>', 'PULLMAN_MANAGER_URL', 'manager URL (http or https)', 'http://127.0.0.1:8080'))
    .addOption(opt('--token <token>', 'PULLMAN_WORKER_TOKEN', 'worker token (or PULLMAN_WORKER_TOKEN_FILE)'))
    .addOption(opt('--ca-file <file>', 'PULLMAN_CA_FILE', 'extra CA certificate (PEM) for an https manager'))
    .addOption(opt('--name <name>', 'PULLMAN_NAME', 'worker name (default: VM name on Azure, else the hostname)'))
    .addOption(opt('--slots <n>', 'PULLMAN_SLOTS', 'task slots (default: number of CPUs)'))
    .addOption(opt('--labels <list>', 'PULLMAN_LABELS', 'comma-separated labels'))
    .addOption(opt('--work-dir <dir>', 'PULLMAN_WORK_DIR', 'scratch dirs, logs and the result outbox', './.pullman-worker'))
    .addOption(opt('--ready <mode>', 'PULLMAN_READY', `readiness gate: ${READY_MODES.join(', ')}`, 'auto'))
    .addOption(opt('--log-level <level>', 'PULLMAN_LOG_LEVEL', `one of ${LOG_LEVELS.join(', ')}`, 'info'));
}

export interface ParsedCommand {
  command: 'run' | 'wait-ready';
  config: WorkerConfig;
}

/** Parses argv (without node and script) and env. Throws PullmanError(CONFIG_INVALID). */
export function parseWorkerCommand(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedCommand {
  let chosen: { command: ParsedCommand['command']; opts: Record<string, string | undefined> } | null = null;
  const program = new Command('pullman-worker')
    .description('Pullman worker daemon: waits until its VM is ready, then pulls and runs tasks')
    .exitOverride()
    .configureOutput({ writeErr: () => {} });
  for (const [name, description, isDefault] of [
    ['run', 'readiness gate, then the work loop (default)', true],
    ['wait-ready', 'only the readiness gate: exit 0 when ready (for systemd ExecStartPre)', false],
  ] as const) {
    withOptions(program.command(name, { isDefault }).description(description).exitOverride().configureOutput({ writeErr: () => {} }))
      .action((_o: unknown, cmd: Command) => {
        chosen = { command: name, opts: cmd.opts() };
      });
  }
  const saved = process.env;
  process.env = env; // commander reads option env vars from process.env
  try {
    program.parse(argv as string[], { from: 'user' });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') throw err;
    throw new PullmanError('CONFIG_INVALID', (e.message ?? String(err)).replace(/^error: /, ''));
  } finally {
    process.env = saved;
  }
  const c = chosen as { command: ParsedCommand['command']; opts: Record<string, string | undefined> } | null;
  if (!c) throw new PullmanError('CONFIG_INVALID', 'no command');
  return { command: c.command, config: buildConfig(c.command, c.opts, env) };
}

function buildConfig(command: ParsedCommand['command'], o: Record<string, string | undefined>, env: NodeJS.ProcessEnv): WorkerConfig {
  const managerUrl = o.manager ?? '';
  let url: URL;
  try {
    url = new URL(managerUrl);
  } catch {
    throw configError('--manager / PULLMAN_MANAGER_URL', managerUrl, 'is not a URL (e.g. http://10.0.0.4:8080)');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw configError('--manager / PULLMAN_MANAGER_URL', managerUrl, 'must start with http:// or https://');
  const channel = new URL(url.href);
  channel.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  channel.pathname = `${channel.pathname.replace(/\/+$/, '')}/v1/worker`;

  let token: string | null = o.token ?? null;
  if (!token && env.PULLMAN_WORKER_TOKEN_FILE) {
    try {
      token = readFileSync(env.PULLMAN_WORKER_TOKEN_FILE, 'utf8').trim();
    } catch (err) {
      throw configError('PULLMAN_WORKER_TOKEN_FILE', env.PULLMAN_WORKER_TOKEN_FILE, `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (!token) throw configError('PULLMAN_WORKER_TOKEN_FILE', env.PULLMAN_WORKER_TOKEN_FILE, 'is empty');
  }
  if (!token && command === 'run') throw new PullmanError('CONFIG_INVALID', '--token / PULLMAN_WORKER_TOKEN / PULLMAN_WORKER_TOKEN_FILE: a worker token is required (the manager writes it to <data-dir>/worker.token)');

  let ca: Buffer | null = null;
  if (o.caFile) {
    if (!existsSync(o.caFile)) throw configError('--ca-file / PULLMAN_CA_FILE', o.caFile, 'does not exist');
    ca = readFileSync(o.caFile);
  }

  let slots = availableParallelism();
  if (o.slots !== undefined) {
    slots = Number(o.slots);
    if (!/^\d+$/.test(o.slots) || slots < 1 || slots > 65_536) throw configError('--slots / PULLMAN_SLOTS', o.slots, 'must be a whole number from 1 to 65536');
  }
  const labels = (o.labels ?? '').split(',').map((l) => l.trim()).filter(Boolean);
  for (const l of labels) if (!/^[A-Za-z0-9_.:/=-]{1,64}$/.test(l)) throw configError('--labels / PULLMAN_LABELS', l, 'is not a valid label (letters, digits, _ . : / = -, at most 64)');

  const ready = o.ready as ReadyMode;
  if (!READY_MODES.includes(ready)) throw configError('--ready / PULLMAN_READY', o.ready, `must be one of ${READY_MODES.join(', ')}`);
  const logLevel = o.logLevel as WorkerConfig['logLevel'];
  if (!LOG_LEVELS.includes(logLevel)) throw configError('--log-level / PULLMAN_LOG_LEVEL', o.logLevel, `must be one of ${LOG_LEVELS.join(', ')}`);

  const duration = (name: string, def: string): number => {
    const value = env[name] ?? def;
    try {
      return parseDuration(value, name);
    } catch {
      throw configError(name, value, 'is not a duration (use 500ms, 30s, 5m, 2h or integer milliseconds)');
    }
  };
  // `auto` (unset) means: on when the gate turns out to be azure, else off.
  const scheduledEvents = (env.PULLMAN_SCHEDULED_EVENTS ?? 'auto') as WorkerConfig['scheduledEvents'];
  if (!['on', 'off', 'auto'].includes(scheduledEvents)) throw configError('PULLMAN_SCHEDULED_EVENTS', scheduledEvents, 'must be "on" or "off"');
  const clientId = env.AZURE_CLIENT_ID?.trim() || null;
  const keep = env.PULLMAN_KEEP_FAILED_SCRATCH ?? 'true';
  if (keep !== 'true' && keep !== 'false') throw configError('PULLMAN_KEEP_FAILED_SCRATCH', keep, 'must be "true" or "false"');
  const spawnHelper = (env.PULLMAN_SPAWN_HELPER ?? 'auto') as WorkerConfig['spawnHelper'];
  if (spawnHelper !== 'auto' && spawnHelper !== 'off') throw configError('PULLMAN_SPAWN_HELPER', spawnHelper, 'must be "auto" or "off"');
  const host = hostname();

  return {
    managerUrl: url.href.replace(/\/$/, ''),
    channelUrl: channel.href,
    token,
    ca,
    name: o.name?.trim() || host,
    nameExplicit: Boolean(o.name?.trim()),
    hostname: host,
    slots,
    labels,
    workDir: resolve(o.workDir ?? './.pullman-worker'),
    ready,
    readyIntervalMs: duration('PULLMAN_READY_INTERVAL', '5s'),
    readyTimeoutMs: duration('PULLMAN_READY_TIMEOUT', '60m'),
    cloudInitBootFinished: env.PULLMAN_CLOUD_INIT_BOOT_FINISHED ?? '/var/lib/cloud/instance/boot-finished',
    imdsUrl: (env.PULLMAN_IMDS_URL ?? 'http://169.254.169.254').replace(/\/$/, ''),
    armUrl: (env.PULLMAN_ARM_URL ?? 'https://management.azure.com').replace(/\/$/, ''),
    scheduledEvents,
    azureClientId: clientId,
    drainTimeoutMs: duration('PULLMAN_DRAIN_TIMEOUT', '10m'),
    killGraceMs: duration('PULLMAN_KILL_GRACE', '10s'),
    logRetentionMs: duration('PULLMAN_LOG_RETENTION', '168h'),
    keepFailedScratch: keep === 'true',
    spawnHelper,
    logLevel,
  };
}
