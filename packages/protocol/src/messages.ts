/**
 * The worker channel: JSON text frames over one WebSocket per worker session at GET /v1/worker.
 * docs/protocol.md explains the semantics message by message; the schemas here are the law.
 *
 * Every message has a `type`. Unknown fields are rejected so that a typo in another
 * implementation fails loudly instead of being silently ignored.
 */
import Type, { type Static } from 'typebox';
import { ErrorInfo, Label, TaskSpec, VmFacts } from './schemas.js';

/**
 * The newest protocol version this code speaks. A worker's hello names the newest it speaks, and
 * the manager answers in welcome with the version the session uses: the lower of the two. So
 * either side can be upgraded first from now on, and a feature of version N is used only on
 * sessions that agreed on N or later (docs/protocol.md, "Versions").
 *
 * 1: the first version. 2: adds the `results` message. 3: adds the release reason `unhealthy`
 * and the `health` message. 4: no new message, a promise (TAKE_BACK_SINCE).
 */
export const PROTOCOL_VERSION = 4;

/**
 * From this version a worker promises that its hello lists every lease it holds (tasks it
 * received and is still starting included) and that, after welcome, it re-sends its finished
 * results before its first pull. So at that pull every other lease of its worker id is a task
 * that never reached it (a `tasks` frame lost with a crashed manager or a dropped link), and
 * the manager takes it back at once instead of after a lease TTL. Older workers made neither
 * promise: their first pull could overtake their re-sent results, whose tasks were then requeued
 * and ran again.
 */
export const TAKE_BACK_SINCE = 4;

/** The oldest version the manager still serves; a hello below it is refused. */
export const MIN_PROTOCOL_VERSION = 1;

/** Most results in one `results` message. */
export const MAX_RESULTS_PER_MESSAGE = 1024;

/** Largest frame either side accepts. Results carry two 64 KiB tails and up to 1 MiB of output. */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Limits on what a worker reports, enforced by the manager (and honoured by the worker). */
export const MAX_TAIL_BYTES = 64 * 1024;
export const MAX_OUTPUT_BYTES = 1024 * 1024;

const Id = Type.String({ minLength: 1, maxLength: 128 });
const LeaseRef = Type.Object({ taskId: Id, leaseId: Id }, { additionalProperties: false });
export type LeaseRef = Static<typeof LeaseRef>;

// ---- worker -> manager ---------------------------------------------------------------------

export const HelloMessage = Type.Object({
  type: Type.Literal('hello'),
  /** The newest protocol version the worker speaks. */
  protocol: Type.Integer({ minimum: 1 }),
  /** The id the manager gave this worker before; omitted on first contact. */
  workerId: Type.Optional(Id),
  name: Type.String({ minLength: 1, maxLength: 256 }),
  hostname: Type.String({ minLength: 1, maxLength: 256 }),
  slots: Type.Integer({ minimum: 1, maximum: 65_536 }),
  labels: Type.Array(Label, { maxItems: 64 }),
  version: Type.String({ maxLength: 64 }),
  vm: Type.Union([VmFacts, Type.Null()]),
  /** Leases of tasks still running on this worker, to be resumed after a reconnect. */
  running: Type.Array(LeaseRef, { maxItems: 65_536 }),
}, { additionalProperties: false });
export type HelloMessage = Static<typeof HelloMessage>;

/** Grants `credits` more free slots. Credits are additive; each delivered task consumes its `slots`. */
export const PullMessage = Type.Object({
  type: Type.Literal('pull'),
  credits: Type.Integer({ minimum: 1, maximum: 65_536 }),
}, { additionalProperties: false });
export type PullMessage = Static<typeof PullMessage>;

/** Extends the lease of every task this session holds. */
export const HeartbeatMessage = Type.Object({
  type: Type.Literal('heartbeat'),
}, { additionalProperties: false });
export type HeartbeatMessage = Static<typeof HeartbeatMessage>;

/** What the worker observed when one execution ended. The manager decides success or failure. */
export const ExecutionReport = Type.Object({
  exitCode: Type.Union([Type.Integer(), Type.Null()]),
  signal: Type.Union([Type.String({ maxLength: 32 }), Type.Null()]),
  timedOut: Type.Boolean(),
  cancelled: Type.Boolean(),
  durationMs: Type.Integer({ minimum: 0 }),
  stdoutTail: Type.String({ maxLength: MAX_TAIL_BYTES }),
  stderrTail: Type.String({ maxLength: MAX_TAIL_BYTES }),
  output: Type.Unknown(),
  error: Type.Union([ErrorInfo, Type.Null()]),
}, { additionalProperties: false });
export type ExecutionReport = Static<typeof ExecutionReport>;

/** One execution's result, fenced by its lease: what `result` and each entry of `results` carry. */
const resultFields = { taskId: Id, leaseId: Id, report: ExecutionReport };
export const ResultItem = Type.Object(resultFields, { additionalProperties: false });
export type ResultItem = Static<typeof ResultItem>;

export const ResultMessage = Type.Object({ type: Type.Literal('result'), ...resultFields }, { additionalProperties: false });
export type ResultMessage = Static<typeof ResultMessage>;

/**
 * Several results in one frame (protocol 2). Each entry means exactly what a `result` means and
 * is acked on its own. Why: a frame costs the manager more to receive than the result in it is
 * to settle; a worker whose slots finish together sends them in one frame, as the manager
 * already acks them in one (`acks`). The frame stays within MAX_MESSAGE_BYTES.
 */
export const ResultsMessage = Type.Object({
  type: Type.Literal('results'),
  results: Type.Array(ResultItem, { minItems: 1, maxItems: MAX_RESULTS_PER_MESSAGE }),
}, { additionalProperties: false });
export type ResultsMessage = Static<typeof ResultsMessage>;

export const RELEASE_REASONS = ['drain', 'preempt', 'shutdown', 'cancelled', 'unhealthy'] as const;
export type ReleaseReason = (typeof RELEASE_REASONS)[number];

/** Gives a task back unfinished (drain, preemption, an unhealthy worker). Requeues it without spending a retry. */
export const ReleaseMessage = Type.Object({
  type: Type.Literal('release'),
  taskId: Id,
  leaseId: Id,
  reason: Type.Enum(RELEASE_REASONS),
}, { additionalProperties: false });
export type ReleaseMessage = Static<typeof ReleaseMessage>;

/** The worker started draining on its own (SIGTERM, a Scheduled Event): stop sending it work. */
export const DrainingMessage = Type.Object({
  type: Type.Literal('draining'),
  reason: Type.String({ maxLength: 256 }),
}, { additionalProperties: false });
export type DrainingMessage = Static<typeof DrainingMessage>;

/** Longest `health.problem`; a longer one is cut by the worker. */
export const MAX_PROBLEM_LENGTH = 1024;

/**
 * (Since 3.) Why the worker takes no work although connected (its work dir cannot hold a task),
 * or null once it takes work again. Sent when that changes, and after welcome while it holds:
 * a new session starts healthy.
 */
export const HealthMessage = Type.Object({
  type: Type.Literal('health'),
  problem: Type.Union([Type.String({ minLength: 1, maxLength: MAX_PROBLEM_LENGTH }), Type.Null()]),
}, { additionalProperties: false });
export type HealthMessage = Static<typeof HealthMessage>;

/** The worker leaves for good; the manager marks it gone. */
export const ByeMessage = Type.Object({
  type: Type.Literal('bye'),
}, { additionalProperties: false });
export type ByeMessage = Static<typeof ByeMessage>;

export const WorkerMessage = Type.Union([HelloMessage, PullMessage, HeartbeatMessage, ResultMessage, ResultsMessage, ReleaseMessage, DrainingMessage, HealthMessage, ByeMessage]);
export type WorkerMessage = Static<typeof WorkerMessage>;

/**
 * The version that introduced each worker message and release reason; the rest are in version
 * 1. A session that agreed on an older version must not send them: the one table both sides
 * read, the manager to refuse them (tooNewFor) and the worker to fall back.
 */
const MESSAGE_SINCE: Partial<Record<WorkerMessage['type'], number>> = { results: 2, health: 3 };
const RELEASE_REASON_SINCE: Partial<Record<ReleaseReason, number>> = { unhealthy: 3 };

export function messageSince(type: WorkerMessage['type']): number {
  return MESSAGE_SINCE[type] ?? 1;
}

export function releaseReasonSince(reason: ReleaseReason): number {
  return RELEASE_REASON_SINCE[reason] ?? 1;
}

/** What in `msg` a session of `version` may not send yet (`results`, `release reason …`), and since when; else null. */
export function tooNewFor(msg: WorkerMessage, version: number): { what: string; since: number } | null {
  const since = messageSince(msg.type);
  if (since > version) return { what: msg.type, since };
  if (msg.type === 'release' && releaseReasonSince(msg.reason) > version) return { what: `release reason ${msg.reason}`, since: releaseReasonSince(msg.reason) };
  return null;
}

// ---- manager -> worker ---------------------------------------------------------------------

export const WelcomeMessage = Type.Object({
  type: Type.Literal('welcome'),
  /** The version this session speaks: the lower of hello's and the manager's newest. */
  protocol: Type.Integer({ minimum: 1 }),
  workerId: Id,
  sessionId: Id,
  heartbeatIntervalMs: Type.Integer({ minimum: 1 }),
  leaseTtlMs: Type.Integer({ minimum: 1 }),
  /** Task ids from hello.running whose leases this session now holds. */
  resumed: Type.Array(Id),
  /** Task ids from hello.running whose leases are gone: stop them and drop their results. */
  lost: Type.Array(Id),
}, { additionalProperties: false });
export type WelcomeMessage = Static<typeof WelcomeMessage>;

export const TaskAssignment = Type.Object({
  taskId: Id,
  jobId: Id,
  key: Type.Union([Type.String(), Type.Null()]),
  attempt: Type.Integer({ minimum: 1 }),
  leaseId: Id,
  spec: TaskSpec,
}, { additionalProperties: false });
export type TaskAssignment = Static<typeof TaskAssignment>;

/** One or more leased tasks. Their slots add up to no more than the credits outstanding. */
export const TasksMessage = Type.Object({
  type: Type.Literal('tasks'),
  tasks: Type.Array(TaskAssignment, { minItems: 1 }),
}, { additionalProperties: false });
export type TasksMessage = Static<typeof TasksMessage>;

export const ACK_STATUSES = ['recorded', 'stale'] as const;
export type AckStatus = (typeof ACK_STATUSES)[number];

/**
 * Answers a result or release after the commit. `stale` means the lease was no longer the
 * task's current one: nothing changed, and the worker must drop the result all the same.
 */
export const AckMessage = Type.Object({
  type: Type.Literal('ack'),
  taskId: Id,
  leaseId: Id,
  status: Type.Enum(ACK_STATUSES),
}, { additionalProperties: false });
export type AckMessage = Static<typeof AckMessage>;

/**
 * Several acks at once: the manager sends this instead of single `ack`s when a group commit
 * settles more than one report for the same worker. Each entry means exactly what `ack` means.
 */
export const AcksMessage = Type.Object({
  type: Type.Literal('acks'),
  acks: Type.Array(Type.Object({ taskId: Id, leaseId: Id, status: Type.Enum(ACK_STATUSES) }, { additionalProperties: false }), { minItems: 1 }),
}, { additionalProperties: false });
export type AcksMessage = Static<typeof AcksMessage>;

/** Kill this task's process group; its lease is already void. */
export const CancelMessage = Type.Object({
  type: Type.Literal('cancel'),
  taskId: Id,
  leaseId: Id,
}, { additionalProperties: false });
export type CancelMessage = Static<typeof CancelMessage>;

/** Stop pulling, finish or release running tasks, flush results, say bye. */
export const DrainMessage = Type.Object({
  type: Type.Literal('drain'),
}, { additionalProperties: false });
export type DrainMessage = Static<typeof DrainMessage>;

/** A protocol error; the manager closes the socket after sending it when `fatal`. */
export const ErrorMessage = Type.Object({
  type: Type.Literal('error'),
  code: Type.String(),
  message: Type.String(),
  fatal: Type.Boolean(),
}, { additionalProperties: false });
export type ErrorMessage = Static<typeof ErrorMessage>;

export const ManagerMessage = Type.Union([WelcomeMessage, TasksMessage, AckMessage, AcksMessage, CancelMessage, DrainMessage, ErrorMessage]);
export type ManagerMessage = Static<typeof ManagerMessage>;

/** WebSocket close codes the manager uses (4000-4999 are free for applications). */
export const CLOSE_CODES = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 4400,
  unauthorized: 4401,
  replaced: 4409,
  silent: 4408,
} as const;
