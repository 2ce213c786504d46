// PlaceCall `variables` as the form takes them: one `name=value` per line, for `{{name}}` placeholders.

/** Bounds the server enforces (PlaceCallRequest.variables); checked here so the message comes at once. */
export const MAX_VARIABLES = 32;
export const MAX_VARIABLE_VALUE_BYTES = 1024;
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** The parsed variables, or what is wrong with the text. */
export type ParsedVariables =
  { readonly ok: true; readonly variables: Record<string, string> } | { readonly ok: false; readonly error: string };

/**
 * Parses `name=value` lines (blank lines skipped; the value is everything after the first `=`, kept as
 * typed). A repeated name, a bad name or a value over the limit is an error naming the line.
 */
export function parseVariables(text: string): ParsedVariables {
  const variables: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  let count = 0;
  for (const [i, raw] of lines.entries()) {
    if (raw.trim() === "") continue;
    const at = raw.indexOf("=");
    const name = (at < 0 ? raw : raw.slice(0, at)).trim();
    if (at < 0) return { ok: false, error: `Line ${i + 1}: write name=value.` };
    if (!NAME.test(name)) {
      return { ok: false, error: `Line ${i + 1}: a name is letters, digits and _, not starting with a digit.` };
    }
    if (Object.hasOwn(variables, name)) return { ok: false, error: `Line ${i + 1}: ${name} is given twice.` };
    const value = raw.slice(at + 1);
    if (new TextEncoder().encode(value).length > MAX_VARIABLE_VALUE_BYTES) {
      return { ok: false, error: `Line ${i + 1}: a value is at most ${MAX_VARIABLE_VALUE_BYTES} bytes.` };
    }
    variables[name] = value;
    count += 1;
  }
  if (count > MAX_VARIABLES) return { ok: false, error: `At most ${MAX_VARIABLES} variables.` };
  return { ok: true, variables };
}
