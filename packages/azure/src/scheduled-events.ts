/**
 * Azure Scheduled Events: the platform's advance notice that it will reboot, redeploy, evict
 * (Spot) or delete (scale-in) this VM. The watcher polls IMDS once a second and reports each
 * new event aimed at this VM whose type needs the worker to drain; the worker then approves
 * it (StartRequests) once it has released its work, so the platform need not wait for NotBefore.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImdsClient, ScheduledEvent, ScheduledEventsDocument } from './imds.js';
import { silentLog, type Log } from './log.js';

/** Event types that take the VM away (for a while or for good): drain first. Freeze is a pause of seconds: ignore. */
export const DRAIN_EVENT_TYPES = ['Terminate', 'Preempt', 'Reboot', 'Redeploy'] as const;
export type DrainEventType = (typeof DRAIN_EVENT_TYPES)[number];

/** The events in a document that this VM must act on: its own, and of a draining type. */
export function eventsToDrainFor(doc: ScheduledEventsDocument, vmName: string): ScheduledEvent[] {
  const me = vmName.toLowerCase();
  return (doc.Events ?? []).filter(
    (e) =>
      (DRAIN_EVENT_TYPES as readonly string[]).includes(e.EventType) &&
      Array.isArray(e.Resources) &&
      e.Resources.some((r) => typeof r === 'string' && r.toLowerCase() === me),
  );
}

/** Milliseconds until an event's NotBefore, or 0 when it has none (already started) or it has passed. */
export function msUntilNotBefore(event: ScheduledEvent, now = Date.now()): number {
  if (!event.NotBefore) return 0;
  const at = Date.parse(event.NotBefore);
  return Number.isNaN(at) ? 0 : Math.max(0, at - now);
}

export interface WatcherOptions {
  imds: ImdsClient;
  /** IMDS compute.name: events list affected VMs by this name. */
  vmName: string;
  onEvent: (event: ScheduledEvent) => void;
  log?: Log;
  intervalMs?: number;
  /** The first call after boot can take up to two minutes while the service switches on. */
  firstCallTimeoutMs?: number;
  callTimeoutMs?: number;
}

export class ScheduledEventsWatcher {
  private readonly abort = new AbortController();
  private readonly seen = new Set<string>();
  private incarnation: number | null = null;
  private loop: Promise<void> | null = null;
  private readonly log: Log;

  constructor(private readonly o: WatcherOptions) {
    this.log = o.log ?? silentLog;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  /** Tells the platform it may proceed with the event now. */
  async approve(eventId: string): Promise<void> {
    await this.o.imds.approveEvents([eventId]);
    this.log.info({ eventId }, 'approved scheduled event');
  }

  private async run(): Promise<void> {
    const { signal } = this.abort;
    let first = true;
    while (!signal.aborted) {
      try {
        // No retries inside a poll: the next poll, a second later, is the retry.
        const doc = await this.o.imds.scheduledEvents({ timeoutMs: first ? this.o.firstCallTimeoutMs ?? 120_000 : this.o.callTimeoutMs ?? 10_000, signal, retries: 0 });
        first = false;
        this.consider(doc);
      } catch (err) {
        if (signal.aborted) return;
        this.log.warn({ err: (err as Error).message }, 'could not read scheduled events; will retry');
      }
      try {
        await sleep(this.o.intervalMs ?? 1_000, undefined, { signal });
      } catch {
        return;
      }
    }
  }

  private consider(doc: ScheduledEventsDocument): void {
    // The document only changes when its incarnation does; skip the rest of the work otherwise.
    if (doc.DocumentIncarnation === this.incarnation) return;
    this.incarnation = doc.DocumentIncarnation;
    this.log.debug({ incarnation: doc.DocumentIncarnation, events: doc.Events?.length ?? 0 }, 'scheduled events changed');
    for (const e of eventsToDrainFor(doc, this.o.vmName)) {
      if (this.seen.has(e.EventId)) continue;
      this.seen.add(e.EventId);
      this.log.warn({ eventId: e.EventId, type: e.EventType, notBefore: e.NotBefore, status: e.EventStatus }, `scheduled event ${e.EventType} for this VM`);
      this.o.onEvent(e);
    }
  }
}
