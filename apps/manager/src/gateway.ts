/**
 * The worker channel: one WebSocket session per connected worker, credit-based dispatch,
 * fenced results, cancel and drain. docs/protocol.md describes the wire; this file is the
 * manager's side of it.
 *
 * The manager holds no tasks in memory. A session is an id, a socket, labels and a credit
 * count; tasks are claimed from SQLite the moment credits and queued work meet, and sent.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import {
  CLOSE_CODES,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
  PullmanError,
  TAKE_BACK_SINCE,
  WorkerMessage,
  compileChecker,
  jsonDepthProblem,
  jsonDepthWithin,
  parseTaskId,
  tooNewFor,
  sendFrames,
  type HelloMessage,
  type AckStatus,
  type ManagerMessage,
  type ResultItem,
  type TaskState,
  type WorkerMessage as WorkerMessageT,
} from '@pullman/protocol';
import type { ClaimRequest, ClaimedTask, LeaseToCancel, LostTasks, ReportItem, ReportOutcome, SubmitOutcome, TaskStore } from '@pullman/store';
import { HOT, type GroupCommitter } from './committer.js';
import type { ManagerMetrics } from './metrics.js';

const checkMessage = compileChecker(WorkerMessage, 'PROTOCOL_ERROR', 'message');

/** Most tasks claimed for one session per dispatch round; keeps one claim from hogging a turn. */
const MAX_TASKS_PER_CLAIM = 64;

/** The life of a session on the manager: before hello, serving, or closed. */
type SessionPhase = 'awaiting-hello' | 'active' | 'closed';

interface Session {
  readonly id: string;
  readonly socket: WebSocket;
  readonly remote: string;
  phase: SessionPhase;
  /** The protocol version agreed at hello (the lower of the worker's and ours). */
  protocol: number;
  workerId: string | null;
  name: string;
  labels: string[];
  /** Free slots the worker has granted and not yet been sent work for. */
  credits: number;
  draining: boolean;
  /** Last claim found nothing that fits; skip until new work or new credits arrive. */
  starved: boolean;
  /** Its first pull came, and with it the take-back of leases the worker does not hold. */
  tookBack: boolean;
  /**
   * The worker gave a task back as `unhealthy` or reported a problem: it gets no work until it
   * reports `health` null. Its credits stay its own and are used again then.
   */
  unhealthy: boolean;
  claiming: boolean;
  lastSeenAt: number;
  /** Acks settled by the current group commit, sent together at the end of the turn. */
  pendingAcks: Array<{ taskId: string; leaseId: string; status: AckStatus }>;
  /** Frames for this worker, written together (one syscall) at the end of the turn. */
  outbox: string[];
}

export interface GatewayOptions {
  store: TaskStore;
  committer: GroupCommitter;
  log: FastifyBaseLogger;
  metrics: ManagerMetrics;
  heartbeatIntervalMs: number;
  leaseTtlMs: number;
  now?: () => number;
}

export class WorkerGateway {
  private readonly sessions = new Map<string, Session>();
  private readonly byWorker = new Map<string, Session>();
  private dispatchScheduled = false;
  /** Results received this turn, settled together by the next group commit. */
  private results: Array<{ session: Session; item: ReportItem; msg: ResultItem }> = [];
  private closing = false;
  private readonly now: () => number;

  constructor(private readonly o: GatewayOptions) {
    this.now = o.now ?? Date.now;
    o.committer.afterWrites(() => {
      if (!this.dispatchScheduled) return;
      this.dispatchScheduled = false;
      this.dispatch();
    });
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Adopts a freshly upgraded socket. The first message must be hello. */
  attach(socket: WebSocket, remote: string): void {
    if (this.closing) {
      socket.close(CLOSE_CODES.goingAway, 'manager shutting down');
      return;
    }
    const session: Session = {
      id: randomUUID(),
      socket,
      remote,
      phase: 'awaiting-hello',
      protocol: MIN_PROTOCOL_VERSION,
      workerId: null,
      name: '',
      labels: [],
      credits: 0,
      draining: false,
      starved: false,
      tookBack: false,
      unhealthy: false,
      claiming: false,
      lastSeenAt: this.now(),
      pendingAcks: [],
      outbox: [],
    };
    this.sessions.set(session.id, session);
    socket.on('message', (data, isBinary) => {
      session.lastSeenAt = this.now();
      if (isBinary) return this.protocolError(session, 'binary frames are not part of the protocol');
      let msg: WorkerMessageT;
      try {
        msg = checkMessage.parse(JSON.parse(data.toString()));
      } catch (err) {
        const text = err instanceof PullmanError ? err.message : `message: not JSON (${(err as Error).message})`;
        return this.protocolError(session, text);
      }
      this.handle(session, msg).catch((err: unknown) => this.internalError(session, err));
    });
    socket.on('close', () => this.onClose(session));
    socket.on('error', (err) => this.o.log.warn({ err, sessionId: session.id }, 'worker socket error'));
  }

  /**
   * Wakes the dispatcher after something may have queued work (submission, retry, requeue).
   * Cheap and idempotent: many kicks in one turn cause one dispatch round.
   */
  kick(): void {
    for (const s of this.sessions.values()) s.starved = false;
    this.scheduleDispatch();
  }

  /** Tells the workers running these tasks to kill them (their leases are already void). */
  cancelLeases(leases: readonly LeaseToCancel[]): void {
    for (const l of leases) {
      const s = this.byWorker.get(l.workerId);
      if (s) this.send(s, { type: 'cancel', taskId: l.taskId, leaseId: l.leaseId });
    }
  }

  /** Asks a worker to drain: it gets no more work, finishes or releases what it runs, leaves. */
  async drainWorker(workerId: string): Promise<void> {
    await this.o.committer.run(() => this.o.store.setWorkerState(workerId, 'draining'));
    const s = this.byWorker.get(workerId);
    if (s) {
      s.draining = true;
      this.send(s, { type: 'drain' });
    }
  }

  /** Sessions silent for longer than the lease TTL: close them (their leases then expire). */
  closeSilentSessions(): number {
    const cutoff = this.now() - this.o.leaseTtlMs;
    let closed = 0;
    for (const s of this.sessions.values()) {
      if (s.phase !== 'closed' && s.lastSeenAt < cutoff) {
        this.o.log.warn({ workerId: s.workerId, sessionId: s.id }, 'worker silent past the lease TTL; closing its session');
        s.socket.terminate();
        this.onClose(s);
        closed++;
      }
    }
    return closed;
  }

  /** Closes every session (manager shutdown). Workers keep their leases and reconnect. */
  close(): void {
    this.closing = true;
    for (const s of this.sessions.values()) this.closeSession(s, CLOSE_CODES.goingAway, 'manager shutting down');
  }

  // ---- message handling ----------------------------------------------------------------------

  private async handle(s: Session, msg: WorkerMessageT): Promise<void> {
    if (s.phase === 'closed') return;
    this.o.metrics.workerMessage(msg.type);
    if (s.phase === 'awaiting-hello') {
      if (msg.type !== 'hello') return this.protocolError(s, `expected hello first, got ${msg.type}`);
      return this.onHello(s, msg);
    }
    const workerId = s.workerId!;
    const tooNew = tooNewFor(msg, s.protocol);
    if (tooNew) return this.protocolError(s, `${tooNew.what} needs protocol ${tooNew.since}; this session speaks ${s.protocol}`);
    switch (msg.type) {
      case 'hello':
        return this.protocolError(s, 'hello was already received on this session');
      case 'pull':
        s.credits += msg.credits;
        s.starved = false;
        if (!s.tookBack) this.takeBackUnheld(s);
        this.scheduleDispatch();
        return;
      case 'heartbeat':
        await this.o.committer.run(() => this.o.store.extendLeases({ workerId, sessionId: s.id }), HOT);
        return;
      case 'result':
      case 'results': {
        const items = msg.type === 'result' ? [msg] : msg.results;
        // An output the schema accepts (any JSON) but the store could not serialise: the whole
        // message is refused before any of it is queued, as a protocol error of this session
        // alone, instead of failing the group commit it would join.
        const deep = items.findIndex((r) => !jsonDepthWithin(r.report.output));
        if (deep >= 0) {
          const where = msg.type === 'result' ? 'message.report.output' : `message.results.${deep}.report.output`;
          return this.protocolError(s, jsonDepthProblem(items[deep]!.report.output, where)!);
        }
        for (const r of items) this.queueResult(s, workerId, r);
        return;
      }
      case 'release': {
        // Before the release commits: the requeued task must not go straight back to this
        // worker on the credits it still has here. It did, once per credit, until it failed
        // WORKER_LOST on a worker with more slots than a task has losses.
        if (msg.reason === 'unhealthy') s.unhealthy = true;
        const taskSeq = parseTaskId(msg.taskId);
        const outcome = await this.o.committer.run(() => {
          // Shown as unhealthy too, even by a worker that never says why in `health`.
          if (msg.reason === 'unhealthy') this.o.store.noteWorkerProblem(workerId, 'gave a task back as unhealthy');
          return taskSeq === null ? { status: 'stale' as const } : this.o.store.releaseTask(workerId, { taskSeq, leaseId: msg.leaseId }, msg.reason);
        });
        this.ack(s, msg.taskId, msg.leaseId, outcome.status);
        // A release past MAX_LOSSES fails the task (WORKER_LOST) instead of requeueing it.
        if (outcome.status === 'recorded') this.countLosses('released', { requeued: outcome.requeued ? 1 : 0, failed: outcome.requeued ? 0 : 1 });
        return;
      }
      case 'health':
        // A problem stops dispatch at once; its end only once stored, so that the session and
        // what the API shows agree if the commit fails (the worker re-sends its health then).
        if (msg.problem !== null) s.unhealthy = true;
        await this.o.committer.run(() => this.o.store.setWorkerProblem(workerId, msg.problem));
        if (msg.problem === null && s.unhealthy) {
          s.unhealthy = false;
          s.starved = false;
          this.scheduleDispatch();
        }
        if (msg.problem === null) this.o.log.info({ workerId }, 'worker takes work again');
        else this.o.log.warn({ workerId, problem: msg.problem }, 'worker takes no work: it reports a problem');
        return;
      case 'draining':
        s.draining = true;
        await this.o.committer.run(() => this.o.store.setWorkerState(workerId, 'draining'));
        this.o.log.info({ workerId, reason: msg.reason }, 'worker draining');
        return;
      case 'bye': {
        s.phase = 'closed';
        this.forget(s);
        const lost = await this.o.committer.run(() => {
          this.o.store.setWorkerState(workerId, 'gone');
          return this.o.store.requeueWorkerTasks(workerId, 'worker said bye while holding the task');
        });
        this.o.log.info({ workerId, ...lost }, 'worker said bye');
        this.countLosses('worker-gone', lost);
        this.closeSession(s, CLOSE_CODES.normal, 'bye');
        return;
      }
    }
  }

  private async onHello(s: Session, hello: HelloMessage): Promise<void> {
    if (hello.protocol < MIN_PROTOCOL_VERSION) {
      return this.protocolError(s, `protocol ${hello.protocol} is no longer supported; this manager speaks ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`);
    }
    // A newer worker is served at our newest version; it falls back to what welcome says.
    s.protocol = Math.min(hello.protocol, PROTOCOL_VERSION);
    s.phase = 'active';
    const { workerId, resumed, lost } = await this.o.committer.run(() => {
      const id = this.o.store.registerWorker(hello, s.id);
      const leases = hello.running.map((r) => ({ taskSeq: parseTaskId(r.taskId), taskId: r.taskId, leaseId: r.leaseId }));
      return { workerId: id, ...this.o.store.resumeLeases({ workerId: id, sessionId: s.id }, leases) };
    });
    if (s.phase !== 'active') return; // closed while registering
    // One live session per worker: a reconnect replaces a half-open old socket.
    const previous = this.byWorker.get(workerId);
    if (previous && previous !== s) {
      // Its old socket, half-open, or another process with the same id (containers from one
      // image with a fixed hostname): the latter still runs what it holds, so nothing it holds
      // may be taken back as unheld.
      s.tookBack = true;
      previous.phase = 'closed';
      this.sessions.delete(previous.id);
      this.closeSession(previous, CLOSE_CODES.replaced, 'replaced by a newer session of the same worker');
    }
    s.workerId = workerId;
    s.name = hello.name;
    s.labels = hello.labels;
    this.byWorker.set(workerId, s);
    this.send(s, {
      type: 'welcome',
      protocol: s.protocol,
      workerId,
      sessionId: s.id,
      heartbeatIntervalMs: this.o.heartbeatIntervalMs,
      leaseTtlMs: this.o.leaseTtlMs,
      resumed,
      lost,
    });
    this.o.log.info({ workerId, name: hello.name, protocol: s.protocol, slots: hello.slots, labels: hello.labels, resumed: resumed.length, lost: lost.length, remote: s.remote }, 'worker connected');
    if (s.credits > 0) this.scheduleDispatch(); // granted before welcome
  }

  private onClose(s: Session): void {
    if (!this.sessions.has(s.id)) return;
    const wasActive = s.phase === 'active';
    s.phase = 'closed';
    this.forget(s);
    if (wasActive && s.workerId && !this.closing) {
      const workerId = s.workerId;
      // Leases stay with the worker until their TTL: a quick reconnect resumes them.
      this.o.committer.run(() => this.o.store.setWorkerState(workerId, 'offline')).catch((err: unknown) => this.o.log.error({ err }, 'could not mark worker offline'));
      this.o.log.info({ workerId }, 'worker disconnected');
    }
  }

  private forget(s: Session): void {
    this.sessions.delete(s.id);
    if (s.workerId && this.byWorker.get(s.workerId) === s) this.byWorker.delete(s.workerId);
  }

  // ---- results -------------------------------------------------------------------------------

  /**
   * Queues a result for the next group commit. All results that arrive in one turn, from every
   * worker, are settled by one store call (settleReports) in that commit.
   *
   * Why: settling them one by one ran five statements and a promise per result; batched, a
   * flush of 128 results runs a handful of statements (docs/benchmarks.md, proposal 2).
   */
  private queueResult(s: Session, workerId: string, msg: ResultItem): void {
    const taskSeq = parseTaskId(msg.taskId);
    if (taskSeq === null) return this.settled(s, msg, { status: 'stale' });
    this.results.push({ session: s, item: { workerId, lease: { taskSeq, leaseId: msg.leaseId }, report: msg.report }, msg });
    if (this.results.length > 1) return; // the op queued by the first result takes this one too
    const batch = this.results;
    // Results arriving after this batch was taken start the next one. Done in the op and again
    // in the callback: when an earlier op of the flush aborts the transaction (disk full), the op
    // never runs, and a batch left in place would swallow every later result.
    const close = () => {
      if (this.results === batch) this.results = [];
    };
    this.o.committer.runThen(() => {
      close();
      return this.o.store.settleReports(batch.map((r) => r.item));
    }, (o) => {
      close();
      if (!o.ok) {
        // Nothing in the batch is stored. Each worker is told; its result stays in its outbox.
        for (const session of new Set(batch.map((r) => r.session))) {
          // Re-sent later, perhaps after the session's first pull: a take-back then would find
          // those finished tasks' leases unheld and run them again.
          session.tookBack = true;
          this.internalError(session, o.error);
        }
        return;
      }
      const finished: Array<{ state: TaskState; durationMs: number }> = [];
      batch.forEach((r, i) => {
        const outcome = o.value[i]!;
        if (outcome.status === 'recorded') finished.push({ state: outcome.taskState, durationMs: r.msg.report.durationMs });
        // One worker's trouble must not cost the others their acks.
        this.guard(r.session, () => this.settled(r.session, r.msg, outcome));
      });
      this.o.metrics.tasksFinished(finished);
    }, HOT);
  }

  /** Runs one session's part of a batch callback; an exception is logged against that session. */
  private guard(s: Session, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.o.log.error({ err, workerId: s.workerId, sessionId: s.id }, 'worker channel callback failed');
    }
  }

  private settled(s: Session, msg: ResultItem, outcome: ReportOutcome): void {
    this.ack(s, msg.taskId, msg.leaseId, outcome.status);
    if (outcome.status === 'recorded') {
      if (outcome.requeued) this.kick();
    } else {
      this.o.log.info({ workerId: s.workerId, taskId: msg.taskId }, 'stale result dropped (lease no longer current)');
    }
  }

  // ---- dispatch ------------------------------------------------------------------------------

  /**
   * Queues a submission for the next group commit. `op` stores the tasks (store.submitTasks or
   * createJob) and is given the sessions that wait for work, to hand tasks straight to; those go
   * out right after the commit, as a claim's do, and the rest wait for the next dispatch round.
   * Resolves with what `op` returned, once committed.
   *
   * Why: at idle, a submitted task used to be queued, then found and leased by a claim in the
   * same commit: two more statements and index moves on the way to a waiting worker, ~40% of
   * the store's share of the idle latency (docs/benchmarks.md).
   */
  submit<T extends SubmitOutcome>(op: (handoff: ClaimRequest[]) => T, options: { savepoint?: boolean } = {}): Promise<Omit<T, 'handed'>> {
    return new Promise((resolve, reject) => {
      const takers: Array<{ s: Session; offered: number; tasks: ClaimedTask[] }> = [];
      let at = 0;
      this.o.committer.runThen(
        () => {
          const waiting = [...this.sessions.values()].filter((s) => this.waitsForWork(s));
          const outcome = op(waiting.map((s) => this.claimRequest(s, s.credits)));
          at = this.now();
          let handed = 0;
          outcome.handed.forEach((tasks, i) => {
            const s = waiting[i]!;
            if (tasks === null) {
              // Something queued may fit it: it claims, in this commit's dispatch round, even
              // if its last claim found nothing (this submission may not kick anyone).
              s.starved = false;
              this.scheduleDispatch();
              return;
            }
            s.claiming = true; // the dispatch round of this commit passes it over
            takers.push({ s, offered: s.credits, tasks });
            handed += tasks.length;
          });
          // Tasks left in the queue: a dispatch round joins this commit (committer.afterWrites).
          if (outcome.accepted > handed) this.kick();
          return outcome;
        },
        (o) => {
          for (const { s, offered, tasks } of takers) {
            this.guard(s, () => {
              s.claiming = false;
              if (!o.ok) return;
              if (tasks.length > 0) return this.deliver(s, offered, tasks, at);
              // Dealt nothing (or only a duplicate): not proof of starvation; a claim will tell.
              this.scheduleDispatch();
            });
          }
          if (!o.ok) return reject(o.error);
          const { handed: _handed, ...rest } = o.value;
          resolve(rest);
        },
        options,
      );
    });
  }

  /**
   * At a session's first pull, takes back the worker's leases of other sessions: tasks it never
   * received (claimed for a session that died before their frame left: a manager crash, a
   * dropped link), instead of leaving them to expire after a lease TTL. Why at the first pull,
   * and only on sessions of TAKE_BACK_SINCE or later: by then the worker has listed what it
   * holds (hello) and re-sent its finished results, and their settle op was queued when they
   * arrived, before this one, so it runs first in the same commit. A task taken back here was
   * not on the worker. A session forgoes it (tookBack set beforehand) when a result batch of
   * its failed to commit, or when its hello replaced a session still open.
   */
  private takeBackUnheld(s: Session): void {
    s.tookBack = true;
    const workerId = s.workerId;
    // Pulled before its registration committed (against the protocol): no promise to rely on.
    if (s.protocol < TAKE_BACK_SINCE || workerId === null) return;
    this.o.committer
      .run(() => this.o.store.requeueUnheld({ workerId, sessionId: s.id }))
      .then((lost) => {
        if (lost.requeued + lost.failed === 0) return;
        this.o.log.info({ workerId, ...lost }, 'took back the leases the reconnected worker does not hold');
        this.countLosses('not-on-worker', lost);
      })
      .catch((err: unknown) => this.o.log.error({ err, workerId }, 'could not requeue the leases the worker does not hold; they expire after the lease TTL'));
  }

  /** Counts tasks taken back from a worker: the requeued ones, and those failed WORKER_LOST. */
  private countLosses(reason: 'released' | 'worker-gone' | 'not-on-worker' | 'undelivered', lost: LostTasks): void {
    this.o.metrics.requeued(reason, lost.requeued);
    this.o.metrics.tasksEnded('failed', lost.failed);
    if (lost.requeued > 0) this.kick();
  }

  /** A dispatch round runs just before the next group commit and claims inside it. */
  private scheduleDispatch(): void {
    if (this.dispatchScheduled || this.closing) return;
    this.dispatchScheduled = true;
    this.o.committer.schedule();
  }

  /**
   * One dispatch round: every session with credits claims in one batched claim inside one
   * group commit, so a thousand idle workers cost one query when a job arrives, not a thousand.
   */
  private dispatch(): void {
    const ready: Session[] = [];
    for (const s of this.sessions.values()) {
      if (s.starved || !this.waitsForWork(s)) continue;
      s.claiming = true;
      ready.push(s);
    }
    if (ready.length === 0) return;
    const offered = ready.map((s) => s.credits);
    const claimedAt = this.now();
    this.o.committer.runThen(
      () => this.o.store.claimBatch(ready.map((s, i) => this.claimRequest(s, offered[i]!))),
      (o) => {
        if (!o.ok) {
          // The commit failed (a full disk, say) and the claims rolled back with it, or the
          // claim failed alone. The committer flushes again shortly (a failed flush arms that
          // by itself); its hook then runs this round again.
          for (const s of ready) s.claiming = false;
          this.dispatchScheduled = true;
          this.o.committer.retryLater();
          this.o.log.error({ err: o.error }, 'claim failed');
          return;
        }
        ready.forEach((s, i) => this.guard(s, () => {
          s.claiming = false; // first, so a failing delivery cannot leave the session stuck
          this.deliver(s, offered[i]!, o.value[i]!, claimedAt);
        }));
      },
      HOT,
    );
  }

  /**
   * A session that can take work now: registered, with credits, and not held back. A starved
   * one counts: new work may fit it, which is what a submission offers it. A session is active
   * from its hello but registered only once that commits: a pull sent before welcome (against
   * the protocol) leased tasks to no worker id, and its results were then refused as stale.
   * A session whose socket is closing (a protocol error, waiting for the peer's close frame, up
   * to ws's 30 s) stays active until it has closed, but its frames would be dropped.
   */
  private waitsForWork(s: Session): boolean {
    return s.phase === 'active' && s.workerId !== null && !s.draining && !s.unhealthy && !s.claiming && s.credits >= 1 && isOpen(s);
  }

  private claimRequest(s: Session, freeSlots: number): ClaimRequest {
    return { session: { workerId: s.workerId!, sessionId: s.id }, labels: s.labels, freeSlots, maxTasks: MAX_TASKS_PER_CLAIM };
  }

  private deliver(s: Session, offered: number, tasks: ClaimedTask[], claimedAt: number): void {
    s.claiming = false;
    if (tasks.length === 0) {
      s.starved = true;
      return;
    }
    const used = tasks.reduce((n, t) => n + t.slots, 0);
    s.credits -= used;
    if (s.phase !== 'active' || !isOpen(s)) {
      // A guard: the session died (or began closing) between claim and send. The claim and this
      // call run in one synchronous chain today, so it cannot happen yet; if it ever does, give
      // the tasks straight back rather than leave them to expire with the lease.
      const workerId = s.workerId!;
      this.o.committer
        .run(() => this.o.store.requeueUndelivered(workerId, tasks.map((t) => ({ taskSeq: parseTaskId(t.taskId)!, leaseId: t.leaseId }))))
        .then((lost) => this.countLosses('undelivered', lost))
        .catch((err: unknown) => this.o.log.error({ err, workerId }, 'could not return undelivered tasks'));
      return;
    }
    this.sendRaw(s, tasksMessage(tasks));
    this.o.metrics.dispatched(tasks, this.now(), claimedAt);
    // Credits left but the claim was capped, or a bigger task was skipped: try again.
    if (s.credits > 0 && (tasks.length === MAX_TASKS_PER_CLAIM || used < offered)) this.scheduleDispatch();
  }

  // ---- plumbing ------------------------------------------------------------------------------

  /** Queues an ack; all acks a group commit settles for one session leave in one frame. */
  private ack(s: Session, taskId: string, leaseId: string, status: AckStatus): void {
    s.pendingAcks.push({ taskId, leaseId, status });
    this.scheduleWrite(s);
  }

  private send(s: Session, msg: ManagerMessage): void {
    this.sendRaw(s, JSON.stringify(msg));
  }

  private sendRaw(s: Session, text: string): void {
    s.outbox.push(text);
    this.scheduleWrite(s);
  }

  /**
   * Writes a session's pending frames once the current turn's promise continuations are done
   * (process.nextTick runs after them): acks first, batched into one frame, then the rest in
   * order, with the socket corked so they leave in one write.
   *
   * Why: a one-slot worker gets an ack and its next task per turn; two frames written apart
   * were two syscalls per task, a sixth of the manager's CPU at 64 x 1 in profiles.
   */
  private scheduleWrite(s: Session): void {
    if (s.pendingAcks.length + s.outbox.length > 1) return;
    process.nextTick(() => this.writeNow(s));
  }

  /** Closes a session after writing what is queued for it (a fatal error, the last acks). */
  private closeSession(s: Session, code: number, reason: string): void {
    this.writeNow(s);
    s.socket.close(code, reason);
  }

  private writeNow(s: Session): void {
    const acks = s.pendingAcks;
    const frames = s.outbox;
    s.pendingAcks = [];
    s.outbox = [];
    if (!isOpen(s)) return;
    if (acks.length === 1) frames.unshift(JSON.stringify({ type: 'ack', ...acks[0]! }));
    else if (acks.length > 1) frames.unshift(JSON.stringify({ type: 'acks', acks }));
    sendFrames(s.socket, frames);
  }

  private protocolError(s: Session, message: string): void {
    this.o.log.warn({ workerId: s.workerId, sessionId: s.id, remote: s.remote }, `worker protocol error: ${message}`);
    this.send(s, { type: 'error', code: 'PROTOCOL_ERROR', message, fatal: true });
    this.closeSession(s, CLOSE_CODES.protocolError, 'protocol error');
  }

  private internalError(s: Session, err: unknown): void {
    this.o.log.error({ err, workerId: s.workerId }, 'worker message failed');
    const storageFull = (err as { code?: string }).code === 'SQLITE_FULL';
    this.send(s, {
      type: 'error',
      code: storageFull ? 'STORAGE_FULL' : 'INTERNAL',
      message: storageFull ? 'manager database is full; retry later' : 'internal error; see the manager log',
      fatal: false,
    });
  }
}

/** Frames written to this session's socket now would reach the worker. */
function isOpen(s: Session): boolean {
  return s.socket.readyState === s.socket.OPEN;
}

/**
 * Builds a `tasks` message around the specs as stored: they were validated on the way in,
 * so parsing and re-serialising them for every delivery would be pure cost.
 */
function tasksMessage(tasks: readonly ClaimedTask[]): string {
  const items = tasks.map(
    (t) => `{"taskId":${JSON.stringify(t.taskId)},"jobId":${JSON.stringify(t.jobId)},"key":${JSON.stringify(t.key)},"attempt":${t.attempt},"leaseId":${JSON.stringify(t.leaseId)},"spec":${t.specJson}}`,
  );
  return `{"type":"tasks","tasks":[${items.join(',')}]}`;
}
