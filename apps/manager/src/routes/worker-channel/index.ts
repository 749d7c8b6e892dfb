import type { FastifyPluginAsync } from 'fastify';
import { PullmanError } from '@pullman/protocol';

/**
 * GET /v1/worker upgrades to the worker channel (docs/protocol.md); needs the worker token.
 *
 * Declared with `wsHandler` plus a plain `handler` rather than `websocket: true`: the latter
 * hides the route from the OpenAPI document and answers a non-upgrade GET with an empty 404.
 * This way the route is documented and a plain GET gets the usual error body.
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
};

export default workerChannelRoutes;
