import { Readable } from 'node:stream';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import Type from 'typebox';
import {
  AddTasksJsonBody,
  CreateJobBody,
  Job,
  JobList,
  JobStateSchema,
  PageQuery,
  PullmanError,
  RetryBody,
  RetryResult,
  SubmitResult,
  TaskList,
  TaskSpec,
  TaskStateSchema,
  checkJsonDepth,
  compileChecker,
  resolveTaskSpec,
  type JobState,
  type TaskDefaults,
  type TaskState,
  type TaskSpec as TaskSpecT,
} from '@pullman/protocol';
import { HOT } from '../../committer.js';
import { NDJSON_CONTENT_TYPE, ndjsonLines } from '../../ndjson.js';
import { IdParams, errorResponses, jobSeqOf } from '../params.js';

/** Tasks committed per transaction while streaming NDJSON: big enough to amortise the commit. */
const NDJSON_BATCH = 1_000;
/** Result lines read from SQLite per page while streaming results. */
const RESULTS_PAGE = 1_000;

const checkAddTasksJson = compileChecker(AddTasksJsonBody, 'INVALID_INPUT', 'body');

const jobRoutes: FastifyPluginAsync = async (app) => {
  const { store, committer, gateway, metrics } = app.pullman;

  app.post('/jobs', {
    schema: {
      summary: 'Create a job, optionally with its tasks (up to 10,000; stream more as NDJSON)',
      tags: ['jobs'],
      body: CreateJobBody,
      response: { 201: Job, ...errorResponses(400, 413) },
    },
  }, async (request, reply) => {
    const body = (request.body ?? {}) as Type.Static<typeof CreateJobBody>;
    checkJsonDepth(body.defaults?.meta, 'defaults.meta'); // stored even when no task uses it
    const tasks = (body.tasks ?? []).map((t, i) => resolveTaskSpec(t, body.defaults, `tasks.${i}`));
    // Waiting workers get their tasks from the same commit (gateway.submit).
    const { job } = await gateway.submit((handoff) => store.createJob({ name: body.name, defaults: body.defaults, open: body.open, tasks }, handoff));
    request.log.info({ jobId: job.id, tasks: job.counts.total, sealed: job.sealed }, 'job created');
    return reply.status(201).send(job);
  });

  app.post('/jobs/:id/tasks', {
    schema: {
      summary: 'Add tasks to an open job: NDJSON (one TaskSpec per line, any count, streamed) or {"tasks":[...]}',
      tags: ['jobs'],
      params: IdParams,
      body: {
        content: {
          [NDJSON_CONTENT_TYPE]: { schema: Type.Unknown({ description: 'One TaskSpec JSON object per line' }) },
          'application/json': { schema: Type.Unknown({ description: '{"tasks": TaskSpec[]} (up to 10,000)' }) },
        },
      },
      response: { 200: SubmitResult, ...errorResponses(400, 404, 409, 413, 415) },
    },
  }, async (request) => {
    const jobSeq = jobSeqOf((request.params as { id: string }).id);
    // A stream needs the defaults (and a 404 or 409) before it is read.
    if (request.headers['content-type']?.startsWith(NDJSON_CONTENT_TYPE)) return submitNdjson(request, jobSeq, store.submissionDefaults(jobSeq));
    const tasks = checkAddTasksJson.parse(request.body).tasks;
    // The defaults are applied inside the commit, from the job row submitTasks reads anyway.
    return gateway.submit((handoff) => store.submitTasks(jobSeq, (defaults) => tasks.map((t, i) => resolveTaskSpec(t, defaults, `tasks.${i}`)), handoff), HOT);
  });

  /**
   * Streams NDJSON into the queue in batches of NDJSON_BATCH, one commit each. Memory stays
   * flat whatever the upload size. A bad line stops the upload with 400; the batches before it
   * are committed (resubmitting the fixed file is safe when tasks have keys).
   */
  async function submitNdjson(request: FastifyRequest, jobSeq: number, defaults: TaskDefaults | undefined) {
    const stream = request.body as Readable;
    let accepted = 0;
    let duplicates = 0;
    let batch: TaskSpecT[] = [];
    const flush = async () => {
      const specs = batch;
      batch = [];
      // Workers start on the first batches while the rest of the upload streams in.
      const r = await gateway.submit((handoff) => store.submitTasks(jobSeq, specs, handoff), HOT);
      accepted += r.accepted;
      duplicates += r.duplicates;
    };
    try {
      for await (const { text, lineNo } of ndjsonLines(stream)) {
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch {
          throw new PullmanError('INVALID_INPUT', `line ${lineNo}: not valid JSON`);
        }
        const spec = checkLine(value, lineNo);
        batch.push(resolveTaskSpec(spec, defaults, `line ${lineNo}`));
        if (batch.length >= NDJSON_BATCH) await flush();
      }
      if (batch.length) await flush();
    } catch (err) {
      stream.resume(); // discard the rest so the client reads our answer instead of a reset
      if (err instanceof PullmanError && accepted + duplicates > 0) {
        throw new PullmanError(err.code, `${err.message} (${accepted} tasks before it were accepted, ${duplicates} duplicates)`);
      }
      throw err;
    }
    return { accepted, duplicates };
  }

  app.post('/jobs/:id/seal', {
    schema: { summary: 'Seal a job: no more tasks; it finishes when all its tasks are terminal', tags: ['jobs'], params: IdParams, response: { 200: Job, ...errorResponses(404) } },
  }, async (request) => {
    const jobSeq = jobSeqOf((request.params as { id: string }).id);
    return committer.run(() => store.sealJob(jobSeq));
  });

  app.get('/jobs', {
    schema: {
      summary: 'List jobs, newest first',
      tags: ['jobs'],
      querystring: Type.Object({ state: Type.Optional(JobStateSchema), ...PageQuery }, { additionalProperties: false }),
      response: { 200: JobList, ...errorResponses(400) },
    },
  }, async (request) => {
    const q = request.query as { state?: JobState; limit?: number; cursor?: string };
    const page = store.listJobs({ state: q.state, limit: q.limit ?? 100, cursor: q.cursor });
    return { jobs: page.items, nextCursor: page.nextCursor };
  });

  app.get('/jobs/:id', {
    schema: { summary: 'Get a job with its task counts', tags: ['jobs'], params: IdParams, response: { 200: Job, ...errorResponses(404) } },
  }, async (request) => {
    const id = (request.params as { id: string }).id;
    const job = store.getJob(jobSeqOf(id));
    if (!job) throw new PullmanError('JOB_NOT_FOUND', `job ${id} does not exist`);
    return job;
  });

  app.get('/jobs/:id/tasks', {
    schema: {
      summary: "List a job's tasks in submission order",
      tags: ['jobs'],
      params: IdParams,
      querystring: Type.Object({ state: Type.Optional(TaskStateSchema), ...PageQuery }, { additionalProperties: false }),
      response: { 200: TaskList, ...errorResponses(400, 404) },
    },
  }, async (request) => {
    const q = request.query as { state?: TaskState; limit?: number; cursor?: string };
    const page = store.listTasks(jobSeqOf((request.params as { id: string }).id), { state: q.state, limit: q.limit ?? 100, cursor: q.cursor });
    return { tasks: page.items, nextCursor: page.nextCursor };
  });

  app.get('/jobs/:id/results', {
    schema: {
      summary: 'Results of terminal tasks as NDJSON: {taskId,key,state,exitCode,output,durationMs,attempts,error} per line',
      tags: ['jobs'],
      params: IdParams,
      produces: [NDJSON_CONTENT_TYPE],
      response: { 200: { content: { [NDJSON_CONTENT_TYPE]: { schema: Type.String() } } }, ...errorResponses(404) },
    },
  }, async (request, reply) => {
    const id = (request.params as { id: string }).id;
    const jobSeq = jobSeqOf(id);
    if (!store.getJob(jobSeq)) throw new PullmanError('JOB_NOT_FOUND', `job ${id} does not exist`);
    // Keyset pages keep each read short, so a million-line download never holds a read
    // transaction open or the whole result set in memory.
    async function* lines() {
      let after = 0;
      for (;;) {
        const page = store.resultsPage(jobSeq, after, RESULTS_PAGE);
        if (page.lines.length === 0) return;
        yield page.lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
        after = page.lastSeq!;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    return reply.type(NDJSON_CONTENT_TYPE).send(Readable.from(lines()));
  });

  app.post('/jobs/:id/cancel', {
    schema: { summary: 'Cancel a job: queued tasks are cancelled, running ones killed on their workers', tags: ['jobs'], params: IdParams, response: { 200: Job, ...errorResponses(404) } },
  }, async (request) => {
    const jobSeq = jobSeqOf((request.params as { id: string }).id);
    const { job, toCancel, cancelled } = await committer.run(() => {
      const before = store.getJob(jobSeq)?.counts.cancelled ?? 0;
      const r = store.cancelJob(jobSeq);
      return { ...r, cancelled: r.job.counts.cancelled - before };
    });
    gateway.cancelLeases(toCancel);
    metrics.tasksEnded('cancelled', cancelled);
    request.log.info({ jobId: job.id, killed: toCancel.length }, 'job cancelled');
    return job;
  });

  app.post('/jobs/:id/retry', {
    schema: {
      summary: "Requeue a job's failed (or cancelled) tasks with a fresh retry budget",
      tags: ['jobs'],
      params: IdParams,
      body: Type.Optional(RetryBody),
      response: { 200: RetryResult, ...errorResponses(400, 404) },
    },
    // The body is optional (`pullman retry JOB` sends none): validate an absent body as {}.
    preValidation: async (request) => {
      if (request.body === undefined) request.body = {};
    },
  }, async (request) => {
    const jobSeq = jobSeqOf((request.params as { id: string }).id);
    const state = (request.body as { state?: 'failed' | 'cancelled' } | undefined)?.state ?? 'failed';
    const requeued = await committer.run(() => store.retryJob(jobSeq, state));
    metrics.requeued('manual', requeued);
    if (requeued) gateway.kick();
    return { requeued };
  });
};

function checkLine(value: unknown, lineNo: number): TaskSpecT {
  return lineCheckers.parse(value, `line ${lineNo}`);
}

/** TaskSpec checker whose messages name the NDJSON line. */
const lineCheckers = (() => {
  const cache = compileChecker(TaskSpec, 'INVALID_INPUT', 'line');
  return {
    parse(value: unknown, where: string): TaskSpecT {
      try {
        return cache.parse(value);
      } catch (err) {
        if (err instanceof PullmanError) throw new PullmanError(err.code, err.message.replace(/^line/, where));
        throw err;
      }
    },
  };
})();

export default jobRoutes;
