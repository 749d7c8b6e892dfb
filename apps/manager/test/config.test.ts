import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PullmanError } from '@pullman/protocol';
import { loadManagerConfig } from '../src/config.js';
import { TokenAuthority, bearerToken, loadToken } from '../src/tokens.js';

const configError = (argv: string[], env: NodeJS.ProcessEnv = {}): PullmanError => {
  try {
    loadManagerConfig(argv, env);
  } catch (err) {
    expect(err).toBeInstanceOf(PullmanError);
    expect((err as PullmanError).code).toBe('CONFIG_INVALID');
    return err as PullmanError;
  }
  throw new Error('expected a config error');
};

describe('manager configuration', () => {
  it('has the documented defaults', () => {
    const c = loadManagerConfig([], {});
    expect(c).toMatchObject({ host: '127.0.0.1', port: 8080, heartbeatIntervalMs: 5_000, leaseTtlMs: 30_000, dbSync: 'normal', logLevel: 'info', tls: null });
    expect(c.dbPath).toMatch(/\.pullman\/pullman\.db$/);
    expect(c.adminToken.kind).toBe('generated');
  });

  it('takes flags over environment over defaults', () => {
    const env = { PULLMAN_PORT: '9000', PULLMAN_LEASE_TTL: '1m', PULLMAN_HOST: '10.0.0.4' };
    expect(loadManagerConfig([], env)).toMatchObject({ port: 9000, leaseTtlMs: 60_000, host: '10.0.0.4' });
    expect(loadManagerConfig(['--port', '9001', '--lease-ttl', '90000'], env)).toMatchObject({ port: 9001, leaseTtlMs: 90_000, host: '10.0.0.4' });
  });

  it('names the setting and the bad value', () => {
    expect(configError(['--port', 'abc']).message).toBe('--port / PULLMAN_PORT: "abc" is not a port number (0-65535)');
    expect(configError([], { PULLMAN_PORT: '70000' }).message).toContain('"70000"');
    expect(configError(['--lease-ttl', 'soon']).message).toContain('--lease-ttl / PULLMAN_LEASE_TTL: "soon" is not a duration');
    expect(configError(['--db-sync', 'maybe']).message).toContain('PULLMAN_DB_SYNC: "maybe"');
    expect(configError([], { PULLMAN_LOG_LEVEL: 'loud' }).message).toContain('PULLMAN_LOG_LEVEL: "loud"');
    expect(configError(['--heartbeat-interval', '20s', '--lease-ttl', '30s']).message).toContain('at least twice the heartbeat interval');
    expect(configError(['--tls-cert', '/nonexistent.pem', '--tls-key', '/nonexistent.key']).message).toContain('"/nonexistent.pem" cannot be read');
    expect(configError(['--tls-key', '/x.key']).message).toContain('--tls-cert / PULLMAN_TLS_CERT');
    expect(configError(['--bogus']).message).toContain("unknown option '--bogus'");
    expect(configError([], { PULLMAN_ADMIN_TOKEN_FILE: '/nonexistent/token' }).message).toContain('PULLMAN_ADMIN_TOKEN_FILE: "/nonexistent/token" does not exist');
  });
});

describe('tokens', () => {
  it('generates a 0600 token file on first start and reads it back after', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'pullman-tok-')), 'admin.token');
    const first = loadToken({ kind: 'generated', path });
    expect(first.generated).toBe(true);
    expect(first.token.length).toBeGreaterThanOrEqual(40);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(loadToken({ kind: 'generated', path })).toEqual({ token: first.token, generated: false, path });
  });

  it('reads configured tokens and refuses short ones without echoing them', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'pullman-tok-')), 't');
    writeFileSync(file, 'from-a-file-0123456789\n');
    expect(loadToken({ kind: 'file', path: file, setting: 'PULLMAN_WORKER_TOKEN_FILE' }).token).toBe('from-a-file-0123456789');
    const err = (() => {
      try {
        loadToken({ kind: 'value', value: 'short', setting: 'PULLMAN_ADMIN_TOKEN' });
      } catch (e) {
        return e as Error;
      }
      return null;
    })();
    expect(err?.message).toContain('PULLMAN_ADMIN_TOKEN');
    expect(err?.message).not.toContain('short');
  });

  it('maps bearer tokens to roles', () => {
    const auth = new TokenAuthority({ admin: 'a'.repeat(20), worker: 'w'.repeat(20) });
    expect(auth.roleOf('a'.repeat(20))).toBe('admin');
    expect(auth.roleOf('w'.repeat(20))).toBe('worker');
    expect(auth.roleOf('a'.repeat(19))).toBeNull();
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer   abc  ')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeNull();
    expect(bearerToken(undefined)).toBeNull();
  });
});
