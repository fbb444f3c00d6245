/** What a Run's status says: ended (and how) or still going; and Letta's timestamps. */

export const TERMINAL_STATUSES = ['completed', 'failed', 'cancelled'] as const;
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

/** Statuses Letta has used for runs still in progress, including older job statuses. */
const PENDING_STATUSES = new Set(['created', 'running', 'pending']);

/** Letta's StopReasonType values (the API accepts more over time; routing by them checks these). */
export const STOP_REASONS = [
  'end_turn', 'error', 'llm_api_error', 'invalid_llm_response', 'invalid_tool_call', 'max_steps', 'max_tokens_exceeded',
  'no_tool_call', 'tool_rule', 'cancelled', 'insufficient_credits', 'requires_approval', 'context_window_overflow_in_system_prompt',
] as const;

export type RunState =
  | { terminal: true; type: `run.${TerminalStatus}` }
  | { terminal: false; known: boolean };

/**
 * Status alone decides: `requires_approval`, `max_steps` and `tool_rule` stop reasons come with
 * status `completed`, and Letta Cloud may report a terminal status before `stop_reason` is set.
 */
export function classifyRun(status: string | null | undefined): RunState {
  if (status === 'completed' || status === 'failed' || status === 'cancelled') {
    return { terminal: true, type: `run.${status}` };
  }
  return { terminal: false, known: status == null || PENDING_STATUSES.has(status) };
}

/** Letta may send naive timestamps (`2025-10-17T21:53:05.123456`); they are UTC. */
export function parseLettaTime(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  const zoned = /([zZ]|[+-]\d\d:?\d\d)$/.test(value) ? value : `${value}Z`;
  const ms = Date.parse(zoned);
  return Number.isNaN(ms) ? undefined : ms;
}
