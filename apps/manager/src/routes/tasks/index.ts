import type { FastifyPluginAsync } from 'fastify';
import { PullmanError, Task } from '@pullman/protocol';
import { IdParams, errorResponses, taskSeqOf } from '../params.js';

const taskRoutes: FastifyPluginAsync = async (app) => {
  const { store, committer, gateway, metrics } = app.pullman;

  app.get('/tasks/:id', {
    schema: { summary: 'Get a task with its attempt history', tags: ['tasks'], params: IdParams, response: { 200: Task, ...errorResponses(404) } },
  }, async (request) => {
    const id = (request.params as { id: string }).id;
    const task = store.getTask(taskSeqOf(id));
    if (!task) throw new PullmanError('TASK_NOT_FOUND', `task ${id} does not exist`);
    return task;
  });

  app.post('/tasks/:id/cancel', {
    schema: { summary: 'Cancel a task (a running one is killed on its worker); terminal tasks are unchanged', tags: ['tasks'], params: IdParams, response: { 200: Task, ...errorResponses(404) } },
  }, async (request) => {
    const taskSeq = taskSeqOf((request.params as { id: string }).id);
    const { task, toCancel, wasLive } = await committer.run(() => {
      const before = store.getTask(taskSeq, false)?.state;
      return { ...store.cancelTask(taskSeq), wasLive: before === 'queued' || before === 'running' };
    });
    if (toCancel) gateway.cancelLeases([toCancel]);
    if (wasLive) metrics.tasksEnded('cancelled', 1);
    return task;
  });
};

export default taskRoutes;
