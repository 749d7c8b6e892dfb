/**
 * Wire types shared by the manager, the worker, the client and the CLI.
 *
 * Each TypeBox schema validates at the edges (HTTP bodies via fastify/ajv, worker-channel
 * messages via the compiled validators in validate.ts) and documents the API in OpenAPI.
 * The TS type next to each schema is derived from it, so the two cannot drift.
 */
import Type, { type Static } from 'typebox';

/** Duration as a string (`500ms`, `30s`, `5m`, `2h`) or integer milliseconds. */
export const Duration = Type.Union([Type.String({ pattern: '^\\s*(\\d+|\\d+(\\.\\d+)?(ms|s|m|h))\\s*$', maxLength: 32 }), Type.Integer({ minimum: 0 })], {
  description: 'A duration: "500ms", "30s", "5m", "2h", or integer milliseconds.',
});

export const Label = Type.String({ pattern: '^[A-Za-z0-9_.:/=-]{1,64}$', description: 'A worker label (letters, digits, _ . : / = -).' });

/** ISO 8601 timestamp. */
const Time = Type.String({ format: 'date-time' });
const NullableTime = Type.Union([Time, Type.Null()]);

export const TaskSpecFields = {
  key: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'Unique within the job; a repeated key is counted as a duplicate and ignored.' })),
  command: Type.Optional(Type.Array(Type.String({ maxLength: 65_536 }), { minItems: 1, maxItems: 4_096, description: 'argv, executed without a shell.' })),
  shell: Type.Optional(Type.String({ minLength: 1, maxLength: 262_144, description: 'Run by /bin/sh -c.' })),
  env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 256 }), Type.String({ maxLength: 65_536 }), { additionalProperties: false, description: 'Merged over the worker environment.' })),
  cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4_096, description: 'Working directory; default is a fresh scratch directory per attempt.' })),
  timeout: Type.Optional(Duration),
  retries: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, description: 'Re-runs after a failed execution (non-zero exit or timeout).' })),
  priority: Type.Optional(Type.Integer({ minimum: -1_000_000, maximum: 1_000_000, description: 'Higher runs first, then FIFO.' })),
  slots: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_024, description: 'Worker slots the task occupies.' })),
  requires: Type.Optional(Type.Array(Label, { maxItems: 64, description: 'Labels the worker must carry.' })),
  meta: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'Opaque JSON, kept with the task; nested at most 2,000 levels.' })),
};

export const TaskSpec = Type.Object(TaskSpecFields, {
  additionalProperties: false,
  description: 'One unit of work. Exactly one of `command` and `shell` is required.',
});
export type TaskSpec = Static<typeof TaskSpec>;

/** Job defaults: any TaskSpec field except the per-task identity `key`. */
export const TaskDefaults = Type.Object(
  (({ key: _key, ...rest }) => rest)(TaskSpecFields),
  { additionalProperties: false, description: 'Fields merged under every task of the job (env maps are merged key by key).' },
);
export type TaskDefaults = Static<typeof TaskDefaults>;

export const TASK_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type TaskState = (typeof TASK_STATES)[number];
export const TaskStateSchema = Type.Enum(TASK_STATES);
export const TERMINAL_TASK_STATES = ['succeeded', 'failed', 'cancelled'] as const satisfies readonly TaskState[];

export const JOB_STATES = ['active', 'succeeded', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const JobStateSchema = Type.Enum(JOB_STATES);

/**
 * `ready` and `busy` (some slots used) take work; `unhealthy` is connected but takes none until
 * its `problem` is fixed; `draining` finishes its tasks and leaves; `offline` lost its session
 * and may come back; `gone` will not.
 */
export const WORKER_STATES = ['ready', 'busy', 'unhealthy', 'draining', 'offline', 'gone'] as const;
export type WorkerState = (typeof WORKER_STATES)[number];
export const WorkerStateSchema = Type.Enum(WORKER_STATES);

/**
 * How one attempt ended. `lost` and `released` are infrastructure outcomes: they never spend
 * a retry. `running` marks the attempt in progress.
 */
export const ATTEMPT_OUTCOMES = ['running', 'succeeded', 'failed', 'timed-out', 'lost', 'released', 'cancelled'] as const;
export type AttemptOutcome = (typeof ATTEMPT_OUTCOMES)[number];

export const ErrorInfo = Type.Object({ code: Type.String(), message: Type.String() }, { additionalProperties: false });
export type ErrorInfo = Static<typeof ErrorInfo>;

export const TaskResult = Type.Object({
  exitCode: Type.Union([Type.Integer(), Type.Null()]),
  signal: Type.Union([Type.String(), Type.Null()]),
  durationMs: Type.Integer({ minimum: 0 }),
  stdoutTail: Type.String(),
  stderrTail: Type.String(),
  output: Type.Unknown({ description: 'JSON the task wrote to $PULLMAN_OUTPUT, or null.' }),
  error: Type.Union([ErrorInfo, Type.Null()]),
});
export type TaskResult = Static<typeof TaskResult>;

export const Attempt = Type.Object({
  attempt: Type.Integer({ minimum: 1 }),
  workerId: Type.Union([Type.String(), Type.Null()]),
  startedAt: Time,
  endedAt: NullableTime,
  outcome: Type.Enum(ATTEMPT_OUTCOMES),
  exitCode: Type.Union([Type.Integer(), Type.Null()]),
  error: Type.Union([ErrorInfo, Type.Null()]),
});
export type Attempt = Static<typeof Attempt>;

export const Task = Type.Object({
  id: Type.String(),
  jobId: Type.String(),
  key: Type.Union([Type.String(), Type.Null()]),
  state: TaskStateSchema,
  priority: Type.Integer(),
  slots: Type.Integer(),
  spec: TaskSpec,
  attempts: Type.Integer({ description: 'Executions started so far.' }),
  createdAt: Time,
  startedAt: NullableTime,
  finishedAt: NullableTime,
  workerId: Type.Union([Type.String(), Type.Null()]),
  result: Type.Union([TaskResult, Type.Null()], {
    description: "The last reported execution's result. A task that is queued for a retry, or was cancelled after a failed attempt, keeps that attempt's (its stderr tail says why it failed); `state` and `history` tell which. Null until an execution is reported, except for a task failed as WORKER_LOST, whose result carries only that error.",
  }),
  history: Type.Optional(Type.Array(Attempt)),
});
export type Task = Static<typeof Task>;

export const JobCounts = Type.Object({
  queued: Type.Integer(),
  running: Type.Integer(),
  succeeded: Type.Integer(),
  failed: Type.Integer(),
  cancelled: Type.Integer(),
  total: Type.Integer(),
});
export type JobCounts = Static<typeof JobCounts>;

export const Job = Type.Object({
  id: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  state: JobStateSchema,
  sealed: Type.Boolean(),
  createdAt: Time,
  finishedAt: NullableTime,
  counts: JobCounts,
});
export type Job = Static<typeof Job>;

/** Facts about the Azure VM a worker runs on; null off Azure. */
export const VmFacts = Type.Object({
  vmId: Type.String(),
  resourceId: Type.String(),
  scaleSet: Type.Union([Type.String(), Type.Null()]),
  instanceId: Type.Union([Type.String(), Type.Null()]),
  name: Type.String(),
  vmSize: Type.String(),
  location: Type.String(),
  zone: Type.Union([Type.String(), Type.Null()]),
  priority: Type.Union([Type.String(), Type.Null()]),
  provisioningState: Type.Union([Type.String(), Type.Null()]),
}, { additionalProperties: false });
export type VmFacts = Static<typeof VmFacts>;

export const Worker = Type.Object({
  id: Type.String(),
  name: Type.String(),
  hostname: Type.String(),
  state: WorkerStateSchema,
  slots: Type.Integer(),
  usedSlots: Type.Integer(),
  labels: Type.Array(Type.String()),
  vm: Type.Union([VmFacts, Type.Null()]),
  version: Type.String(),
  problem: Type.Union([Type.String(), Type.Null()], { description: 'Why a connected worker takes no work (state unhealthy), as the worker reported it; else null.' }),
  connectedAt: NullableTime,
  lastHeartbeatAt: NullableTime,
  tasksSucceeded: Type.Integer(),
  tasksFailed: Type.Integer(),
});
export type Worker = Static<typeof Worker>;

// ---- HTTP request and response bodies ----------------------------------------------------

/** Most tasks accepted in one JSON body; larger submissions stream NDJSON. */
export const MAX_TASKS_PER_JSON_BODY = 10_000;

export const CreateJobBody = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  defaults: Type.Optional(TaskDefaults),
  tasks: Type.Optional(Type.Array(TaskSpec, { maxItems: MAX_TASKS_PER_JSON_BODY })),
  open: Type.Optional(Type.Boolean({ description: 'Keep the job unsealed so more tasks can be added.' })),
}, { additionalProperties: false });
export type CreateJobBody = Static<typeof CreateJobBody>;

export const AddTasksJsonBody = Type.Object({
  tasks: Type.Array(TaskSpec, { maxItems: MAX_TASKS_PER_JSON_BODY }),
}, { additionalProperties: false });
export type AddTasksJsonBody = Static<typeof AddTasksJsonBody>;

export const SubmitResult = Type.Object({ accepted: Type.Integer(), duplicates: Type.Integer() });
export type SubmitResult = Static<typeof SubmitResult>;

export const RetryBody = Type.Object({
  state: Type.Optional(Type.Union([Type.Literal('failed'), Type.Literal('cancelled')])),
}, { additionalProperties: false });
export type RetryBody = Static<typeof RetryBody>;

export const RetryResult = Type.Object({ requeued: Type.Integer() });

export const JobList = Type.Object({ jobs: Type.Array(Job), nextCursor: Type.Union([Type.String(), Type.Null()]) });
export type JobList = Static<typeof JobList>;
export const TaskList = Type.Object({ tasks: Type.Array(Task), nextCursor: Type.Union([Type.String(), Type.Null()]) });
export type TaskList = Static<typeof TaskList>;
export const WorkerList = Type.Object({ workers: Type.Array(Worker) });
export type WorkerList = Static<typeof WorkerList>;

/** One line of GET /v1/jobs/:id/results. */
export const ResultLine = Type.Object({
  taskId: Type.String(),
  key: Type.Union([Type.String(), Type.Null()]),
  state: TaskStateSchema,
  exitCode: Type.Union([Type.Integer(), Type.Null()]),
  output: Type.Unknown(),
  durationMs: Type.Union([Type.Integer(), Type.Null()]),
  attempts: Type.Integer(),
  error: Type.Union([ErrorInfo, Type.Null()]),
});
export type ResultLine = Static<typeof ResultLine>;

export const ErrorResponse = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String() }),
}, { description: 'Every error answer has this shape.' });

export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000, default: 100 })),
  cursor: Type.Optional(Type.String({ maxLength: 64 })),
};
