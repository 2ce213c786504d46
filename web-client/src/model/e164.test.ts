import { describe, expect, it } from "vitest";
import { E164_HELP, E164_PATTERN, e164Pattern, normalizePhone, validateE164 } from "./e164";

describe("validateE164", () => {
  it.each(["+15550100", "+14155551212", "+441632960961", "+123456789012345"])("accepts %s", (n) => {
    expect(validateE164(n)).toBeNull();
    expect(E164_PATTERN.test(n)).toBe(true);
  });

  it.each([
    ["", "Enter the number"],
    ["14155551212", "Start with '+'"],
    ["+1555010", "Too short: 7 digits"],
    ["+1234567890123456", "Too long: 16 digits"],
    ["+1415555CALL", "Only digits"],
    ["++14155551212", "Only digits"],
  ])("rejects %j", (n, message) => {
    expect(validateE164(n)).toContain(message);
    expect(E164_PATTERN.test(n)).toBe(false);
  });
});

describe("validateE164 with the server's bounds", () => {
  const bounds = { minToDigits: 10, maxToDigits: 11 };

  it("applies the digit counts the server publishes", () => {
    expect(validateE164("+15550100", bounds)).toBe("Too short: 8 digits, at least 10 needed.");
    expect(validateE164("+123456789012", bounds)).toBe("Too long: 12 digits, at most 11 allowed.");
    expect(validateE164("+14155551212", bounds)).toBeNull();
    expect(e164Pattern(bounds).test("+15550100")).toBe(false);
    expect(E164_HELP).toContain("8 to 15 digits");
  });
});

describe("normalizePhone", () => {
  it("drops the separators people type, keeps everything else", () => {
    expect(normalizePhone(" +1 (415) 555-1212 ")).toBe("+14155551212");
    expect(normalizePhone("+44.1632.960961")).toBe("+441632960961");
    expect(normalizePhone("+1 415 CALL")).toBe("+1415CALL");
  });
});
