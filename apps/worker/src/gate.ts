/**
 * The readiness gate: the worker joins only when its machine is ready. Each mode is a
 * ReadinessGate; `createGate` picks one. The Azure gate (wait for provisioningState =
 * Succeeded) plugs in here as one more entry in GATES.
 */
import { access } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { VmFacts } from '@pullman/protocol';
import type { ReadyMode, WorkerConfig } from './config.js';

/** Why the gate refused: each maps to a distinct, documented exit code of `wait-ready`. */
export type GateFailure = 'timeout' | 'vm-deleting' | 'vm-failed' | 'forbidden' | 'unavailable' | 'aborted';

export const GATE_EXIT_CODES: Record<GateFailure, number> = {
  timeout: 3,
  'vm-deleting': 4,
  'vm-failed': 5,
  forbidden: 6,
  unavailable: 7,
  aborted: 8,
};

export class GateError extends Error {
  override readonly name = 'GateError';
  constructor(
    readonly reason: GateFailure,
    message: string,
  ) {
    super(message);
  }
  get exitCode(): number {
    return GATE_EXIT_CODES[this.reason];
  }
}

export interface GateResult {
  /** Facts about the VM, or null off Azure. */
  vm: VmFacts | null;
}

export interface GateContext {
  config: WorkerConfig;
  log: Logger;
  signal: AbortSignal;
}

export interface ReadinessGate {
  readonly mode: Exclude<ReadyMode, 'auto'>;
  /** Resolves when ready; rejects with GateError when it never will be. */
  wait(ctx: GateContext): Promise<GateResult>;
}

const noneGate: ReadinessGate = {
  mode: 'none',
  async wait() {
    return { vm: null };
  },
};

/** Waits for cloud-init's boot-finished marker, polling at the ready interval. */
const cloudInitGate: ReadinessGate = {
  mode: 'cloud-init',
  async wait({ config, log, signal }) {
    const deadline = Date.now() + config.readyTimeoutMs;
    let logged = false;
    for (;;) {
      try {
        await access(config.cloudInitBootFinished);
        log.info({ path: config.cloudInitBootFinished }, 'cloud-init finished');
        return { vm: null };
      } catch {
        if (!logged) log.info({ path: config.cloudInitBootFinished }, 'waiting for cloud-init to finish');
        logged = true;
      }
      if (Date.now() >= deadline) throw new GateError('timeout', `cloud-init did not finish within ${config.readyTimeoutMs}ms (${config.cloudInitBootFinished} is missing)`);
      await sleep(Math.min(config.readyIntervalMs, Math.max(0, deadline - Date.now())), undefined, { signal }).catch(() => {
        throw new GateError('aborted', 'stopped while waiting for cloud-init');
      });
    }
  },
};

const GATES: Partial<Record<Exclude<ReadyMode, 'auto'>, ReadinessGate>> = {
  none: noneGate,
  'cloud-init': cloudInitGate,
};

/**
 * Resolves a mode to a gate. `auto` means `azure` when the Azure gate is available and IMDS
 * answers; until the Azure gate is built in, `auto` is `none`.
 */
export async function createGate(mode: ReadyMode): Promise<ReadinessGate> {
  if (mode === 'auto') return GATES.azure ?? noneGate;
  const gate = GATES[mode];
  if (!gate) throw new GateError('unavailable', `ready mode "${mode}" is not available in this build`);
  return gate;
}
