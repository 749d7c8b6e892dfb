/**
 * The manager as a fastify plugin. `server.ts` owns the process (config, listen, signals);
 * tests register this plugin on their own instance and never need a port.
 *
 * Load order matters: infrastructure (errors, validation, content types, docs, websocket)
 * first, then the services decorated onto the instance, then routes by domain.
 */
import type { Server as HttpsServer } from 'node:https';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyHttpsOptions, type FastifyInstance, type FastifyPluginAsync, type FastifyServerOptions } from 'fastify';
import fp from 'fastify-plugin';
import websocket from '@fastify/websocket';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { Compile } from 'typebox/compile';
import type { TSchema } from 'typebox';
import { MAX_MESSAGE_BYTES, PullmanError, describeFirstError } from '@pullman/protocol';
import type { TaskStore } from '@pullman/store';
import { GroupCommitter } from './committer.js';
import { WorkerGateway } from './gateway.js';
import { createMetrics, type ManagerMetrics } from './metrics.js';
import { Reaper } from './reaper.js';
import { TokenAuthority } from './tokens.js';
import { NDJSON_CONTENT_TYPE } from './ndjson.js';
import { errorHandler, notFoundHandler } from './plugins/errors.js';
import { AuthFailureLimiter, createAuthHook, type AuthLimitOptions } from './plugins/auth.js';
import jobRoutes from './routes/jobs/index.js';
import taskRoutes from './routes/tasks/index.js';
import workerRoutes from './routes/workers/index.js';
import systemRoutes from './routes/system/index.js';
import dashboardRoutes from './routes/dashboard/index.js';
import liveRoutes from './routes/live/index.js';
import workerChannelRoutes from './routes/worker-channel/index.js';

/** Largest JSON body: 10,000 tasks of a few hundred bytes each, with room to spare. */
export const JSON_BODY_LIMIT = 32 * 1024 * 1024;

export interface AppOptions {
  store: TaskStore;
  tokens: { admin: string; worker: string };
  heartbeatIntervalMs: number;
  leaseTtlMs: number;
  /** Run the lease reaper on a timer (tests drive it by hand with `pullman.reaper.tick()`). */
  startReaper?: boolean;
  version?: string;
  /** Wall clock for session liveness and worker state; tests pass the store's fake clock. */
  now?: () => number;
  /** The worker bundle served at GET /v1/worker/bundle; unset answers 404 there. */
  workerBundle?: string;
  /** Limits on failed authentication per client address (plugins/auth.ts). */
  authLimit?: AuthLimitOptions;
}

/** What the routes reach through `app.pullman`. */
export interface PullmanServices {
  store: TaskStore;
  committer: GroupCommitter;
  gateway: WorkerGateway;
  reaper: Reaper;
  metrics: ManagerMetrics;
  auth: TokenAuthority;
  version: string;
  /** Path of the worker bundle file, or null when none is configured. */
  workerBundle: string | null;
}

declare module 'fastify' {
  interface FastifyInstance {
    pullman: PullmanServices;
  }
  interface FastifyContextConfig {
    /** Which token may call the route; `public` routes need none. Default: admin. */
    role?: 'admin' | 'worker' | 'public';
  }
}

const pullmanApp: FastifyPluginAsync<AppOptions> = async (app, o) => {
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);
  app.setValidatorCompiler(({ schema, httpPart }) => validatorFor(schema as TSchema, httpPart ?? 'body'));

  // Empty bodies on action routes (POST .../seal with Content-Type: application/json) are
  // common from scripts; treat them as no body instead of failing JSON parsing.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: JSON_BODY_LIMIT }, (req, body, done) => {
    if (body === '' || (typeof body === 'string' && body.trim() === '')) return done(null, undefined);
    parseJson(req, body as string, done);
  });
  // NDJSON is streamed to the handler untouched: a million-line upload is never buffered.
  app.addContentTypeParser(NDJSON_CONTENT_TYPE, (_req, payload, done) => done(null, payload));
  // No route takes plain text: without this, fastify's default text/plain parser turned an
  // NDJSON upload sent as text/plain into a misleading 400 "body: must be object" instead of 415.
  app.removeContentTypeParser('text/plain');

  await app.register(swagger, {
    openapi: {
      info: { title: 'Pullman manager API', version: o.version ?? '0.0.0', description: 'Jobs of tasks in, results out. The worker channel is documented in docs/protocol.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(websocket, { options: { maxPayload: MAX_MESSAGE_BYTES } });

  const { store } = o;
  const committer = new GroupCommitter(store, (err) => app.log.error({ err }, 'a group commit callback failed'));
  const metrics = createMetrics(store);
  const gateway = new WorkerGateway({ store, committer, log: app.log, metrics, heartbeatIntervalMs: o.heartbeatIntervalMs, leaseTtlMs: o.leaseTtlMs, ...(o.now ? { now: o.now } : {}) });
  const reaper = new Reaper({ store, committer, gateway, metrics, log: app.log, leaseTtlMs: o.leaseTtlMs, ...(o.now ? { now: o.now } : {}) });
  app.decorate('pullman', { store, committer, gateway, reaper, metrics, auth: new TokenAuthority(o.tokens), version: o.version ?? '0.0.0', workerBundle: o.workerBundle ?? null });

  // Request durations by route pattern (`/v1/jobs/:id`), never the raw URL: ids would explode
  // the label set. Hijacked streams (the live feed, worker sockets) never reach onResponse.
  app.addHook('onResponse', async (request, reply) => metrics.httpRequest(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000));

  app.addHook('onReady', async () => {
    if (o.startReaper !== false) reaper.start();
  });
  // Shutdown order: stop taking work, close worker sessions (they keep their leases and
  // reconnect to the next manager), then commit whatever is pending.
  app.addHook('preClose', async () => {
    reaper.stop();
    gateway.close();
  });
  app.addHook('onClose', async () => {
    committer.close();
  });

  await app.register(systemRoutes);
  await app.register(dashboardRoutes);
  await app.register(async (v1) => {
    v1.addHook('onRequest', createAuthHook(new AuthFailureLimiter(app.log, o.authLimit)));
    await v1.register(jobRoutes);
    await v1.register(taskRoutes);
    await v1.register(workerRoutes);
    await v1.register(liveRoutes);
    await v1.register(workerChannelRoutes);
  }, { prefix: '/v1' });
};

export const app = fp(pullmanApp, { name: 'pullman-manager', fastify: '5.x' });

/** Server options shared by the real server and the tests. */
export function serverOptions(logger: FastifyServerOptions['logger'] | FastifyBaseLogger): FastifyServerOptions {
  const isInstance = typeof logger === 'object' && logger !== null && typeof (logger as FastifyBaseLogger).child === 'function';
  return {
    ...(isInstance ? { loggerInstance: logger as FastifyBaseLogger } : { logger: logger as FastifyServerOptions['logger'] }),
    bodyLimit: JSON_BODY_LIMIT,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // Request ids in logs make a 4xx traceable from a client's report.
    requestIdHeader: 'x-request-id',
    // Errors the router raises before any route runs (a path parameter over maxParamLength, a
    // malformed URL) get the same {"error":{"code","message"}} shape as everything else.
    frameworkErrors: (err, request, reply) => errorHandler(err as FastifyError, request, reply),
  };
}

/** Builds a ready app instance (no port). Used by tests and by server.ts. */
export async function buildApp(options: AppOptions & { logger?: FastifyServerOptions['logger'] | FastifyBaseLogger; https?: { cert: Buffer; key: Buffer } | null }): Promise<FastifyInstance> {
  const base = serverOptions(options.logger ?? false);
  // The https and http instances differ only in their raw server type; routes never see it.
  const instance = options.https
    ? (Fastify({ ...base, https: options.https } as FastifyHttpsOptions<HttpsServer>) as unknown as FastifyInstance)
    : Fastify(base);
  await instance.register(app, options);
  await instance.ready();
  return instance;
}

/**
 * Compiles a route schema with TypeBox. Bodies are checked strictly (no coercion, unknown
 * fields rejected); query strings and path params are strings on the wire, so they are
 * converted to the schema's types first.
 */
function validatorFor(schema: TSchema, httpPart: string) {
  const validator = Compile(schema);
  const coerce = httpPart === 'querystring' || httpPart === 'params' || httpPart === 'headers';
  const root = httpPart === 'querystring' ? 'query' : httpPart;
  return (data: unknown) => {
    const value = coerce ? validator.Convert(data) : data;
    if (validator.Check(value)) return { value };
    return { error: new PullmanError('INVALID_INPUT', describeFirstError(validator.Errors(value), root)) };
  };
}
