// Client-side check of the number before it is sent: same rule as the server's
// (`to: must be E.164: '+' then 8 to 15 digits`), so most mistakes never leave the page.

/** The E.164 shape the server accepts: '+' then 8 to 15 digits, nothing else. */
export const E164_PATTERN = /^\+[0-9]{8,15}$/;

/** Help text shown under the phone number field. */
export const E164_HELP = "International format: '+' then country code and number, 8 to 15 digits, e.g. +14155551212.";

/**
 * Removes the spaces, dashes, dots and brackets people type or paste ("+1 (415) 555-1212"),
 * keeping everything else so that a wrong character is still reported rather than hidden.
 */
export function normalizePhone(input: string): string {
  return input.trim().replace(/[\s\-().]/g, "");
}

/** Returns null when `normalized` is valid E.164, else a message for the user. */
export function validateE164(normalized: string): string | null {
  if (normalized === "") return "Enter the number to call.";
  if (!normalized.startsWith("+")) return "Start with '+' and the country code, e.g. +14155551212.";
  const digits = normalized.slice(1);
  if (!/^[0-9]*$/.test(digits)) return "Only digits may follow the '+'.";
  if (digits.length < 8) return `Too short: ${digits.length} digits, at least 8 needed.`;
  if (digits.length > 15) return `Too long: ${digits.length} digits, at most 15 allowed.`;
  return E164_PATTERN.test(normalized) ? null : "Not a valid E.164 number.";
}
