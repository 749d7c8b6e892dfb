/**
 * The readiness gate: the worker joins only when its machine is ready. Each mode is a
 * ReadinessGate; `createGate` picks one (for `auto`, by probing IMDS).
 */
import { access } from 'node:fs/promises';
import { AzureReadyError, ImdsClient, waitForSucceeded, type ComputeFacts } from '@pullman/azure';
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
  /** IMDS compute facts when the gate was azure (Scheduled Events need compute.name). */
  compute?: ComputeFacts;
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

/**
 * Waits until Azure reports this VM `provisioningState = Succeeded` (packages/azure explains
 * why). Deleting or Failed ends the wait with a refusal: the worker never registers.
 */
const azureGate: ReadinessGate = {
  mode: 'azure',
  async wait({ config, log, signal }) {
    const imds = new ImdsClient({ baseUrl: config.imdsUrl, log });
    try {
      const { vm, facts } = await waitForSucceeded({
        imds,
        armUrl: config.armUrl,
        clientId: config.azureClientId ?? undefined,
        intervalMs: config.readyIntervalMs,
        timeoutMs: config.readyTimeoutMs,
        log,
        signal,
      });
      return { vm, compute: facts };
    } catch (err) {
      if (err instanceof AzureReadyError) throw new GateError(err.reason, err.message);
      // IMDS unreachable after its retries, or an unusable answer: not on a working Azure VM.
      throw new GateError('unavailable', `cannot read this VM's identity from IMDS at ${config.imdsUrl}: ${(err as Error).message}`);
    }
  },
};

const GATES: Record<Exclude<ReadyMode, 'auto'>, ReadinessGate> = {
  none: noneGate,
  'cloud-init': cloudInitGate,
  azure: azureGate,
};

/**
 * Resolves a mode to a gate. `auto` is `azure` when IMDS answers within a short timeout (we
 * are on an Azure VM), else `none`.
 */
export async function createGate(mode: ReadyMode, config?: Pick<WorkerConfig, 'imdsUrl'>, log?: Logger): Promise<ReadinessGate> {
  if (mode !== 'auto') return GATES[mode];
  if (!config) return noneGate;
  const onAzure = await new ImdsClient({ baseUrl: config.imdsUrl }).available();
  log?.info({ imds: config.imdsUrl, onAzure }, onAzure ? 'IMDS answered: using the azure gate' : 'no IMDS: using no readiness gate');
  return onAzure ? azureGate : noneGate;
}
