import type { FastifyPluginAsync } from 'fastify';
import { PullmanError, Worker, WorkerList } from '@pullman/protocol';
import { IdParams, errorResponses } from '../params.js';

const workerRoutes: FastifyPluginAsync = async (app) => {
  const { store, gateway } = app.pullman;

  app.get('/workers', {
    schema: { summary: 'List workers, including offline and gone ones', tags: ['workers'], response: { 200: WorkerList, ...errorResponses() } },
  }, async () => ({ workers: store.listWorkers() }));

  app.get('/workers/:id', {
    schema: { summary: 'Get a worker', tags: ['workers'], params: IdParams, response: { 200: Worker, ...errorResponses(404) } },
  }, async (request) => {
    const id = (request.params as { id: string }).id;
    const worker = store.getWorker(id);
    if (!worker) throw new PullmanError('WORKER_NOT_FOUND', `worker ${id} does not exist`);
    return worker;
  });

  app.post('/workers/:id/drain', {
    schema: {
      summary: 'Drain a worker: no new work; running tasks finish or are released; then it leaves',
      tags: ['workers'],
      params: IdParams,
      response: { 200: Worker, ...errorResponses(404) },
    },
  }, async (request) => {
    const id = (request.params as { id: string }).id;
    const worker = store.getWorker(id);
    if (!worker) throw new PullmanError('WORKER_NOT_FOUND', `worker ${id} does not exist`);
    if (worker.state !== 'gone') await gateway.drainWorker(id);
    request.log.info({ workerId: id }, 'drain requested');
    return store.getWorker(id)!;
  });
};

export default workerRoutes;
