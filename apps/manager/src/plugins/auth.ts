/**
 * Bearer-token auth for /v1. Each route declares the role it needs in `config.role`
 * (default admin). Tokens are matched in constant time and never logged.
 *
 * Failed authentication (no token, or a token that matches no role: 401) is counted per client
 * address in a fixed window. Past `maxFailures` in one window, every request from that address
 * that needs a token is answered 429 RATE_LIMITED (with Retry-After) until the window ends,
 * valid token or not: otherwise a guesser would learn from a 200 that a guess was right, and the
 * limit would cost it nothing. Failures are logged once per address per window, with the count
 * of the previous window, never once per attempt, so a flood cannot flood the log. WebSocket
 * upgrades of the worker channel pass through this same hook, so they are limited alike.
 */
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { PullmanError } from '@pullman/protocol';
import { bearerToken } from '../tokens.js';

export interface AuthLimitOptions {
  /** Failed attempts allowed per address per window; the next ones get 429. Default 50. */
  maxFailures?: number;
  /** Window length in milliseconds. Default 60 s. */
  windowMs?: number;
  /** Addresses tracked at once; the oldest are forgotten first. Default 10,000. */
  maxAddresses?: number;
  now?: () => number;
}

interface AddressState {
  windowStart: number;
  failures: number;
}

/** Per-address failure counts for one manager instance. */
export class AuthFailureLimiter {
  private readonly entries = new Map<string, AddressState>();
  private readonly maxFailures: number;
  private readonly windowMs: number;
  private readonly maxAddresses: number;
  private readonly now: () => number;

  constructor(
    private readonly log: FastifyBaseLogger,
    o: AuthLimitOptions = {},
  ) {
    this.maxFailures = o.maxFailures ?? 50;
    this.windowMs = o.windowMs ?? 60_000;
    this.maxAddresses = o.maxAddresses ?? 10_000;
    this.now = o.now ?? Date.now;
  }

  /** Milliseconds until `ip` may try again, or 0 if it is not limited. */
  blockedFor(ip: string): number {
    const e = this.entries.get(ip);
    if (!e) return 0;
    const left = e.windowStart + this.windowMs - this.now();
    if (left <= 0) return 0;
    return e.failures >= this.maxFailures ? left : 0;
  }

  /** Counts one failed attempt; logs the first of each window. */
  fail(ip: string, code: string, reason: string): void {
    const now = this.now();
    let e = this.entries.get(ip);
    let previous = 0;
    if (e && now - e.windowStart >= this.windowMs) {
      previous = e.failures;
      this.entries.delete(ip);
      e = undefined;
    }
    if (!e) {
      this.makeRoom(now);
      e = { windowStart: now, failures: 0 };
      this.entries.set(ip, e);
      this.log.warn(
        { ip, code, reason, previousWindowFailures: previous, maxFailures: this.maxFailures, windowMs: this.windowMs },
        'authentication failed; further failures from this address in this window are counted, not logged',
      );
    }
    e.failures++;
  }

  private makeRoom(now: number): void {
    if (this.entries.size < this.maxAddresses) return;
    for (const [ip, e] of this.entries) if (now - e.windowStart >= this.windowMs) this.entries.delete(ip);
    // Still full: forget the oldest windows (Map iterates in insertion order).
    for (const ip of this.entries.keys()) {
      if (this.entries.size < this.maxAddresses) break;
      this.entries.delete(ip);
    }
  }
}

/** The onRequest hook for /v1, bound to one limiter. */
export function createAuthHook(limiter: AuthFailureLimiter) {
  return async function authHook(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const needed = request.routeOptions.config.role ?? 'admin';
    if (needed === 'public') return;
    const blockedMs = limiter.blockedFor(request.ip);
    if (blockedMs > 0) {
      void reply.header('retry-after', String(Math.ceil(blockedMs / 1000)));
      throw new PullmanError('RATE_LIMITED', `too many failed authentication attempts from ${request.ip}; retry in ${Math.ceil(blockedMs / 1000)}s`);
    }
    const token = bearerToken(request.headers.authorization);
    if (token === null) {
      limiter.fail(request.ip, 'UNAUTHORIZED', 'missing bearer token');
      throw new PullmanError('UNAUTHORIZED', 'missing bearer token (Authorization: Bearer <token>)');
    }
    const role = request.server.pullman.auth.roleOf(token);
    if (role === null) {
      limiter.fail(request.ip, 'UNAUTHORIZED', 'invalid token');
      throw new PullmanError('UNAUTHORIZED', 'invalid token');
    }
    if (role !== needed) throw new PullmanError('FORBIDDEN', `this route needs the ${needed} token, not the ${role} token`);
  };
}
