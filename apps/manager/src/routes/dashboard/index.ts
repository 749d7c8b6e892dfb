import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { PullmanError } from '@pullman/protocol';

/** The built dashboard's files and their types; nothing else is served from the directory. */
const ASSETS: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
  'favicon.svg': 'image/svg+xml',
  'app.js.map': 'application/json',
};

// The page loads only its own script and style and talks only to this origin.
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

/**
 * Where the build put the dashboard: `dist/dashboard` next to the compiled routes, or, when the
 * manager runs from its TypeScript sources (the unit tests), the same folder under dist.
 */
export function dashboardDir(): string | null {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const candidates = [join(here, '../../dashboard'), join(here, '../../../dist/dashboard')];
  return candidates.find((d) => existsSync(join(d, 'index.html')) && existsSync(join(d, 'app.js'))) ?? null;
}

/**
 * The web dashboard: static files, public (no token). Everything it shows comes from the
 * authenticated /v1 API and /v1/events, with the token the user types into its login form.
 */
const dashboardRoutes: FastifyPluginAsync = async (app) => {
  const dir = dashboardDir();
  // Read once: the files are small and never change while the manager runs.
  const files = new Map<string, Buffer>();
  if (dir) for (const name of Object.keys(ASSETS)) if (existsSync(join(dir, name))) files.set(name, readFileSync(join(dir, name)));

  const send = (reply: FastifyReply, name: string) => {
    const body = files.get(name);
    if (!body) throw new PullmanError('ROUTE_NOT_FOUND', dir ? `no dashboard file ${name}` : 'the dashboard is not built; run `npm run build`');
    return reply.headers(SECURITY_HEADERS).type(ASSETS[name]!).send(body);
  };

  const hidden = { config: { role: 'public' as const }, schema: { hide: true } };
  app.get('/', hidden, async (_request, reply) => send(reply, 'index.html'));
  app.get('/dashboard/:file', hidden, async (request, reply) => send(reply, (request.params as { file: string }).file));
};

export default dashboardRoutes;
