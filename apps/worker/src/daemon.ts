/**
 * The worker daemon: readiness gate -> session (connect, hello, pull, run, heartbeat, report)
 * -> drain. docs/protocol.md is the wire; this file is the worker's side of it.
 *
 * Life cycle (an explicit union, logged on every change):
 *   starting -> waiting-ready -> connecting -> running -> draining -> stopped
 * `connecting` is re-entered from `running` whenever the connection drops; leases survive
 * a reconnect within the TTL, and results wait meanwhile, in the durable outbox and in memory.
 * Apart from the life cycle, a worker whose work dir cannot hold a task (a full disk) takes no
 * work until a probe finds it usable again (pauseForWorkDir).
 */
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import WebSocket from 'ws';
import type { Logger } from 'pino';
import {
  CLOSE_CODES,
  MAX_MESSAGE_BYTES,
  ManagerMessage,
  PROTOCOL_VERSION,
  MAX_PROBLEM_LENGTH,
  PULLMAN_VERSION,
  compileChecker,
  messageSince,
  releaseReasonSince,
  type ExecutionReport,
  type ReleaseReason,
  type TaskAssignment,
  type VmFacts,
  type WorkerMessage,
} from '@pullman/protocol';
import type { WorkerConfig } from './config.js';
import { probeWorkDir, startExecution, type Execution, type StopReason } from './executor.js';
import { startJanitor } from './janitor.js';
import { Outbox, parseRun, type PendingResult, type RunningRecord } from './outbox.js';
import { environHas, killGroup } from './processes.js';
import { ReportSender } from './sender.js';
import { SpawnHelper } from './spawn-helper.js';

export type DaemonState = 'starting' | 'waiting-ready' | 'connecting' | 'running' | 'draining' | 'stopped';

const checkManagerMessage = compileChecker(ManagerMessage, 'PROTOCOL_ERROR', 'message');

/** Reconnect backoff: exponential from 500 ms, capped at 30 s, with full jitter. */
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
/** Probes of an unusable work dir: after 1 s, then doubling, at most every 30 s. */
const WORKDIR_PROBE_BASE_MS = 1_000;
const WORKDIR_PROBE_CAP_MS = 30_000;

/** How long a drain waits for the manager to ack the outbox before leaving it on disk. */
const FLUSH_TIMEOUT_MS = 30_000;

/** Stops a held task's process, or has it stopped as soon as it exists (the first reason holds). */
function stopHeld(h: Held, reason: StopReason): void {
  if (h.phase === 'running') h.exec.stop(reason);
  else h.stop ??= reason;
}

/** "Full jitter" (AWS architecture blog): a uniform delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16)));
}

/**
 * A task this worker holds, from its receipt to its report, with the lease it holds for it.
 * `starting`: its files are being made and its process spawned (thread-pool round trips);
 * `running`: its process exists. Both take their slots, are listed in hello and hold up a drain:
 * a starting task is as much this worker's as a running one. A drain that arrived with a task
 * used to see nothing running and say bye while the task started. A stop asked for while a task
 * starts is applied as soon as its process exists.
 */
type Held =
  | { phase: 'starting'; task: TaskAssignment; slots: number; stop: StopReason | null }
  | { phase: 'running'; task: TaskAssignment; slots: number; exec: Execution };

export class FatalError extends Error {
  override readonly name = 'FatalError';
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export interface DaemonOptions {
  config: WorkerConfig & { token: string };
  log: Logger;
  vm: VmFacts | null;
}

export class WorkerDaemon {
  private state: DaemonState = 'starting';
  private ws: WebSocket | null = null;
  private welcomed = false;
  /** Welcomed, and the outbox and orphaned leases have been re-sent on this session. */
  private synced = false;
  private workerId: string | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  /** When the manager was last heard from (any message, or a pong) on the current socket. */
  private lastHeardAt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectAttempt = 0;
  /** A re-send of unacked reports, scheduled after a non-fatal error (e.g. STORAGE_FULL). */
  private resendTimer: NodeJS.Timeout | null = null;
  private resendAttempt = 0;
  /** Every task this worker holds, by leaseKey (one task may be held under two leases: see startTask). */
  private readonly held = new Map<string, Held>();
  /** The latest attempt of each task the last hello listed: what welcome's resumed refers to. */
  private helloLatest = new Map<string, number>();
  /**
   * Results and releases sent (or due) and not yet acked, by leaseKey. Every result not yet
   * acked is here, for as long as the process lives: those of this process from the moment they
   * are sent, those a previous one left in the outbox from the start (run()). They outlive a
   * disconnect and go again on the next welcome; releases are left to the TTL.
   */
  private readonly unacked = new Map<string, WorkerMessage>();
  /** Keys of results whose outbox write failed: held in memory only (see drainAndStop). */
  private readonly unwritten = new Set<string>();
  /** Leases of tasks a previous incarnation was running, to hand back after connecting. */
  private orphanedLeases: RunningRecord[] = [];
  private readonly outbox: Outbox;
  /**
   * Outbox writes and removals under way, by leaseKey: an ack's removal waits for the write of
   * the same result, and a drain waits for all before it counts what is left. See startTask for
   * why results do not wait for their write.
   */
  private readonly outboxWork = new Map<string, Promise<void>>();
  /** Results and credits leave through here, together, at the end of each turn. */
  private readonly sender = new ReportSender(() => this.ws);
  /** The protocol version the next hello offers: our newest, unless a manager refused it. */
  private offeredProtocol = PROTOCOL_VERSION;
  private readonly log: Logger;
  private readonly config: WorkerConfig & { token: string };
  private finished!: (code: number) => void;
  private readonly exit: Promise<number>;
  private drainStarted = false;
  private stopJanitor: () => void = () => {};
  private drainDeadline = Number.POSITIVE_INFINITY;
  private readonly beforeExit: Array<() => Promise<void>> = [];
  /** Said bye: a closing socket is expected, not a reason to reconnect. */
  private leaving = false;
  private settleWaiters: Array<() => void> = [];
  /**
   * Why this worker takes no work now: its work dir cannot hold a task (a full disk, a broken
   * or read-only dir). Null while it can. Orthogonal to the life cycle: a paused worker stays
   * connected, heartbeats and reports the tasks it still runs.
   */
  private workDirProblem: string | null = null;
  /** Credits not granted while paused: the manager holds none of them (see grantCredits). */
  private withheldCredits = 0;
  private probeTimer: NodeJS.Timeout | null = null;
  private probeAttempt = 0;
  /** Starts tasks without forking the worker (spawn-helper.ts); null: the worker forks them. */
  private helper: SpawnHelper | null = null;

  constructor(private readonly o: DaemonOptions) {
    this.config = o.config;
    this.log = o.log;
    this.outbox = new Outbox(o.config.workDir);
    this.exit = new Promise((resolve) => (this.finished = resolve));
  }

  get currentState(): DaemonState {
    return this.state;
  }

  /** Runs until drained; resolves with the process exit code. */
  async run(): Promise<number> {
    const opened = await this.outbox.open();
    if (opened.keptAside.length > 0) this.log.error({ files: opened.keptAside }, 'outbox files that could not be read were kept aside; results only in them are not sent, and their tasks run again once their leases expire');
    if (opened.problem) this.log.error({ err: opened.problem }, 'the outbox cannot store results; until a write can make its journal, results are sent but held in memory only');
    this.workerId = await readFile(this.idFile, 'utf8').then((s) => s.trim() || null, () => null);
    // Results a previous run left unacked: read once, here, and sent after every welcome with
    // this process's own (unacked is the one list of them; the outbox is its copy on disk).
    for (const p of await this.outbox.pending()) this.unacked.set(leaseKey(p), { type: 'result', ...p });
    // A task that finished just before the crash has its result in the outbox: that result is
    // sent on connect, so releasing its lease first would requeue a task that already ran.
    this.orphanedLeases = (await this.reapOrphans(opened.running)).filter((o) => !this.unacked.has(leaseKey(o)));
    // Entries of running attempts are named <taskId>.<attempt>[...]: never swept while in use.
    this.stopJanitor = startJanitor(this.config.workDir, this.config.logRetentionMs, this.log, () => this.activeEntries());
    if (this.config.spawnHelper === 'auto') this.helper = await SpawnHelper.start(this.log);
    this.setState('connecting');
    this.connect();
    return this.exit;
  }

  /**
   * Starts a graceful drain (SIGTERM, SIGINT, the manager's drain, a Scheduled Event), or
   * tightens one under way. `deadlineAt` caps how long running tasks may go on (a Scheduled
   * Event's NotBefore); `beforeExit` runs after the manager was told (approving the event).
   */
  drain(reason: string, opts: { deadlineAt?: number; beforeExit?: () => Promise<void> } = {}): void {
    if (opts.deadlineAt !== undefined) this.drainDeadline = Math.min(this.drainDeadline, opts.deadlineAt);
    if (opts.beforeExit) this.beforeExit.push(opts.beforeExit);
    this.wakeSettled(); // a drain already waiting re-reads its deadline
    if (this.drainStarted) return;
    this.drainStarted = true;
    this.drainDeadline = Math.min(this.drainDeadline, Date.now() + this.config.drainTimeoutMs);
    void this.drainAndStop(reason).catch((err: unknown) => {
      this.log.error({ err }, 'drain failed');
      this.stop(1);
    });
  }

  /** Second signal: kill every task now and leave without waiting for anything. */
  forceStop(): void {
    this.log.warn({ running: this.held.size }, 'forced stop: killing all tasks');
    for (const r of this.held.values()) if (r.phase === 'running') killGroup(r.exec.pid, 'SIGKILL');
    this.stop(1);
  }

  // ---- connection ----------------------------------------------------------------------------

  private connect(): void {
    if (this.state === 'stopped') return;
    const ws = new WebSocket(this.config.channelUrl, {
      headers: { authorization: `Bearer ${this.config.token}` },
      ...(this.config.ca ? { ca: this.config.ca } : {}),
      handshakeTimeout: 10_000,
      maxPayload: MAX_MESSAGE_BYTES,
    });
    this.ws = ws;
    ws.on('open', () => {
      this.lastHeardAt = Date.now();
      this.sendHello();
    });
    ws.on('message', (data) => {
      this.lastHeardAt = Date.now();
      this.onMessage(data.toString());
    });
    ws.on('pong', () => (this.lastHeardAt = Date.now()));
    ws.on('unexpected-response', (_req, res) => {
      if (res.statusCode === 401 || res.statusCode === 403) {
        this.log.fatal({ status: res.statusCode }, 'the manager refused the worker token');
        this.fail(new FatalError(`the manager at ${this.config.managerUrl} refused the worker token (HTTP ${res.statusCode}); check PULLMAN_WORKER_TOKEN / PULLMAN_WORKER_TOKEN_FILE`, 2));
        return;
      }
      this.log.warn({ status: res.statusCode }, 'unexpected HTTP answer to the upgrade');
      ws.terminate();
    });
    ws.on('error', (err) => this.log.warn({ err: err.message, attempt: this.reconnectAttempt }, 'connection error'));
    ws.on('close', (code, reason) => this.onDisconnected(ws, code, reason.toString()));
  }

  private onDisconnected(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    const wasWelcomed = this.welcomed;
    this.welcomed = false;
    // A session that got as far as welcome ends any downgrade: the manager may be upgraded now.
    if (wasWelcomed) this.offeredProtocol = PROTOCOL_VERSION;
    this.synced = false;
    // Releases are left to the TTL. Results stay: the next session sends them again.
    for (const [key, m] of this.unacked) if (m.type !== 'result') this.unacked.delete(key);
    this.sender.reset();
    this.stopHeartbeats();
    if (this.state === 'stopped' || this.leaving) return;
    if (wasWelcomed) this.log.warn({ code, reason }, 'disconnected from the manager');
    if (this.state === 'running') this.setState('connecting');
    const delay = backoffDelay(this.reconnectAttempt++);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
    this.log.info({ delayMs: delay, attempt: this.reconnectAttempt }, 'reconnecting');
    this.wakeSettled();
  }

  private sendHello(): void {
    const running = [...this.held.values()].map((r) => ({ taskId: r.task.taskId, leaseId: r.task.leaseId }));
    // Welcome answers this list, not what is held when it arrives (a run may end in between).
    this.helloLatest = new Map();
    for (const r of this.held.values()) this.helloLatest.set(r.task.taskId, Math.max(this.helloLatest.get(r.task.taskId) ?? 0, r.task.attempt));
    this.send({
      type: 'hello',
      protocol: this.offeredProtocol,
      ...(this.workerId ? { workerId: this.workerId } : {}),
      name: this.config.name,
      hostname: this.config.hostname,
      slots: this.config.slots,
      labels: this.config.labels,
      version: PULLMAN_VERSION,
      vm: this.o.vm,
      running,
    });
  }

  private onMessage(text: string): void {
    let msg: ManagerMessage;
    try {
      msg = checkManagerMessage.parse(JSON.parse(text));
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'unreadable message from the manager; reconnecting');
      this.ws?.close(CLOSE_CODES.protocolError);
      return;
    }
    switch (msg.type) {
      case 'welcome':
        return void this.onWelcome(msg).catch((err: unknown) => this.log.error({ err }, 'welcome handling failed'));
      case 'tasks':
        for (const t of msg.tasks) void this.startTask(t).catch((err: unknown) => this.startFailed(t, err));
        return;
      case 'ack':
        return this.onAck(msg);
      case 'acks':
        for (const a of msg.acks) this.onAck(a);
        return;
      case 'cancel': {
        const r = this.held.get(leaseKey(msg));
        if (r) {
          this.log.info({ taskId: msg.taskId }, 'task cancelled by the manager');
          stopHeld(r, 'cancel');
        }
        return;
      }
      case 'drain':
        this.log.info('the manager asked this worker to drain');
        return this.drain('manager');
      case 'error': {
        this.log.error({ code: msg.code, fatal: msg.fatal }, `manager error: ${msg.message}`);
        if (!msg.fatal) return this.scheduleResend();
        // A manager built before protocol 2 refuses any other version with exactly this message
        // instead of negotiating: offer what it speaks on the next connection.
        const old = this.welcomed ? null : /^protocol \d+ is not supported; this manager speaks (\d+)$/.exec(msg.message);
        const speaks = old ? Number(old[1]) : NaN;
        if (speaks >= 1 && speaks < this.offeredProtocol) {
          this.log.warn({ offered: this.offeredProtocol, managerSpeaks: speaks }, 'the manager predates protocol negotiation; reconnecting with its version (upgrade the manager)');
          this.offeredProtocol = speaks;
        }
        return;
      }
    }
  }

  /**
   * A non-fatal error means one message failed (STORAGE_FULL: the manager's disk is full) and
   * does not say which. Re-send every unacked report later, with backoff: each is fenced by its
   * lease, so a duplicate is answered `stale` and harms nothing. Without this, results refused
   * while the disk was full waited in the outbox until the next reconnect.
   */
  private scheduleResend(): void {
    if (this.resendTimer) return;
    const delay = 1_000 + backoffDelay(this.resendAttempt++);
    this.resendTimer = setTimeout(() => {
      this.resendTimer = null;
      if (!this.welcomed || this.unacked.size === 0) return;
      this.log.info({ reports: this.unacked.size }, 're-sending unacknowledged reports after a manager error');
      for (const m of this.unacked.values()) {
        if (m.type === 'result') this.sender.result(m);
        else this.send(m);
      }
      // A re-sent `unhealthy` release marks this worker unhealthy again on the manager, and the
      // failed message may have been a health one: say where it stands now, after them.
      this.sendHealth();
    }, delay);
    this.resendTimer.unref();
  }

  private onAck(a: { taskId: string; leaseId: string; status: 'recorded' | 'stale' }): void {
    this.resendAttempt = 0;
    const key = leaseKey(a);
    this.unacked.delete(key);
    this.unwritten.delete(key);
    if (a.status === 'stale') this.log.info({ taskId: a.taskId }, 'result was stale (the task was reassigned or cancelled); dropped');
    // After the result's own write, if that is still under way: removed first, it would be
    // written back and sent again at the next start.
    // The run ends here too: a previous process's run (reapOrphans) ends only once the manager
    // has its release or result; one of this process ended already (a no-op).
    const removed = (this.outboxWork.get(key) ?? Promise.resolve())
      .then(() => this.outbox.remove(a.taskId, a.leaseId))
      .then(() => this.outbox.ended(a.taskId, a.leaseId))
      .catch((err: unknown) => this.log.warn({ err, taskId: a.taskId }, 'could not remove an acknowledged result from the outbox'))
      .then(() => this.wakeSettled());
    this.trackOutbox(key, removed);
  }

  private async onWelcome(msg: Extract<ManagerMessage, { type: 'welcome' }>): Promise<void> {
    // The session this welcome belongs to. After the await below: if it dropped meanwhile, stop
    // here. Marked synced while disconnected, the next session would grant credits before its
    // own re-send (the double grant grantCredits describes).
    const ws = this.ws;
    this.welcomed = true;
    // The manager chose the lower of its newest version and what we offered; never above that.
    this.sender.protocol = Math.min(msg.protocol, this.offeredProtocol);
    this.reconnectAttempt = 0;
    this.log.info({ workerId: msg.workerId, resumed: msg.resumed.length, lost: msg.lost.length }, 'registered with the manager');
    if (this.workerId !== msg.workerId) {
      // The manager keeps a stored id only for the host it belongs to: a new one here means the
      // id came from elsewhere (a VM image baked with the work dir) or the host was renamed.
      if (this.workerId !== null) this.log.warn({ was: this.workerId, now: msg.workerId }, 'the manager gave this worker a new id: the stored one belongs to another host');
      this.workerId = msg.workerId;
      await writeFile(this.idFile, `${msg.workerId}\n`);
      if (this.ws !== ws) return;
    }
    // The manager gave these leases away (expired, cancelled): stop the now-pointless runs. Both
    // lists name tasks, not leases, and a task may be held under two (an old lease's process still
    // dying, a new one running): a task also resumed keeps its current lease, the one of its
    // latest attempt listed in hello (each claim counts one more), and only the older ones stop.
    const lost = new Set(msg.lost);
    const resumed = new Set(msg.resumed);
    for (const r of this.held.values()) {
      if (!lost.has(r.task.taskId)) continue;
      if (resumed.has(r.task.taskId) && r.task.attempt === this.helloLatest.get(r.task.taskId)) continue;
      stopHeld(r, 'cancel');
    }
    this.startHeartbeats(msg.heartbeatIntervalMs, msg.leaseTtlMs);
    if (this.state === 'connecting') this.setState('running');
    // Hand back tasks a crashed predecessor was running: requeued now instead of after the TTL.
    for (const o of this.orphanedLeases.splice(0)) this.sendRelease(o.taskId, o.leaseId, 'shutdown');
    // Every result not yet acked (this process's, and a previous one's from the outbox).
    for (const m of this.unacked.values()) if (m.type === 'result') this.sender.result(m);
    this.synced = true;
    this.withheldCredits = 0; // a new session: the manager holds no credit of ours yet
    if (this.workDirProblem !== null) this.sendHealth(); // a new session starts healthy
    if (this.state === 'draining') this.send({ type: 'draining', reason: 'draining before reconnect' });
    else this.grantCredits(this.freeSlots());
    this.wakeSettled();
  }

  // ---- tasks ---------------------------------------------------------------------------------

  private freeSlots(): number {
    let used = 0;
    for (const r of this.held.values()) used += r.slots;
    return Math.max(0, this.config.slots - used);
  }

  /**
   * Credits go out only once the session is synced. Why: onWelcome grants every free slot at
   * its end, so a slot freed before then must not be granted on its own as well: the same slot
   * twice lets the manager send more work than the worker has slots.
   */
  private grantCredits(n: number): void {
    if (n <= 0 || !this.synced || this.state !== 'running') return;
    // Paused: counted, and granted when the work dir is usable again. Granted now, they would
    // bring tasks this worker can only give back.
    if (this.workDirProblem !== null) this.withheldCredits += n;
    else this.sender.pull(n);
  }

  private async startTask(task: TaskAssignment): Promise<void> {
    // The same lease twice is a duplicate delivery. The same task under a new lease is a new
    // attempt (a cancel, then a retry, while the old process still dies): it runs. Keyed by
    // task alone, it was dropped, and its lease was kept alive by heartbeats forever.
    const key = leaseKey(task);
    if (this.held.has(key)) return;
    const slots = task.spec.slots ?? 1;
    if (this.state === 'draining' || this.state === 'stopped') {
      this.sendRelease(task.taskId, task.leaseId, 'drain');
      return;
    }
    const starting: Held = { phase: 'starting', task, slots, stop: null };
    this.held.set(key, starting);
    const exec = await startExecution(task, { workDir: this.config.workDir, workerId: this.workerId ?? 'unknown', killGraceMs: this.config.killGraceMs, keepFailedScratch: this.config.keepFailedScratch, helper: this.helper });
    if (exec.workDirProblem !== null) {
      // The worker's fault, not the task's: the task goes back to the queue for another worker
      // (a loss, not a spent retry), and this worker takes no work until its work dir is usable
      // (its credit is withheld until then). Failing it instead made a worker with a full disk
      // fail every task it was sent, fast: a black hole that emptied the queue into failures.
      return this.giveBack(starting, 'unhealthy', exec.workDirProblem);
    }
    if ((this.state as DaemonState) === 'stopped') { // (it may have changed during the await)
      // Stopped (a forced stop, a fatal error) while it started: the worker is leaving, and
      // the process would outlive it in its own process group, unreported.
      killGroup(exec.pid, 'SIGKILL');
      return this.giveBack(starting, 'shutdown');
    }
    this.held.set(key, { phase: 'running', task, slots, exec });
    if (starting.stop !== null) exec.stop(starting.stop);
    this.probeAttempt = 0;
    // The record only serves a restart after a crash; a disk that cannot hold it must not cost
    // the task (an escaped error here used to end the worker). Not awaited: the line waits its
    // turn behind the fdatasync of earlier results, and awaited, so would this task's result
    // (a third of the rate with a 10 ms fsync). Its place in the queue keeps it before the
    // result's line and the run's end.
    this.outbox.started({ taskId: task.taskId, leaseId: task.leaseId, attempt: task.attempt, pid: exec.pid }).catch((err: unknown) => {
      this.log.warn({ err, taskId: task.taskId }, 'running record not written yet; it is written with the next write that succeeds');
    });
    this.log.info({ taskId: task.taskId, jobId: task.jobId, key: task.key, attempt: task.attempt, pid: exec.pid }, 'task started');
    const report = await exec.done;
    let written: Promise<void> = Promise.resolve();
    const stop = exec.stopReason;
    if (stop === 'release' || stop === 'shutdown' || stop === 'lost') {
      // Lost: the spawn helper died under it, so its exit is unknown. The worker's fault, so the
      // task goes back (no retry spent) rather than failing; as `shutdown`, the process that ran
      // it went away, and not `unhealthy`: this worker goes on, forking tasks itself.
      this.log.info({ taskId: task.taskId, durationMs: report.durationMs, reason: stop }, 'task stopped and released');
      this.sendRelease(task.taskId, task.leaseId, stop === 'release' ? 'drain' : 'shutdown');
    } else {
      // Sent at once, and written to the outbox meanwhile: the write (then a temp file, two
      // fsyncs, a rename; now an append and an fdatasync shared by the turn's results) held
      // the slot idle between a task's exit and its result (+10% tasks/s for `true` here; on a
      // VM's standard disk each fsync costs milliseconds). The outbox is for results that get
      // no ack: a manager outage, or a worker crash. A crash before the write lands leaves the
      // running record, so the next start releases the lease; the manager then keeps the result
      // if it got it, else the task runs again. Nothing was acknowledged as stored before the
      // manager's ack either way.
      written = this.persistResult({ taskId: task.taskId, leaseId: task.leaseId, report });
      this.log.info({ taskId: task.taskId, exitCode: report.exitCode, signal: report.signal, timedOut: report.timedOut, cancelled: report.cancelled, durationMs: report.durationMs, error: report.error?.code }, 'task finished');
      this.sendResult(task.taskId, task.leaseId, report);
    }
    this.held.delete(key);
    // The slot's credit leaves with the result, in the same turn, so the manager can settle one
    // and claim for the other in one commit. The running record goes once the outbox write has
    // ended: a crash in between leaves a record whose result is in the outbox, and the next
    // start sends that result instead of releasing the lease (see run()).
    this.grantCredits(slots);
    await written;
    await this.outbox.ended(task.taskId, task.leaseId).catch(() => {}); // at worst released early after a crash
    this.wakeSettled();
  }

  /**
   * A task whose start threw (a bug: the executor reports failures in the report). The worker
   * goes on: an escaped rejection ended it, and with it every task it ran. The task goes back
   * (this session's heartbeats would keep its lease alive forever otherwise), and a slot it
   * still held as starting is freed.
   */
  private startFailed(task: TaskAssignment, err: unknown): void {
    this.log.error({ err, taskId: task.taskId }, 'task could not be started; giving it back');
    const h = this.held.get(leaseKey(task));
    if (h?.phase === 'starting') this.giveBack(h, 'shutdown');
  }

  /**
   * Gives back a task that never ran here: no longer held, released to the manager (requeued as
   * a loss, no retry spent), its slots granted again, and a drain waiting for held tasks woken.
   * With a work dir problem, the worker pauses first, so that the slots are withheld (and the
   * manager hears the release before the reason).
   */
  private giveBack(h: Held, reason: ReleaseReason, workDirProblem: string | null = null): void {
    this.held.delete(leaseKey(h.task));
    this.sendRelease(h.task.taskId, h.task.leaseId, reason);
    if (workDirProblem !== null) this.pauseForWorkDir(workDirProblem);
    this.grantCredits(h.slots);
    this.wakeSettled();
  }

  /** Results not acked yet, and whether each is in the outbox (its write did not fail). */
  private unackedResults(): Array<{ taskId: string; inOutbox: boolean }> {
    const out: Array<{ taskId: string; inOutbox: boolean }> = [];
    for (const [key, m] of this.unacked) if (m.type === 'result') out.push({ taskId: m.taskId, inOutbox: !this.unwritten.has(key) });
    return out;
  }

  /** Writes a result to the outbox; never rejects (a failed write is logged, the result still goes). */
  private persistResult(result: PendingResult): Promise<void> {
    const key = leaseKey(result);
    const written = this.outbox.put(result).catch((err: unknown) => {
      this.unwritten.add(key);
      this.log.error({ err, taskId: result.taskId }, 'result not written to the outbox; sent all the same, but if no ack comes before a restart, the task runs again');
    });
    this.trackOutbox(key, written);
    return written;
  }

  private trackOutbox(key: string, work: Promise<void>): void {
    this.outboxWork.set(key, work);
    void work.then(() => {
      if (this.outboxWork.get(key) === work) this.outboxWork.delete(key);
    });
  }

  /** Resolves when every outbox write and removal started so far has ended. */
  private async outboxSettled(): Promise<void> {
    while (this.outboxWork.size > 0) await Promise.all(this.outboxWork.values());
  }

  private sendResult(taskId: string, leaseId: string, report: ExecutionReport): void {
    const msg = { type: 'result', taskId, leaseId, report } as const;
    this.unacked.set(leaseKey(msg), msg);
    if (this.welcomed) this.sender.result(msg);
  }

  private sendRelease(taskId: string, leaseId: string, reason: ReleaseReason): void {
    if (!this.welcomed) return; // not connected: the lease simply expires and the task returns
    // A reason newer than the session's version: `shutdown`, which every version knows for
    // "given back, not run here".
    const spoken = releaseReasonSince(reason) <= this.sender.protocol ? reason : 'shutdown';
    const msg: WorkerMessage = { type: 'release', taskId, leaseId, reason: spoken };
    this.unacked.set(leaseKey(msg), msg);
    this.send(msg);
  }

  /** Stops taking work until probeWorkDir passes; probes with backoff meanwhile. */
  private pauseForWorkDir(problem: string): void {
    if (this.workDirProblem !== null || this.state === 'stopped') return;
    this.workDirProblem = problem;
    this.log.error({ problem }, 'the work dir cannot hold a task; giving tasks back and taking no work until it can');
    this.sendHealth();
    this.probeLater();
  }

  private probeLater(): void {
    const delay = Math.min(WORKDIR_PROBE_CAP_MS, WORKDIR_PROBE_BASE_MS * 2 ** Math.min(this.probeAttempt++, 16));
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      void this.probe();
    }, delay);
  }

  private async probe(): Promise<void> {
    const problem = await probeWorkDir(this.config.workDir);
    if (this.state === 'stopped') return;
    if (problem !== null) {
      this.log.warn({ problem, probes: this.probeAttempt }, 'the work dir still cannot hold a task');
      this.workDirProblem = problem;
      return this.probeLater();
    }
    this.log.info({ probes: this.probeAttempt }, 'the work dir can hold tasks again; taking work');
    this.workDirProblem = null;
    // probeAttempt is reset by the next task that starts, not here: a dir that passes the probe
    // but still fails tasks would otherwise pause and resume every second.
    this.sendHealth();
    const n = this.withheldCredits;
    this.withheldCredits = 0;
    this.grantCredits(n);
  }

  /** Tells the manager why this worker takes no work, or that it takes work again (protocol 3). */
  private sendHealth(): void {
    if (!this.welcomed || this.sender.protocol < messageSince('health')) return;
    this.send({ type: 'health', problem: this.workDirProblem?.slice(0, MAX_PROBLEM_LENGTH) ?? null });
  }

  // ---- drain ---------------------------------------------------------------------------------

  private async drainAndStop(reason: string): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('draining', { reason });
    await this.outboxSettled(); // no write or removal is cut off by the exit
    if (!this.welcomed && this.held.size === 0 && this.unackedResults().length === 0) {
      // Nothing to finish and nobody to tell.
      await this.runBeforeExit();
      return this.stop(0);
    }
    this.send({ type: 'draining', reason });

    await this.until(() => this.held.size === 0, () => this.drainDeadline);
    if (this.held.size > 0) {
      this.log.warn({ running: this.held.size }, 'drain timeout: stopping and releasing the remaining tasks');
      for (const r of this.held.values()) stopHeld(r, 'release');
      await this.until(() => this.held.size === 0, () => Number.POSITIVE_INFINITY);
    }

    const flushBy = Date.now() + FLUSH_TIMEOUT_MS;
    await this.until(() => this.unacked.size === 0 && this.synced, () => flushBy);
    await this.outboxSettled(); // which writes failed is known, and none is cut off by the exit
    const left = this.unackedResults();
    const lost = left.filter((r) => !r.inOutbox).map((r) => r.taskId);
    if (left.length > lost.length) this.log.warn({ results: left.length - lost.length }, 'manager unreachable: results stay in the outbox and are sent at the next start');
    // Their outbox write failed: the leases expire on the manager and the tasks run again.
    if (lost.length > 0) this.log.error({ taskIds: lost }, 'manager unreachable: results that could not be written to the outbox are lost; their tasks will run again');
    this.leaving = true;
    if (this.welcomed) this.send({ type: 'bye' });
    await this.runBeforeExit();
    this.stop(0);
  }

  private async runBeforeExit(): Promise<void> {
    for (const hook of this.beforeExit.splice(0)) {
      try {
        await hook();
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'a step before exit failed');
      }
    }
  }

  /** Waits until `done()` holds or the deadline passes, re-checking whenever something settles. */
  private async until(done: () => boolean, deadlineOf: () => number): Promise<void> {
    while (!done() && Date.now() < deadlineOf()) {
      const deadline = deadlineOf();
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(deadline) ? setTimeout(resolve, Math.max(0, deadline - Date.now())) : null;
        this.settleWaiters.push(() => {
          if (timer) clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  private wakeSettled(): void {
    for (const w of this.settleWaiters.splice(0)) w();
  }

  private stop(code: number): void {
    if (this.state === 'stopped') return;
    this.setState('stopped');
    this.stopJanitor();
    this.helper?.close();
    this.stopHeartbeats();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.resendTimer) clearTimeout(this.resendTimer);
    if (this.probeTimer) clearTimeout(this.probeTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.once('close', () => this.finished(code));
      ws.close(CLOSE_CODES.normal, 'bye');
      setTimeout(() => this.finished(code), 1_000).unref();
    } else {
      this.finished(code);
    }
  }

  private fail(err: FatalError): void {
    this.log.fatal(err.message);
    for (const r of this.held.values()) stopHeld(r, 'shutdown');
    process.stderr.write(`pullman-worker: ${err.message}\n`);
    this.stop(err.exitCode);
  }

  // ---- plumbing ------------------------------------------------------------------------------

  private setState(next: DaemonState, extra: Record<string, unknown> = {}): void {
    if (this.state === next) return;
    this.log.info({ from: this.state, to: next, ...extra }, `state ${next}`);
    this.state = next;
  }

  /**
   * Heartbeats, plus a ping each time: heartbeats get no answer, and a partitioned link that
   * never delivers a reset would otherwise leave this worker on a dead socket until TCP gives
   * up (~15 minutes on Linux). Silent for a whole lease TTL, the manager has closed this
   * session and requeued its tasks anyway: drop the socket and reconnect.
   */
  private startHeartbeats(intervalMs: number, leaseTtlMs: number): void {
    this.stopHeartbeats();
    this.heartbeatTimer = setInterval(() => {
      const ws = this.ws;
      if (ws && Date.now() - this.lastHeardAt > leaseTtlMs) {
        this.log.warn({ silentMs: Date.now() - this.lastHeardAt }, 'the manager has been silent for a whole lease TTL; dropping the connection');
        ws.terminate();
        return;
      }
      this.send({ type: 'heartbeat' });
      if (ws && ws.readyState === WebSocket.OPEN) ws.ping();
    }, intervalMs);
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  private send(msg: WorkerMessage): void {
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  /** Names in logs/ and scratch/ that belong to attempts running now. */
  private activeEntries(): Set<string> {
    const names = new Set<string>();
    for (const r of this.held.values()) {
      const base = `${r.task.taskId}.${r.task.attempt}`;
      names.add(base).add(`${base}.stdout.log`).add(`${base}.stderr.log`);
    }
    return names;
  }

  private get idFile(): string {
    return join(this.config.workDir, 'worker-id');
  }

  /**
   * After a crash, a previous incarnation's task process groups may still run (SIGKILL of the
   * worker does not reach them). Kill each that is really ours and return the leases, so the
   * tasks are released on connect. `records` are the outbox's; an older worker kept one file
   * per run under `running/`, moved into the outbox's journal here before the files go. The
   * runs stay in the journal until the manager acks their release or result (onAck).
   */
  private async reapOrphans(records: RunningRecord[]): Promise<RunningRecord[]> {
    const dir = join(this.config.workDir, 'running');
    const files = await readdir(dir).catch(() => [] as string[]);
    const runs = [...records];
    let moved = true;
    for (const name of files) {
      // Unreadable, or not a record (a release without a task id or lease would end the session).
      const r = await readFile(join(dir, name), 'utf8').then(parseRun).catch(() => null);
      if (!r) continue;
      runs.push(r);
      await this.outbox.started(r).catch(() => (moved = false));
    }
    // A file that could not be moved (a full disk) stays for the next start.
    if (moved) await rm(dir, { recursive: true, force: true }).catch(() => {});
    for (const r of runs) {
      // By its environment, not its pid alone: the pid may belong to another process by now.
      const ours = [`PULLMAN_TASK_ID=${r.taskId}`, ...(r.attempt === undefined ? [] : [`PULLMAN_ATTEMPT=${r.attempt}`])];
      if (typeof r.pid === 'number' && (await environHas(r.pid, ours))) {
        killGroup(r.pid, 'SIGKILL');
        this.log.warn({ taskId: r.taskId, pid: r.pid }, 'killed a task left running by a previous worker process');
      }
    }
    return runs;
  }
}

/** The key of a lease's result or release in unacked and outboxWork. */
function leaseKey(r: { taskId: string; leaseId: string }): string {
  return `${r.taskId}/${r.leaseId}`;
}
