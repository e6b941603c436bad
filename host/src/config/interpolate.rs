//! `${VAR}` interpolation of configuration strings from the environment.
//!
//! Forms (as in Vector and docker compose):
//! - `${VAR}`: the variable's value; an error when it is unset.
//! - `${VAR:-default}`: the value, or `default` when unset or empty.
//! - `${VAR:?message}`: the value, or an error carrying `message` when unset or empty.
//! - `$${`: a literal `${`.
//!
//! Interpolation runs on parsed TOML string values, never on the raw file
//! text, so a value can never inject TOML syntax. Values containing a newline
//! are refused: no config key of ours takes one, and a newline in a header or
//! URL built from it would be a request-smuggling vector.
//!
//! No crate covers the `:?` form and the newline rule together (shellexpand
//! lacks both), hence these few lines.
//!
//! [`interpolate_recorded`] also reports which variable produced which
//! value, so a config error can say `${VAR}` instead of printing the value
//! (which may be a secret put in the wrong key).

use std::sync::LazyLock;

use regex::{Captures, Regex};

/// Where variable values come from: the process environment in production, a
/// map in tests.
pub trait VarLookup {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl VarLookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> VarLookup for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A reason one string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error("environment variable `{var}` is not set")]
    Unset { var: String },
    #[error("environment variable `{var}` is not set: {message}")]
    Required { var: String, message: String },
    #[error("environment variable `{var}` contains a newline, which no setting accepts")]
    Newline { var: String },
    #[error("`${{` without a matching `}}`; write `$${{` for a literal `${{`")]
    Unclosed,
}

// `$$` escapes; `${NAME}`, `${NAME:-default}`, `${NAME:?message}`.
static PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}")
        .unwrap_or_else(|e| unreachable!("static regex: {e}"))
});

/// Interpolates one string. Every problem in the string is returned, not
/// just the first, so an operator fixes them in one go.
pub fn interpolate(input: &str, env: &dyn VarLookup) -> Result<String, Vec<InterpolationError>> {
    interpolate_recorded(input, env, &mut Vec::new())
}

/// [`interpolate`], pushing `(variable, value)` onto `used` for every value
/// taken from `env` (defaults written in the file are not recorded: they
/// are in the file already).
pub fn interpolate_recorded(
    input: &str,
    env: &dyn VarLookup,
    used: &mut Vec<(String, String)>,
) -> Result<String, Vec<InterpolationError>> {
    let mut errors = Vec::new();
    let out = PATTERN.replace_all(input, |caps: &Captures<'_>| {
        let Some(name) = caps.get(1) else {
            return "$".to_string();
        };
        let name = name.as_str();
        let value = env
            .get(name)
            .filter(|v| !v.is_empty() || caps.get(2).is_none());
        let value = match (value, caps.get(2).map(|m| m.as_str())) {
            (Some(v), _) => v,
            (None, Some(":-")) => return caps.get(3).map_or("", |m| m.as_str()).to_string(),
            (None, Some(_)) => {
                errors.push(InterpolationError::Required {
                    var: name.to_string(),
                    message: caps.get(3).map_or("", |m| m.as_str()).to_string(),
                });
                return String::new();
            }
            (None, None) => {
                errors.push(InterpolationError::Unset {
                    var: name.to_string(),
                });
                return String::new();
            }
        };
        if value.contains(['\n', '\r']) {
            errors.push(InterpolationError::Newline {
                var: name.to_string(),
            });
            return String::new();
        }
        used.push((name.to_string(), value.clone()));
        value
    });
    // A `${` left after substitution was not a well-formed reference.
    if PATTERN.replace_all(input, "").contains("${") {
        errors.push(InterpolationError::Unclosed);
    }
    if errors.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka:9092".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    #[test]
    fn forms() {
        let cases = [
            ("plain", Ok("plain".to_string())),
            ("${HOST}", Ok("kafka:9092".into())),
            ("x-${HOST}-y", Ok("x-kafka:9092-y".into())),
            ("${MISSING:-fallback}", Ok("fallback".into())),
            ("${EMPTY:-fallback}", Ok("fallback".into())),
            ("${EMPTY}", Ok(String::new())),
            ("${HOST:-fallback}", Ok("kafka:9092".into())),
            ("$${HOST}", Ok("${HOST}".into())),
            ("cost: $5", Ok("cost: $5".into())),
            (
                "${MISSING}",
                Err(vec![InterpolationError::Unset {
                    var: "MISSING".into(),
                }]),
            ),
            (
                "${MISSING:?set it to the API key}",
                Err(vec![InterpolationError::Required {
                    var: "MISSING".into(),
                    message: "set it to the API key".into(),
                }]),
            ),
            (
                "${EMPTY:?must not be empty}",
                Err(vec![InterpolationError::Required {
                    var: "EMPTY".into(),
                    message: "must not be empty".into(),
                }]),
            ),
            (
                "${MULTI}",
                Err(vec![InterpolationError::Newline {
                    var: "MULTI".into(),
                }]),
            ),
            ("${HOST", Err(vec![InterpolationError::Unclosed])),
            (
                "${A}${B}",
                Err(vec![
                    InterpolationError::Unset { var: "A".into() },
                    InterpolationError::Unset { var: "B".into() },
                ]),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(interpolate(input, &env), want, "input {input:?}");
        }
    }

    #[test]
    fn records_which_variable_gave_which_value() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("plain", &[]),
            ("${HOST}", &[("HOST", "kafka:9092")]),
            (
                "a${HOST}b${HOST}",
                &[("HOST", "kafka:9092"), ("HOST", "kafka:9092")],
            ),
            // A default comes from the file, not the environment.
            ("${MISSING:-fallback}", &[]),
            ("${EMPTY}", &[("EMPTY", "")]),
            ("${MULTI}", &[]),
        ];
        for (input, want) in cases {
            let mut used = Vec::new();
            let _ = interpolate_recorded(input, &env, &mut used);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(used, want, "input {input:?}");
        }
    }
}
