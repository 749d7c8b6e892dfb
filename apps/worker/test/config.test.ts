import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PullmanError } from '@pullman/protocol';
import { parseWorkerCommand } from '../src/config.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
function freshDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `pullman-config-${name}-`));
  dirs.push(dir);
  return dir;
}

const TOKEN = { PULLMAN_WORKER_TOKEN: 'tok-123' };

/** Asserts that parsing fails with CONFIG_INVALID and a message naming every `mentions`. */
function expectConfigError(argv: string[], env: NodeJS.ProcessEnv, ...mentions: string[]): PullmanError {
  let caught: unknown;
  try {
    parseWorkerCommand(argv, env);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(PullmanError);
  const err = caught as PullmanError;
  expect(err.code).toBe('CONFIG_INVALID');
  for (const m of mentions) expect(err.message).toContain(m);
  return err;
}

describe('parseWorkerCommand: defaults', () => {
  it('uses the documented defaults for run', () => {
    const { command, config } = parseWorkerCommand(['run'], TOKEN);
    expect(command).toBe('run');
    expect(config.managerUrl).toBe('http://127.0.0.1:8080');
    expect(config.channelUrl).toBe('ws://127.0.0.1:8080/v1/worker');
    expect(config.token).toBe('tok-123');
    expect(config.ca).toBeNull();
    expect(config.slots).toBe(availableParallelism());
    expect(config.labels).toEqual([]);
    expect(config.ready).toBe('auto');
    expect(config.name).toBe(hostname());
    expect(config.workDir).toBe(resolve('./.pullman-worker'));
    expect(config.readyIntervalMs).toBe(5_000);
    expect(config.readyTimeoutMs).toBe(60 * 60_000);
    expect(config.drainTimeoutMs).toBe(10 * 60_000);
    expect(config.imdsUrl).toBe('http://169.254.169.254');
    expect(config.armUrl).toBe('https://management.azure.com');
    expect(config.spawnHelper).toBe('auto');
  });

  it('runs `run` when no subcommand is given', () => {
    const { command, config } = parseWorkerCommand([], TOKEN);
    expect(command).toBe('run');
    expect(config.channelUrl).toBe('ws://127.0.0.1:8080/v1/worker');
  });

  it('accepts options without a subcommand', () => {
    const { command, config } = parseWorkerCommand(['--slots', '2'], TOKEN);
    expect(command).toBe('run');
    expect(config.slots).toBe(2);
  });
});

describe('parseWorkerCommand: manager URL', () => {
  it('turns an https manager into a wss channel URL', () => {
    const { config } = parseWorkerCommand(['run', '--manager', 'https://pullman.example.com'], TOKEN);
    expect(config.managerUrl).toBe('https://pullman.example.com');
    expect(config.channelUrl).toBe('wss://pullman.example.com/v1/worker');
  });

  it('keeps the port of the manager URL', () => {
    const { config } = parseWorkerCommand(['run', '--manager', 'http://10.0.0.4:9000'], TOKEN);
    expect(config.channelUrl).toBe('ws://10.0.0.4:9000/v1/worker');
  });

  it('keeps a path prefix in the manager URL, with or without a trailing slash', () => {
    for (const manager of ['https://example.com/pullman', 'https://example.com/pullman/']) {
      const { config } = parseWorkerCommand(['run', '--manager', manager], TOKEN);
      expect(config.channelUrl).toBe('wss://example.com/pullman/v1/worker');
      expect(config.managerUrl).toBe('https://example.com/pullman');
    }
  });
});

describe('parseWorkerCommand: precedence', () => {
  it('takes the environment over the defaults', () => {
    const { config } = parseWorkerCommand(['run'], {
      ...TOKEN,
      PULLMAN_MANAGER_URL: 'http://env-host:1234',
      PULLMAN_SLOTS: '5',
      PULLMAN_LABELS: 'gpu, big-mem ,zone=1',
      PULLMAN_NAME: 'env-name',
      PULLMAN_READY: 'none',
      PULLMAN_WORK_DIR: '/tmp/pullman-env-work',
    });
    expect(config.channelUrl).toBe('ws://env-host:1234/v1/worker');
    expect(config.slots).toBe(5);
    expect(config.labels).toEqual(['gpu', 'big-mem', 'zone=1']);
    expect(config.name).toBe('env-name');
    expect(config.ready).toBe('none');
    expect(config.workDir).toBe('/tmp/pullman-env-work');
  });

  it('takes flags over the environment', () => {
    const { config } = parseWorkerCommand(
      ['run', '--manager', 'http://flag-host:1', '--token', 'flag-token', '--slots', '3', '--labels', 'flag', '--name', 'flag-name', '--ready', 'cloud-init'],
      { PULLMAN_WORKER_TOKEN: 'env-token', PULLMAN_MANAGER_URL: 'http://env-host:2', PULLMAN_SLOTS: '5', PULLMAN_LABELS: 'env', PULLMAN_NAME: 'env-name', PULLMAN_READY: 'none' },
    );
    expect(config.channelUrl).toBe('ws://flag-host:1/v1/worker');
    expect(config.token).toBe('flag-token');
    expect(config.slots).toBe(3);
    expect(config.labels).toEqual(['flag']);
    expect(config.name).toBe('flag-name');
    expect(config.ready).toBe('cloud-init');
  });

  it('does not read the real process environment', () => {
    const saved = process.env.PULLMAN_SLOTS;
    process.env.PULLMAN_SLOTS = '7';
    try {
      expect(parseWorkerCommand(['run'], TOKEN).config.slots).toBe(availableParallelism());
    } finally {
      if (saved === undefined) delete process.env.PULLMAN_SLOTS;
      else process.env.PULLMAN_SLOTS = saved;
    }
    expect(process.env.PULLMAN_SLOTS).toBe(saved);
  });
});

describe('parseWorkerCommand: token', () => {
  it('wait-ready needs no token', () => {
    const { command, config } = parseWorkerCommand(['wait-ready'], {});
    expect(command).toBe('wait-ready');
    expect(config.token).toBeNull();
  });

  it('reads the token from PULLMAN_WORKER_TOKEN_FILE, trimmed', () => {
    const file = join(freshDir('token'), 'worker.token');
    writeFileSync(file, 'from-file-token\n');
    const { config } = parseWorkerCommand(['run'], { PULLMAN_WORKER_TOKEN_FILE: file });
    expect(config.token).toBe('from-file-token');
  });

  it('prefers PULLMAN_WORKER_TOKEN over the token file', () => {
    const file = join(freshDir('token-both'), 'worker.token');
    writeFileSync(file, 'from-file-token\n');
    const { config } = parseWorkerCommand(['run'], { PULLMAN_WORKER_TOKEN: 'direct', PULLMAN_WORKER_TOKEN_FILE: file });
    expect(config.token).toBe('direct');
  });

  it('rejects an unreadable or empty token file, naming it', () => {
    const dir = freshDir('token-bad');
    const missing = join(dir, 'missing.token');
    expectConfigError(['run'], { PULLMAN_WORKER_TOKEN_FILE: missing }, 'PULLMAN_WORKER_TOKEN_FILE', missing);
    const empty = join(dir, 'empty.token');
    writeFileSync(empty, '  \n');
    expectConfigError(['run'], { PULLMAN_WORKER_TOKEN_FILE: empty }, 'PULLMAN_WORKER_TOKEN_FILE', empty);
  });

  it('reads a CA file given with --ca-file', () => {
    const file = join(freshDir('ca'), 'ca.pem');
    writeFileSync(file, '-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n');
    const { config } = parseWorkerCommand(['run', '--ca-file', file], TOKEN);
    expect(config.ca?.toString('utf8')).toContain('BEGIN CERTIFICATE');
  });
});

describe('parseWorkerCommand: errors name the setting and the bad value', () => {
  it('requires a token for run', () => {
    expectConfigError(['run'], {}, 'PULLMAN_WORKER_TOKEN', '--token');
    expectConfigError([], {}, 'PULLMAN_WORKER_TOKEN');
  });

  it('rejects a manager URL that is not a URL', () => {
    expectConfigError(['run', '--manager', 'not a url'], TOKEN, 'PULLMAN_MANAGER_URL', 'not a url');
  });

  it('rejects a manager URL that is not http or https', () => {
    expectConfigError(['run'], { ...TOKEN, PULLMAN_MANAGER_URL: 'ftp://files.example.com' }, 'PULLMAN_MANAGER_URL', 'ftp://files.example.com');
  });

  it('rejects slots=0 and slots=abc', () => {
    expectConfigError(['run', '--slots', '0'], TOKEN, 'PULLMAN_SLOTS', '"0"');
    expectConfigError(['run'], { ...TOKEN, PULLMAN_SLOTS: 'abc' }, 'PULLMAN_SLOTS', 'abc');
    expectConfigError(['run', '--slots', '1.5'], TOKEN, 'PULLMAN_SLOTS', '1.5');
    expectConfigError(['run', '--slots', '-2'], TOKEN, 'PULLMAN_SLOTS', '-2');
  });

  it('rejects an unknown ready mode', () => {
    expectConfigError(['run', '--ready', 'sometimes'], TOKEN, 'PULLMAN_READY', 'sometimes');
  });

  it('rejects a bad label', () => {
    expectConfigError(['run', '--labels', 'gpu,has space'], TOKEN, 'PULLMAN_LABELS', 'has space');
    expectConfigError(['run'], { ...TOKEN, PULLMAN_LABELS: 'ok,semi;colon' }, 'PULLMAN_LABELS', 'semi;colon');
  });

  it('takes PULLMAN_SPAWN_HELPER=off, and rejects any other value than auto or off', () => {
    expect(parseWorkerCommand(['run'], { ...TOKEN, PULLMAN_SPAWN_HELPER: 'off' }).config.spawnHelper).toBe('off');
    expectConfigError(['run'], { ...TOKEN, PULLMAN_SPAWN_HELPER: 'yes' }, 'PULLMAN_SPAWN_HELPER', 'yes');
  });

  it('rejects a bad PULLMAN_DRAIN_TIMEOUT', () => {
    expectConfigError(['run'], { ...TOKEN, PULLMAN_DRAIN_TIMEOUT: 'soon' }, 'PULLMAN_DRAIN_TIMEOUT', 'soon');
  });

  it('accepts the documented duration forms', () => {
    const { config } = parseWorkerCommand(['wait-ready'], { PULLMAN_DRAIN_TIMEOUT: '30s', PULLMAN_READY_INTERVAL: '500ms', PULLMAN_READY_TIMEOUT: '2h' });
    expect(config.drainTimeoutMs).toBe(30_000);
    expect(config.readyIntervalMs).toBe(500);
    expect(config.readyTimeoutMs).toBe(2 * 3_600_000);
    expect(parseWorkerCommand(['wait-ready'], { PULLMAN_DRAIN_TIMEOUT: '1234' }).config.drainTimeoutMs).toBe(1234);
  });

  it('rejects a CA file that does not exist', () => {
    const missing = join(freshDir('ca-missing'), 'nope.pem');
    expectConfigError(['run', '--ca-file', missing], TOKEN, 'PULLMAN_CA_FILE', missing);
    expectConfigError(['run'], { ...TOKEN, PULLMAN_CA_FILE: missing }, 'PULLMAN_CA_FILE', missing);
  });

  it('rejects an unknown option, naming it', () => {
    expectConfigError(['run', '--bogus-flag', 'x'], TOKEN, '--bogus-flag');
    expectConfigError(['wait-ready', '--bogus-flag'], {}, '--bogus-flag');
  });
});
