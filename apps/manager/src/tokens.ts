import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { PullmanError } from '@pullman/protocol';
import type { TokenSource } from './config.js';

export type Role = 'admin' | 'worker';

/** Shortest token accepted from configuration: anything shorter is guessable. */
const MIN_TOKEN_LENGTH = 16;

/**
 * Resolves a token: the configured value, the configured file, or the file in the data dir,
 * generated on first start with mode 0600. Returns the token and where it came from.
 */
export function loadToken(source: TokenSource): { token: string; generated: boolean; path: string | null } {
  switch (source.kind) {
    case 'value':
      return { token: checkToken(source.setting, source.value), generated: false, path: null };
    case 'file':
      return { token: checkToken(source.setting, readFileSync(source.path, 'utf8').trim()), generated: false, path: source.path };
    case 'generated': {
      try {
        return { token: checkToken(source.path, readFileSync(source.path, 'utf8').trim()), generated: false, path: source.path };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      mkdirSync(dirname(source.path), { recursive: true });
      const token = randomBytes(32).toString('base64url');
      // 'wx' fails if another process created the file meanwhile, rather than clobbering it.
      writeFileSync(source.path, `${token}\n`, { mode: 0o600, flag: 'wx' });
      chmodSync(source.path, 0o600);
      return { token, generated: true, path: source.path };
    }
  }
}

function checkToken(setting: string, token: string): string {
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new PullmanError('CONFIG_INVALID', `${setting}: the token must be at least ${MIN_TOKEN_LENGTH} characters with no whitespace (value not shown)`);
  }
  return token;
}

/**
 * Matches bearer tokens to roles in constant time. Both sides are hashed first so the
 * comparison has a fixed length and leaks neither content nor length.
 */
export class TokenAuthority {
  private readonly digests: ReadonlyArray<[Role, Buffer]>;

  constructor(tokens: Record<Role, string>) {
    this.digests = [
      ['admin', sha256(tokens.admin)],
      ['worker', sha256(tokens.worker)],
    ];
  }

  /** Returns the role of a presented token, or null. */
  roleOf(presented: string): Role | null {
    const digest = sha256(presented);
    let role: Role | null = null;
    // Compare against every role without early exit, so timing does not reveal which matched.
    for (const [r, d] of this.digests) if (timingSafeEqual(d, digest) && role === null) role = r;
    return role;
  }
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Extracts the token from `Authorization: Bearer <token>`, or null. */
export function bearerToken(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? m[1]! : null;
}
