export { WorkerDaemon, backoffDelay, type DaemonState } from './daemon.js';
export { startExecution, attemptPaths, type Execution, type ExecutorOptions, type StopReason } from './executor.js';
export { Outbox, readOutboxOf, type PendingResult, type RunningRecord } from './outbox.js';
export { parseWorkerCommand, READY_MODES, type ReadyMode, type WorkerConfig } from './config.js';
export { createGate, GateError, GATE_EXIT_CODES, type ReadinessGate, type GateContext, type GateResult, type GateFailure } from './gate.js';
