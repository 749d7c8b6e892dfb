export { TaskStore, MAX_LOSSES, systemClock, encodeResult } from './store.js';
export type { Clock, StoreOptions, SessionRef, ClaimRequest, ClaimedTask, SubmitOutcome, LeaseRef, ReportItem, LeaseToCancel, ReportOutcome, LostTasks, Page } from './store.js';
export { openDatabase, schemaVersion, type SyncMode } from './db.js';
export { MIGRATIONS } from './migrations.js';
