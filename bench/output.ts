/**
 * What the bench prints while it runs: every figure as one `FIGURE <name>: ...` line on stdout
 * (test/bench-smoke.test.ts looks for them), progress notes on stderr.
 */

export function figure(name: string, text: string): void {
  process.stdout.write(`FIGURE ${name}: ${text}\n`);
}

export function note(text: string): void {
  process.stderr.write(`bench: ${text}\n`);
}

export const verdict = (met: boolean | undefined) => (met === undefined ? 'n/a' : met ? 'MET' : 'MISSED');

