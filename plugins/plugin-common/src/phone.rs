/// Whether `s` is an E.164 number: `+`, a non-zero digit, then 1 to 14 more
/// ASCII digits (`^\+[1-9]\d{1,14}$`).
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_shapes() {
        for good in ["+15555550123", "+12", "+123456789012345", "+447911123456"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "",
            "+",
            "+1",
            "15555550123",
            "+05555550123",
            "+1234567890123456",
            "+1 555 555 0123",
            "+1-555-5550123",
            "++15555550123",
            "+1555555012a",
            "+１２３",
            "+15555550123\n",
        ] {
            assert!(!is_e164(bad), "{bad:?}");
        }
    }
}
