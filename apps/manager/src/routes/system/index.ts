import type { FastifyPluginAsync } from 'fastify';
import Type from 'typebox';

const systemRoutes: FastifyPluginAsync = async (app) => {
  app.get('/healthz', {
    config: { role: 'public' },
    schema: { summary: 'Liveness: 200 while the manager can read its database', tags: ['system'], security: [], response: { 200: Type.Object({ status: Type.Literal('ok') }) } },
  }, async () => {
    app.pullman.store.hasQueued(); // touches SQLite: a broken database fails the probe
    return { status: 'ok' as const };
  });

  app.get('/metrics', {
    config: { role: 'public' },
    schema: { summary: 'Prometheus metrics', tags: ['system'], security: [], produces: ['text/plain'] },
  }, async (_request, reply) => {
    const { registry } = app.pullman.metrics;
    return reply.type(registry.contentType).send(await registry.metrics());
  });
};

export default systemRoutes;
