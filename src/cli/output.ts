/** What every command shares: its exit codes, and printing its answer. */
export const EXIT_OK = 0;
export const EXIT_FATAL = 1;
/** EX_CONFIG (sysexits.h): invalid configuration or arguments. */
export const EXIT_CONFIG = 78;
/** A short command interrupted by a signal, as shells count it (128 + SIGINT). */
export const EXIT_INTERRUPTED = 130;

export function print(text: string): number {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  return EXIT_OK;
}
