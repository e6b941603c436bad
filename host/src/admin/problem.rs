//! The status API's one error type: an RFC 9457 problem document, served
//! as `application/problem+json`.
//!
//! Invariant: every error the `/v1` routes answer (a bad parameter, a
//! missing token, an unknown resource, a ledger that cannot be read) is a
//! [`Problem`] built here, so clients parse one shape and the OpenAPI
//! document describes it once. `detail` is written for an operator: it
//! never quotes a token, and text from outside the API (a ledger error) is
//! masked like a log line before it goes in.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error the status API answers (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What `type` says, so a client can tell problems apart without parsing
/// `detail` (the CLI tells "API off" from "no such event" this way).
pub mod kind {
    pub const BAD_PARAMETER: &str = "urn:notify-host:problem:bad-parameter";
    pub const UNAUTHORIZED: &str = "urn:notify-host:problem:unauthorized";
    pub const API_OFF: &str = "urn:notify-host:problem:api-off";
    pub const NOT_FOUND: &str = "urn:notify-host:problem:not-found";
    pub const METHOD_NOT_ALLOWED: &str = "urn:notify-host:problem:method-not-allowed";
    pub const CHANNEL_NOT_ON: &str = "urn:notify-host:problem:channel-not-on";
    pub const UNAVAILABLE: &str = "urn:notify-host:problem:unavailable";
}

/// An RFC 9457 problem: what went wrong, for a person and for a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:notify-host:problem:bad-parameter",
    "title": "Bad Request",
    "status": 400,
    "detail": "state: \"sent\" is not a delivery state; use one of pending, delivered, retrying, waiting, held, dead_lettered, expired, skipped, cancelled",
    "instance": "/v1/deliveries",
    "parameter": "state",
    "allowed": ["pending", "delivered", "retrying", "waiting", "held", "dead_lettered", "expired", "skipped", "cancelled"]
}))]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:notify-host:problem:...`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status code, repeated.
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// The path of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The query or path parameter at fault (400 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// The values `parameter` takes, when they are a fixed set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<String>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: kind.to_string(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            parameter: None,
            allowed: Vec::new(),
        }
    }

    /// 400 naming the parameter at fault.
    pub fn bad_parameter(parameter: &str, detail: impl Into<String>) -> Problem {
        Problem {
            parameter: Some(parameter.to_string()),
            ..Problem::new(StatusCode::BAD_REQUEST, kind::BAD_PARAMETER, detail)
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, kind::NOT_FOUND, detail)
    }

    /// 503 for a store or broker that does not answer; the text is masked
    /// like a log line, since it comes from outside the API.
    pub fn unavailable(detail: impl std::fmt::Display) -> Problem {
        let detail = crate::redact::text(&detail.to_string()).into_owned();
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, kind::UNAVAILABLE, detail)
    }

    pub fn allowed(mut self, values: impl IntoIterator<Item = impl Into<String>>) -> Problem {
        self.allowed = values.into_iter().map(Into::into).collect();
        self
    }

    pub fn at(mut self, path: &str) -> Problem {
        self.instance = Some(path.to_string());
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        // A Problem always serialises (strings and numbers only); the
        // fallback keeps the content type honest if that ever changes.
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| {
            format!(r#"{{"title":"{}","status":{}}}"#, self.title, self.status).into_bytes()
        });
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_problem_json_with_its_status() {
        let response = Problem::bad_parameter("limit", "too big")
            .at("/v1/deliveries")
            .into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static("application/problem+json"))
        );
    }

    #[test]
    fn the_json_has_the_rfc_9457_members() {
        let p = Problem::bad_parameter("state", "no").allowed(["a", "b"]);
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["type"], kind::BAD_PARAMETER);
        assert_eq!(v["title"], "Bad Request");
        assert_eq!(v["status"], 400);
        assert_eq!(v["parameter"], "state");
        assert_eq!(v["allowed"], serde_json::json!(["a", "b"]));
        assert!(v.get("instance").is_none());
    }

    #[test]
    fn outside_text_is_masked() {
        let p = Problem::unavailable("cannot read record of user@example.com");
        assert!(!p.detail.contains("user@example.com"), "{}", p.detail);
    }
}
