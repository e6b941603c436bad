//! Helpers shared by the bundled channel plugins.
//!
//! Nothing here knows the WIT types, reads a clock, the environment or a file:
//! the plugins hand in plain values (settings as `(key, value)` pairs, the
//! host's `now-unix-ms` in `classify`, their own reading of the wall clock in
//! `render`), so every function is deterministic and tested on the build
//! machine. Errors are `String`s because they end up verbatim in a
//! `check-settings` problem list or a render rejection; each one names the
//! setting key or event field it is about.
//!
//! The WIT types exist only inside each plugin crate, where wit-bindgen
//! generates them; the macros `channel_plugin!` and `channel_test_fixtures!`
//! expand there, and adapt those types to the helpers here.

#![forbid(unsafe_code)]

mod fixtures;
mod glue;
mod http;
mod json;
mod named_value;
mod phone;
mod problems;
mod purpose;
mod settings;
mod template;
mod template_setting;
mod time;

pub use http::{
    body_snippet, encode_path_segment, is_http_url, join_url, retry_after, retry_after_ms,
    SNIPPET_MAX_CHARS,
};
pub use json::{json_str, provider_message_id};
pub use named_value::NamedValue;
pub use phone::is_e164;
pub use problems::{invalid_settings, keep, keep_all};
pub use purpose::{ByPurpose, MessagePurpose};
pub use settings::{settings_of, Settings};
pub use template::{
    check_template, render_template, Escape, Placeholder, Template, TemplateError, TemplateValues,
};
pub use template_setting::{DefaultText, TemplateSetting};
pub use time::{
    parse_rfc3339, time_until, wait_in_words, TimeStyle, DEFAULT_TIME_FORMAT, DEFAULT_TIME_ZONE,
};
