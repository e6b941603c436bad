//! `multipart/form-data` (RFC 7578) for text fields, the one body type
//! Mailgun's spec declares for sending.

/// The boundary when no value contains it. A fixed, recognisable boundary
/// keeps `render` a pure function: the same event always gives the same bytes.
pub const BOUNDARY_PREFIX: &str = "notify-host-mailgun-form-boundary";

/// An encoded form: the boundary (for the `Content-Type` header) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub boundary: String,
    pub body: Vec<u8>,
}

impl Form {
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }
}

/// Encodes text fields in order; a name may repeat (Mailgun's `o:tag`).
/// Names are the plugin's own constants: plain ASCII without quotes.
pub fn encode(fields: &[(&str, &str)]) -> Form {
    let boundary = choose_boundary(fields);
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\"\r\n\r\n");
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    Form { boundary, body }
}

/// The prefix, or the prefix with the first counter suffix that no field
/// contains. Each occurrence of the prefix in the values rules out at most one
/// counter, so this ends, and stays far below RFC 2046's 70-character limit
/// for any body Mailgun would accept.
fn choose_boundary(fields: &[(&str, &str)]) -> String {
    let clashes = |candidate: &str| {
        fields
            .iter()
            .any(|(n, v)| n.contains(candidate) || v.contains(candidate))
    };
    if !clashes(BOUNDARY_PREFIX) {
        return BOUNDARY_PREFIX.to_string();
    }
    (1u64..)
        .map(|n| format!("{BOUNDARY_PREFIX}-{n}-"))
        .find(|candidate| !clashes(candidate))
        .unwrap_or_else(|| BOUNDARY_PREFIX.to_string())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A small RFC 7578 reader for the tests: (name, value) pairs in order.
    pub fn parse(content_type: &str, body: &[u8]) -> Vec<(String, String)> {
        let boundary = content_type
            .split_once("boundary=")
            .map(|(_, b)| b.to_string())
            .unwrap_or_else(|| panic!("no boundary in {content_type}"));
        let text = String::from_utf8(body.to_vec()).unwrap_or_else(|e| panic!("{e}"));
        let delimiter = format!("--{boundary}");
        let mut parts: Vec<&str> = text.split(delimiter.as_str()).collect();
        assert_eq!(parts.remove(0), "", "nothing before the first boundary");
        assert_eq!(parts.pop(), Some("--\r\n"), "closing delimiter last");
        parts
            .into_iter()
            .map(|part| {
                let part = part
                    .strip_prefix("\r\n")
                    .unwrap_or_else(|| panic!("CRLF after boundary: {part:?}"));
                let part = part
                    .strip_suffix("\r\n")
                    .unwrap_or_else(|| panic!("CRLF before boundary: {part:?}"));
                let (head, value) = part
                    .split_once("\r\n\r\n")
                    .unwrap_or_else(|| panic!("no header end: {part:?}"));
                let name = head
                    .strip_prefix("Content-Disposition: form-data; name=\"")
                    .and_then(|n| n.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("bad part header {head:?}"));
                (name.to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn fields_round_trip_in_order_with_repeats() {
        let fields = [
            ("from", "a@b"),
            ("o:tag", "x"),
            ("o:tag", "y"),
            ("text", "line 1\r\nline 2 ✓"),
            ("empty", ""),
        ];
        let form = encode(&fields);
        assert_eq!(form.boundary, BOUNDARY_PREFIX);
        assert_eq!(
            form.content_type(),
            format!("multipart/form-data; boundary={BOUNDARY_PREFIX}")
        );
        let got = parse(&form.content_type(), &form.body);
        let want: Vec<_> = fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn exact_bytes() {
        let form = encode(&[("a", "1")]);
        let want = format!("--{BOUNDARY_PREFIX}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--{BOUNDARY_PREFIX}--\r\n");
        assert_eq!(String::from_utf8_lossy(&form.body), want);
    }

    #[test]
    fn boundary_is_lengthened_past_any_value_containing_it() {
        let hostile = format!("x--{BOUNDARY_PREFIX}-1- and {BOUNDARY_PREFIX}-2-");
        let form = encode(&[("text", &hostile)]);
        assert_eq!(form.boundary, format!("{BOUNDARY_PREFIX}-3-"));
        assert!(form.boundary.len() <= 70);
        assert_eq!(
            parse(&form.content_type(), &form.body),
            [("text".to_string(), hostile.clone())]
        );
        // Deterministic: the same input always gives the same bytes.
        assert_eq!(encode(&[("text", &hostile)]), form);
    }
}
