//! Reading the few fields the plugins need from a provider's JSON answer.

use serde_json::Value;

/// The string at `key` when `json` is an object that has one.
pub fn json_str<'a>(json: Option<&'a Value>, key: &str) -> Option<&'a str> {
    json.and_then(|j| j.get(key)).and_then(Value::as_str)
}

/// The provider's id for an accepted message (Mailgun `id`, Twilio `sid`).
/// An empty id is none: the host would log and dead-letter it as if it named
/// a message.
pub fn provider_message_id(json: Option<&Value>, key: &str) -> Option<String> {
    json_str(json, key)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Option<Value> {
        serde_json::from_str(body).ok()
    }

    #[test]
    fn strings_of_objects_only() {
        let json = parse(r#"{"id":"<m1@mg>","n":1,"empty":""}"#);
        assert_eq!(json_str(json.as_ref(), "id"), Some("<m1@mg>"));
        assert_eq!(json_str(json.as_ref(), "empty"), Some(""));
        assert_eq!(json_str(json.as_ref(), "n"), None);
        assert_eq!(json_str(json.as_ref(), "absent"), None);
        assert_eq!(json_str(parse(r#"["id"]"#).as_ref(), "id"), None);
        assert_eq!(json_str(None, "id"), None);
    }

    #[test]
    fn an_empty_id_is_none() {
        let id = |body: &str| provider_message_id(parse(body).as_ref(), "sid");
        assert_eq!(id(r#"{"sid":"SM1"}"#), Some("SM1".to_string()));
        assert_eq!(id(r#"{"sid":""}"#), None);
        assert_eq!(id(r#"{"id":"SM1"}"#), None);
        assert_eq!(id("<html>ok</html>"), None);
    }
}
