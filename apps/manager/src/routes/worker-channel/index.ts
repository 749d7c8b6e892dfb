import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { FastifyPluginAsync } from 'fastify';
import { PullmanError } from '@pullman/protocol';

/**
 * The worker's routes, both under the worker token:
 *
 * GET /v1/worker upgrades to the worker channel (docs/protocol.md).
 * Declared with `wsHandler` plus a plain `handler` rather than `websocket: true`: the latter
 * hides the route from the OpenAPI document and answers a non-upgrade GET with an empty 404.
 * This way the route is documented and a plain GET gets the usual error body.
 *
 * GET /v1/worker/bundle serves the single-file worker (`pullman-worker.cjs`), so a VM's
 * cloud-init downloads the worker from the manager it will work for and needs no other hosting.
 */
const workerChannelRoutes: FastifyPluginAsync = async (app) => {
  app.route({
    method: 'GET',
    url: '/worker',
    config: { role: 'worker' },
    schema: { summary: 'WebSocket upgrade to the worker channel (see docs/protocol.md)', tags: ['workers'] },
    handler: async () => {
      throw new PullmanError('INVALID_INPUT', 'GET /v1/worker is the worker channel: connect with a WebSocket upgrade');
    },
    wsHandler: (socket, request) => {
      app.pullman.gateway.attach(socket, request.ip);
    },
  });

  // The ETag is the file's SHA-256, computed once per (size, mtime) of the file, so a rebuilt
  // or replaced bundle is noticed without restarting the manager.
  let cached: { key: string; etag: string } | null = null;
  const etagOf = async (path: string, size: number, mtimeMs: number): Promise<string> => {
    const key = `${path}:${size}:${mtimeMs}`;
    if (cached?.key === key) return cached.etag;
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    cached = { key, etag: `"sha256-${hash.digest('base64url')}"` };
    return cached.etag;
  };

  app.get('/worker/bundle', {
    config: { role: 'worker' },
    schema: {
      summary: 'The single-file worker bundle (pullman-worker.cjs) for VMs to download at boot',
      tags: ['workers'],
      produces: ['application/javascript'],
    },
  }, async (request, reply) => {
    const path = app.pullman.workerBundle;
    const missing = () => new PullmanError('WORKER_BUNDLE_NOT_FOUND', `this manager has no worker bundle${path ? ` at ${path}` : ''}: build it with \`npm run build\` or set --worker-bundle / PULLMAN_WORKER_BUNDLE`);
    if (!path) throw missing();
    let info;
    try {
      info = await stat(path);
    } catch {
      throw missing();
    }
    if (!info.isFile()) throw missing();
    const etag = await etagOf(path, info.size, info.mtimeMs);
    void reply
      .header('etag', etag)
      .header('x-pullman-version', app.pullman.version)
      .header('cache-control', 'no-cache');
    if (request.headers['if-none-match'] === etag) return reply.status(304).send();
    return reply
      .type('application/javascript; charset=utf-8')
      .header('content-length', info.size)
      .header('content-disposition', 'attachment; filename="pullman-worker.cjs"')
      .send(createReadStream(path));
  });
};

export default workerChannelRoutes;
