//! What logs and traces may say about a phone number: its country calling
//! code and its last two digits, never the rest (docs/security.md "Logs").
//!
//! `+14155550123` is shown as `+1***23`, `+442071838750` as `+44***50`,
//! `+353861234567` as `+353***67`. The country code is found with the ITU-T
//! E.164 assignment (one, two or three digits, [`country_code_len`]); the
//! masked part is always `***`, whatever its length, so the length of the
//! number is not told either. Free text (an end reason quoting the provider,
//! an error message) goes through [`numbers_in_text`], which masks every
//! `+` followed by 7 to 15 digits.
//!
//! Pure functions, no I/O: the edges and the hub call them before a number
//! reaches a log line or a span attribute.

/// Digits kept at the end of a number.
pub const KEPT_TAIL: usize = 2;

/// Fewest digits after `+` that [`numbers_in_text`] treats as a phone number
/// (shorter runs are left alone: prices, counts).
const MIN_DIGITS: usize = 7;
/// Most digits of an E.164 number.
const MAX_DIGITS: usize = 15;

/// Length of the country calling code at the start of `digits` (ITU-T
/// E.164 assignments): `1` (NANP) and `7` are one digit, the two-digit codes
/// are listed, every other code is three digits.
pub fn country_code_len(digits: &str) -> usize {
    let b = digits.as_bytes();
    match b.first() {
        Some(b'1' | b'7') => 1,
        Some(_) => {
            let two = digits.get(..2).unwrap_or_default();
            const TWO_DIGIT: &[&str] = &[
                "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47", "48",
                "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65", "66", "81",
                "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
            ];
            if TWO_DIGIT.contains(&two) { 2 } else { 3 }
        }
        None => 0,
    }
}

/// A phone number as logs show it: `+<country code>***<last 2 digits>`.
/// Anything that is not `+` and 7–15 digits becomes `***` (it is not a
/// number we know how to shorten, and it may still be one).
pub fn phone(number: &str) -> String {
    let Some(digits) = number.strip_prefix('+') else {
        return "***".into();
    };
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return "***".into();
    }
    let cc = country_code_len(digits);
    format!("+{}***{}", &digits[..cc], &digits[digits.len() - KEPT_TAIL..])
}

/// `text` with every phone number in it (`+` and 7–15 digits) masked as
/// [`phone`] does; everything else is kept.
pub fn numbers_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('+') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let run = after.bytes().take_while(u8::is_ascii_digit).count();
        if (MIN_DIGITS..=MAX_DIGITS).contains(&run) {
            out.push_str(&phone(&rest[at..at + 1 + run]));
        } else {
            out.push_str(&rest[at..at + 1 + run]);
        }
        rest = &after[run..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_country_code_and_last_two_digits() {
        assert_eq!(phone("+14155550123"), "+1***23");
        assert_eq!(phone("+15005550006"), "+1***06");
        assert_eq!(phone("+442071838750"), "+44***50");
        assert_eq!(phone("+4930123456"), "+49***56");
        assert_eq!(phone("+353861234567"), "+353***67");
        assert_eq!(phone("+79161234567"), "+7***67");
        assert_eq!(phone("+8613812345678"), "+86***78");
        assert_eq!(phone("+886912345678"), "+886***78");
    }

    #[test]
    fn anything_else_is_masked_whole() {
        for s in [
            "",
            "+",
            "4155550123",
            "+1555",
            "+1234567890123456",
            "+1415555012a",
            "client:alice",
        ] {
            assert_eq!(phone(s), "***", "{s:?}");
        }
    }

    #[test]
    fn no_more_than_the_code_and_two_digits_survive() {
        for n in ["+14155550123", "+442071838750", "+353861234567", "+61412345678"] {
            let masked = phone(n);
            let digits: String = masked.chars().filter(char::is_ascii_digit).collect();
            assert!(digits.len() <= 3 + KEPT_TAIL, "{masked}");
            assert!(!masked.contains(&n[n.len() - 5..]), "{masked} keeps too much of {n}");
        }
    }

    #[test]
    fn numbers_in_free_text_are_masked_and_the_rest_kept() {
        assert_eq!(
            numbers_in_text("The 'To' number +14155550123 is not valid; from +442071838750."),
            "The 'To' number +1***23 is not valid; from +44***50."
        );
        assert_eq!(
            numbers_in_text("calling +15550100 via voice-live"),
            "calling +1***00 via voice-live"
        );
        assert_eq!(
            numbers_in_text("+5 stars, +123456 and a + sign"),
            "+5 stars, +123456 and a + sign"
        );
        assert_eq!(numbers_in_text("ends with +"), "ends with +");
        assert_eq!(numbers_in_text("été +33612345678 fin"), "été +33***78 fin");
        assert_eq!(numbers_in_text(""), "");
    }
}
