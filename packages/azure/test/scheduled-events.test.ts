import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { readFileSync } from 'node:fs';
import { ImdsClient, type ScheduledEvent, type ScheduledEventsDocument } from '../src/imds.js';
import { ScheduledEventsWatcher, eventsToDrainFor, msUntilNotBefore } from '../src/scheduled-events.js';
import { FakeAzure, UNIFORM_VM, scheduledEvent } from '../../../test/fakes/fake-azure.js';

const published = (name: string) => JSON.parse(readFileSync(new URL(`../../../test/fixtures/azure/${name}`, import.meta.url), 'utf8')) as ScheduledEventsDocument;

describe('eventsToDrainFor', () => {
  const doc = (events: Array<Partial<ScheduledEvent>>): ScheduledEventsDocument => ({ DocumentIncarnation: 1, Events: events as ScheduledEvent[] });

  it('ignores the published Freeze documents', () => {
    expect(eventsToDrainFor(published('scheduledevents-2-freeze-scheduled.json'), 'WestNO_0')).toEqual([]);
    expect(eventsToDrainFor(published('scheduledevents-1-empty.json'), 'WestNO_0')).toEqual([]);
  });

  it.each(['Terminate', 'Preempt', 'Reboot', 'Redeploy'])('keeps a %s aimed at this VM', (type) => {
    const e = { EventId: 'x', EventType: type, Resources: ['other', 'me'] };
    expect(eventsToDrainFor(doc([e]), 'me')).toEqual([e]);
  });

  it('matches the VM name case-insensitively and drops events for other VMs', () => {
    const mine = { EventId: 'a', EventType: 'Terminate', Resources: ['VMSS_3'] };
    const theirs = { EventId: 'b', EventType: 'Terminate', Resources: ['vmss_4'] };
    expect(eventsToDrainFor(doc([mine, theirs]), 'vmss_3').map((e) => e.EventId)).toEqual(['a']);
  });

  it('survives malformed events', () => {
    expect(eventsToDrainFor(doc([{ EventId: 'a', EventType: 'Terminate' }, { EventId: 'b', EventType: 'Terminate', Resources: [3 as unknown as string] }]), 'me')).toEqual([]);
    expect(eventsToDrainFor({ DocumentIncarnation: 3 } as ScheduledEventsDocument, 'me')).toEqual([]);
  });
});

describe('msUntilNotBefore', () => {
  it('reads the RFC 1123 NotBefore, and treats empty or past as now', () => {
    const now = Date.parse('Mon, 19 Sep 2016 18:29:00 GMT');
    expect(msUntilNotBefore({ NotBefore: 'Mon, 19 Sep 2016 18:29:47 GMT' } as ScheduledEvent, now)).toBe(47_000);
    expect(msUntilNotBefore({ NotBefore: '' } as ScheduledEvent, now)).toBe(0);
    expect(msUntilNotBefore({ NotBefore: 'Mon, 19 Sep 2016 18:00:00 GMT' } as ScheduledEvent, now)).toBe(0);
    expect(msUntilNotBefore({ NotBefore: 'garbage' } as ScheduledEvent, now)).toBe(0);
  });
});

describe('ScheduledEventsWatcher', () => {
  let azure: FakeAzure;
  let watcher: ScheduledEventsWatcher | null = null;
  beforeAll(async () => {
    azure = await FakeAzure.start(UNIFORM_VM);
  });
  afterAll(() => azure.stop());
  afterEach(async () => {
    await watcher?.stop();
    watcher = null;
  });

  const polls = () => azure.requests.filter((r) => r.path === '/metadata/scheduledevents' && r.method === 'GET').length;

  it('reports each new event for this VM once, skipping unchanged documents', async () => {
    const seen: string[] = [];
    watcher = new ScheduledEventsWatcher({ imds: new ImdsClient({ baseUrl: azure.imdsUrl }), vmName: 'pull_3', intervalMs: 20, onEvent: (e) => seen.push(e.EventId) });
    const preempt = scheduledEvent('Preempt', ['pull_3'], 30_000, 'P1');
    azure.publishEvents([preempt, scheduledEvent('Terminate', ['pull_9'], 30_000, 'T9'), scheduledEvent('Freeze', ['pull_3'], 30_000, 'F3')]);
    watcher.start();
    await vi.waitFor(() => expect(seen).toEqual(['P1']));
    // The same event in a later document (status Started) is not reported again.
    const before = polls();
    azure.publishEvents([{ ...preempt, EventStatus: 'Started', NotBefore: '' }]);
    await vi.waitFor(() => expect(polls()).toBeGreaterThan(before + 3));
    expect(seen).toEqual(['P1']);
    // A new event is.
    azure.publishEvents([scheduledEvent('Reboot', ['pull_3'], 30_000, 'R1')]);
    await vi.waitFor(() => expect(seen).toEqual(['P1', 'R1']));
  });

  it('keeps polling through IMDS errors', async () => {
    const seen: string[] = [];
    azure.eventsScript.push({ status: 500 }, { status: 503 });
    const before = polls();
    watcher = new ScheduledEventsWatcher({ imds: new ImdsClient({ baseUrl: azure.imdsUrl }), vmName: 'pull_3', intervalMs: 20, onEvent: (e) => seen.push(e.EventId) });
    azure.publishEvents([scheduledEvent('Terminate', ['pull_3'], 30_000, 'T1')]);
    watcher.start();
    await vi.waitFor(() => expect(seen).toEqual(['T1']));
    expect(azure.eventsScript).toEqual([]);
    expect(polls()).toBeGreaterThanOrEqual(before + 3);
  });

  it('approves an event through IMDS', async () => {
    watcher = new ScheduledEventsWatcher({ imds: new ImdsClient({ baseUrl: azure.imdsUrl }), vmName: 'pull_3', onEvent: () => {} });
    await watcher.approve('EV-42');
    expect(azure.approvals).toContain('EV-42');
  });
});
