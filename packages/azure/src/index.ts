export { ImdsClient, ImdsError, IMDS_DEFAULT_URL, INSTANCE_API_VERSION, SCHEDULED_EVENTS_API_VERSION } from './imds.js';
export type { ComputeFacts, ScheduledEvent, ScheduledEventsDocument, ImdsOptions } from './imds.js';
export { parseVmResourceId, ResourceIdError, type VmResource } from './resource-id.js';
export { waitForSucceeded, redirectIdentityEndpoint, AzureReadyError, ARM_DEFAULT_URL } from './provisioning.js';
export type { ReadyFailure, ReadyVm, WaitForSucceededOptions } from './provisioning.js';
export { silentLog, type Log } from './log.js';
export { ScheduledEventsWatcher, eventsToDrainFor, msUntilNotBefore, DRAIN_EVENT_TYPES, type DrainEventType, type WatcherOptions } from './scheduled-events.js';
