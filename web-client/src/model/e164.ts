// Client-side check of the number before it is sent: same rule as the server's
// (`to: must be E.164: '+' then 8 to 15 digits`), with the digit bounds the server publishes
// (GetServerInfo's `limits`, see model/limits.ts), so most mistakes never leave the page.
import { FALLBACK_LIMITS, type Limits } from "./limits";

/** The digit bounds of `to`. */
export type DigitBounds = Pick<Limits, "minToDigits" | "maxToDigits">;

/** The E.164 shape: '+' then `minToDigits` to `maxToDigits` digits, nothing else. */
export function e164Pattern(bounds: DigitBounds = FALLBACK_LIMITS): RegExp {
  return new RegExp(`^\\+[0-9]{${bounds.minToDigits},${bounds.maxToDigits}}$`);
}

/** The E.164 shape with this build's bounds (8 to 15 digits). */
export const E164_PATTERN = e164Pattern();

/** Help text shown under the phone number field. */
export function e164Help(bounds: DigitBounds = FALLBACK_LIMITS): string {
  return `International format: '+' then country code and number, ${bounds.minToDigits} to ${bounds.maxToDigits} digits, e.g. +14155551212.`;
}

/** Help text with this build's bounds. */
export const E164_HELP = e164Help();

/**
 * Removes the spaces, dashes, dots and brackets people type or paste ("+1 (415) 555-1212"),
 * keeping everything else so that a wrong character is still reported rather than hidden.
 */
export function normalizePhone(input: string): string {
  return input.trim().replace(/[\s\-().]/g, "");
}

/** Returns null when `normalized` is valid E.164 (within `bounds`), else a message for the user. */
export function validateE164(normalized: string, bounds: DigitBounds = FALLBACK_LIMITS): string | null {
  if (normalized === "") return "Enter the number to call.";
  if (!normalized.startsWith("+")) return "Start with '+' and the country code, e.g. +14155551212.";
  const digits = normalized.slice(1);
  if (!/^[0-9]*$/.test(digits)) return "Only digits may follow the '+'.";
  if (digits.length < bounds.minToDigits) {
    return `Too short: ${digits.length} digits, at least ${bounds.minToDigits} needed.`;
  }
  if (digits.length > bounds.maxToDigits) {
    return `Too long: ${digits.length} digits, at most ${bounds.maxToDigits} allowed.`;
  }
  return e164Pattern(bounds).test(normalized) ? null : "Not a valid E.164 number.";
}
