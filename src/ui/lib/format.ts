/** Number formatting for the lab's tables and labels. */
export function pct(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || Number.isNaN(x) ? '–' : `${(100 * x).toFixed(digits)} %`;
}

export function num(x: number | null | undefined, digits = 3): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits);
}

/** Small errors (self-check) in scientific notation so 3e-8 does not print as 0.000000. */
export function sci(x: number | null | undefined): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : x === 0 ? '0' : x.toExponential(2);
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '?';
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

export function ms(n: number): string {
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`;
}

/** Error text for the UI: the message, never a stack. */
export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

export function isAbort(e: unknown): boolean {
  return (e instanceof Error || e instanceof DOMException) && (e as Error).name === 'AbortError';
}
