/** Number formats shared by the terminal output and the HTML report; '—' where a value is missing. */
export const DASH = '—';

export const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export const fmt = {
  /** Milliseconds, bare, with a precision that suits their size (tables with a "ms" heading). */
  msValue(v: number | null | undefined): string {
    if (!isNum(v)) return DASH;
    return v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : v >= 1 ? 2 : 3);
  },
  /** Milliseconds with their unit; seconds from 10 s. */
  ms(v: number | null | undefined): string {
    if (!isNum(v)) return DASH;
    if (v >= 10_000) return `${(v / 1000).toFixed(1)} s`;
    if (v >= 100) return `${v.toFixed(0)} ms`;
    return `${v.toPrecision(3)} ms`;
  },
  /** A duration: milliseconds below a second, then seconds, then minutes. */
  duration(v: number | null | undefined): string {
    if (!isNum(v)) return DASH;
    if (v < 1000) return `${Math.round(v)} ms`;
    if (v < 60_000) return `${(v / 1000).toFixed(2)} s`;
    const m = Math.floor(v / 60_000);
    return `${m} min ${Math.round((v - m * 60_000) / 1000)} s`;
  },
  /** An error: exponential, two significant digits (Infinity spelled out). */
  err(v: number | null | undefined): string {
    if (v === null || v === undefined) return DASH;
    return Number.isFinite(v) ? v.toExponential(1) : String(v);
  },
  /** A speedup or ratio: two decimals and ×. */
  ratio(v: number | null | undefined): string {
    return isNum(v) ? `${v.toFixed(2)}×` : DASH;
  },
};
