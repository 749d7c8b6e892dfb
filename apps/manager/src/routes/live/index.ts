import type { FastifyPluginAsync } from 'fastify';
import Type from 'typebox';
import { LiveHub } from '../../live.js';
import { errorResponses } from '../params.js';

/** Server-sent events stop being written to a client whose socket buffer holds this much. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/**
 * GET /v1/events: the dashboard's live feed as server-sent events, behind the admin token like
 * every /v1 route. Browsers read it with fetch() (which can send the Authorization header, where
 * EventSource cannot), so the token never appears in a URL.
 */
const liveRoutes: FastifyPluginAsync = async (app) => {
  const { store, metrics } = app.pullman;
  const hub = new LiveHub(store, metrics.throughput);
  const open = new Set<() => void>();

  // Open streams would hold app.close() forever: end them first.
  app.addHook('preClose', async () => {
    for (const end of [...open]) end();
    hub.close();
  });

  app.get('/events', {
    schema: {
      summary: 'Live updates for the dashboard (text/event-stream): `hello` once, then a `tick` every second with task, job and worker counts, throughput, and the jobs that changed',
      tags: ['live'],
      produces: ['text/event-stream'],
      response: { 200: { content: { 'text/event-stream': { schema: Type.String({ description: 'event: hello|tick, data: JSON' }) } } }, ...errorResponses() },
    },
  }, (request, reply) => {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no', // nginx and friends: do not buffer the stream
      connection: 'keep-alive',
    });
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      unsubscribe();
      open.delete(end);
      res.end();
    };
    open.add(end);
    const unsubscribe = hub.subscribe((e) => {
      // A client that stopped reading misses ticks instead of growing our memory; each tick
      // carries full counts and recently changed jobs, so the next ones bring it up to date.
      if (res.writableLength > MAX_BUFFERED_BYTES) return;
      res.write(`event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`);
    });
    res.on('close', end);
    request.log.info({ watchers: hub.subscriberCount }, 'live feed opened');
  });
};

export default liveRoutes;
