import { describe, expect, it } from "vitest";
import { parseVariables } from "./variables";

describe("parseVariables", () => {
  it("reads name=value lines, keeping the value as typed", () => {
    expect(parseVariables("name=Sam\n\n day = Friday at 3 \nformula=a=b")).toEqual({
      ok: true,
      variables: { name: "Sam", day: " Friday at 3 ", formula: "a=b" },
    });
    expect(parseVariables("")).toEqual({ ok: true, variables: {} });
  });

  it("names the line that is wrong", () => {
    expect(parseVariables("name=Sam\nnope")).toEqual({ ok: false, error: "Line 2: write name=value." });
    expect(parseVariables("1x=a")).toMatchObject({ ok: false, error: expect.stringContaining("Line 1") });
    expect(parseVariables("a=1\na=2")).toEqual({ ok: false, error: "Line 2: a is given twice." });
    expect(parseVariables(`v=${"x".repeat(1025)}`)).toMatchObject({ ok: false });
    const many = Array.from({ length: 33 }, (_, i) => `v${i}=x`).join("\n");
    expect(parseVariables(many)).toEqual({ ok: false, error: "At most 32 variables." });
  });
});
