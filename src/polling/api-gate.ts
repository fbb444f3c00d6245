import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';

/**
 * Whether polls may go out to the Letta API. Its states:
 *   open    polls go out.
 *   paused  the API refused our credentials (401/403), or the base URL does not answer like a
 *           Letta API (a route-level 404, a health check that is not Letta's). No poll goes
 *           out but one probe per `probeEveryMs`; no run is dropped; readiness is false.
 * A pause changes only on answers (a probe's), so readiness does not flicker.
 */
export type PauseReason = 'credentials' | 'not-letta';

export type ApiGateState =
  | { state: 'open' }
  | { state: 'paused'; reason: PauseReason; detail: string; nextProbeAt: number };

export interface ApiGate {
  readonly current: ApiGateState;
  readonly open: boolean;
  /** Enters (or stays in) a pause; logs once per pause, loudly. */
  pause(reason: PauseReason, detail: string): void;
  /** An answer that shows the API is fine: polling resumes. */
  resume(): void;
  /** True once per `probeEveryMs` while paused: the caller may make its one probe now. */
  takeProbe(): boolean;
  /** A probe taken but not used (nothing was due to carry it): the next claim may take it. */
  returnProbe(): void;
  /** Until the next probe may go (0 when open). */
  readonly msToProbe: number;
  /** Why the daemon is not ready, in words, or undefined. */
  readonly notReadyReason: string | undefined;
}

export function makeApiGate(options: { clock: Clock; probeEveryMs: number; log: Logger; baseUrl: string; onChange?: (state: ApiGateState) => void }): ApiGate {
  let current: ApiGateState = { state: 'open' };

  function describe(reason: PauseReason, detail: string): string {
    return reason === 'credentials'
      ? `Letta API refused our credentials (${detail}); check LETTA_API_KEY`
      : `the Letta API at ${options.baseUrl} does not answer like a Letta API (${detail}); check LETTA_BASE_URL`;
  }

  return {
    get current() {
      return current;
    },
    get open() {
      return current.state === 'open';
    },
    pause(reason, detail) {
      if (current.state === 'paused' && current.reason === reason) return;
      current = { state: 'paused', reason, detail, nextProbeAt: options.clock.now() + options.probeEveryMs };
      options.log.error({ reason }, `${describe(reason, detail)}. Polling is paused (one probe every ${options.probeEveryMs} ms); no run is dropped`);
      options.onChange?.(current);
    },
    resume() {
      if (current.state === 'open') return;
      const was = current;
      current = { state: 'open' };
      options.log.warn({ reason: was.reason }, was.reason === 'credentials' ? 'Letta API accepts our credentials again; polling resumes' : 'the base URL answers like a Letta API again; polling resumes');
      options.onChange?.(current);
    },
    takeProbe() {
      if (current.state !== 'paused' || options.clock.now() < current.nextProbeAt) return false;
      current = { ...current, nextProbeAt: options.clock.now() + options.probeEveryMs };
      return true;
    },
    returnProbe() {
      if (current.state === 'paused') current = { ...current, nextProbeAt: options.clock.now() };
    },
    get msToProbe() {
      return current.state === 'paused' ? Math.max(0, current.nextProbeAt - options.clock.now()) : 0;
    },
    get notReadyReason() {
      return current.state === 'paused' ? describe(current.reason, current.detail) : undefined;
    },
  };
}
