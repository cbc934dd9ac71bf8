/** Human-readable progress and results go to stderr; stdout carries only the JSON line. */
export type Say = (line: string) => void;

export const sayToStderr: Say = (line) => void process.stderr.write(`${line}\n`);

/** A measurement's rate, or 0 when it took no measurable time. */
export function perSecond(count: number, seconds: number): number {
  return seconds > 0 ? count / seconds : 0;
}

export function round(value: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export function elapsedSeconds(startNs: bigint): number {
  return Number(process.hrtime.bigint() - startNs) / 1e9;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
