// Decimal strings as the API sends them ("65000.10"): exact arithmetic on BigInt, never
// through floating point. Only the charts turn them into numbers, for drawing.

/** A decimal as an integer number of 10^-scale units. */
export interface Fixed {
  units: bigint;
  scale: number;
}

const DECIMAL = /^-?\d+(\.\d+)?$/;

/** Parses a decimal string; null if it is not one (no exponent, no sign other than "-"). */
export function parse(text: string): Fixed | null {
  const s = text.trim();
  if (!DECIMAL.test(s)) return null;
  const negative = s.startsWith("-");
  const body = negative ? s.slice(1) : s;
  const [whole, fraction = ""] = body.split(".");
  const units = BigInt(whole + fraction);
  return { units: negative ? -units : units, scale: fraction.length };
}

/** Whether `text` is a decimal the API takes: digits with an optional point, no sign. */
export function isDecimal(text: string): boolean {
  return /^\d+(\.\d+)?$/.test(text.trim());
}

function rescale(value: Fixed, scale: number): bigint {
  return value.units * 10n ** BigInt(scale - value.scale);
}

function aligned(a: Fixed, b: Fixed): [bigint, bigint, number] {
  const scale = Math.max(a.scale, b.scale);
  return [rescale(a, scale), rescale(b, scale), scale];
}

function must(text: string): Fixed {
  const value = parse(text);
  if (value === null) throw new Error(`not a decimal: ${text}`);
  return value;
}

/** Renders a fixed value with at least `minScale` decimals (trailing zeros trimmed beyond). */
export function render(value: Fixed, minScale = 0): string {
  const negative = value.units < 0n;
  const digits = (negative ? -value.units : value.units).toString().padStart(value.scale + 1, "0");
  const whole = digits.slice(0, digits.length - value.scale);
  let fraction = digits.slice(digits.length - value.scale).replace(/0+$/, "");
  if (fraction.length < minScale) fraction = fraction.padEnd(minScale, "0");
  const shown = fraction.length > 0 ? `${whole}.${fraction}` : whole;
  return negative ? `-${shown}` : shown;
}

/** -1, 0 or 1 as a is below, equal to or above b. */
export function compare(a: string, b: string): number {
  const [x, y] = aligned(must(a), must(b));
  return x < y ? -1 : x > y ? 1 : 0;
}

export function add(a: string, b: string): string {
  const [x, y, scale] = aligned(must(a), must(b));
  return render({ units: x + y, scale });
}

export function sub(a: string, b: string): string {
  const [x, y, scale] = aligned(must(a), must(b));
  return render({ units: x - y, scale });
}

export function mul(a: string, b: string): string {
  const x = must(a);
  const y = must(b);
  return render({ units: x.units * y.units, scale: x.scale + y.scale });
}

export function isZero(text: string): boolean {
  return must(text).units === 0n;
}

/** Whether `value` is a whole multiple of `step` (step > 0). */
export function isMultiple(value: string, step: string): boolean {
  const [x, y] = aligned(must(value), must(step));
  return y !== 0n && x % y === 0n;
}

/** How many decimals a step has ("0.010" → 2): the precision to show its multiples with. */
export function decimalsOf(step: string): number {
  const value = must(step);
  return render(value).split(".")[1]?.length ?? 0;
}

/**
 * For display: `decimals` places exactly (padded or, for longer input, cut: a display never
 * rounds a price up), thousands grouped with a thin space.
 */
export function format(text: string, decimals?: number): string {
  const value = parse(text);
  if (value === null) return text;
  let shown = render(value, decimals ?? 0);
  if (decimals !== undefined) {
    const [whole, fraction = ""] = shown.split(".");
    shown = decimals > 0 ? `${whole}.${fraction.slice(0, decimals).padEnd(decimals, "0")}` : whole;
  }
  const negative = shown.startsWith("-");
  const [whole, fraction] = (negative ? shown.slice(1) : shown).split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009");
  return `${negative ? "-" : ""}${grouped}${fraction !== undefined ? `.${fraction}` : ""}`;
}

/** A number for a chart's axis (drawing only; never sent back). */
export function toNumber(text: string): number {
  return Number(text);
}
