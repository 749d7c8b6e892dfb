/**
 * Where the admin token comes from, first match wins (CONTRACT.md):
 * `--token`, PULLMAN_TOKEN, PULLMAN_TOKEN_FILE, else `./.pullman/admin.token` when it exists
 * (the file a manager started in this directory generates).
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { CliError, EXIT } from './errors.js';

export const TOKEN_HINT = 'pass --token, or set PULLMAN_TOKEN or PULLMAN_TOKEN_FILE (the manager writes it to <data-dir>/admin.token)';
export const DEFAULT_TOKEN_FILE = '.pullman/admin.token';

/** `flagOrEnv` is commander's value for --token, which already falls back to PULLMAN_TOKEN. */
export function resolveToken(flagOrEnv: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string {
  if (flagOrEnv !== undefined && flagOrEnv.trim() !== '') return flagOrEnv.trim();
  if (env.PULLMAN_TOKEN_FILE) return readTokenFile(env.PULLMAN_TOKEN_FILE, 'PULLMAN_TOKEN_FILE');
  const local = resolve(cwd, DEFAULT_TOKEN_FILE);
  if (existsSync(local)) return readTokenFile(local, DEFAULT_TOKEN_FILE);
  throw new CliError(`no admin token: ${TOKEN_HINT}, or run where ./${DEFAULT_TOKEN_FILE} exists`, EXIT.CONNECTION_OR_AUTH);
}

function readTokenFile(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new CliError(`${what}: ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, EXIT.CONNECTION_OR_AUTH);
  }
  const token = text.trim();
  if (!token) throw new CliError(`${what}: ${path} is empty`, EXIT.CONNECTION_OR_AUTH);
  return token;
}
