//! The vendors' own OpenAPI descriptions (shared/specs), read at test time so
//! the checks follow the vendor, not values copied out by hand.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::harness::root;

/// What a vendor documents about one operation.
#[derive(Debug)]
pub struct Operation {
    pub method: String,
    pub path_template: String,
    pub servers: Vec<String>,
    pub content_types: Vec<String>,
    pub required: Vec<String>,
    pub properties: BTreeMap<String, Value>,
    pub path_params: BTreeMap<String, Value>,
    pub security_scheme: Value,
}

impl Operation {
    /// The `enum` of a form field, if the vendor restricts its values.
    pub fn enum_of(&self, field: &str) -> Option<Vec<String>> {
        let prop = self.properties.get(field)?;
        let values = prop
            .get("enum")
            .or_else(|| prop.get("items").and_then(|i| i.get("enum")))?;
        Some(
            values
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        )
    }

    /// Whether a field name is documented: literally, or through a documented
    /// prefix family such as Mailgun's `v:my-var` and `h:X-My-Header`.
    pub fn documents(&self, field: &str) -> bool {
        if self.properties.contains_key(field) {
            return true;
        }
        match field.split_once(':') {
            Some((prefix, _)) => self.properties.keys().any(|k| {
                k.starts_with(&format!("{prefix}:"))
                    && (k.contains("my-var") || k.contains("My-Header"))
            }),
            None => false,
        }
    }

    /// Whether `path` is an instance of the operation's path template.
    pub fn path_matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let want: Vec<&str> = self.path_template.trim_matches('/').split('/').collect();
        let got: Vec<&str> = path.trim_matches('/').split('/').collect();
        if want.len() != got.len() {
            return None;
        }
        let mut params = BTreeMap::new();
        for (w, g) in want.iter().zip(&got) {
            // A template segment may mix text and a parameter: `{AccountSid}` or `Messages.json`.
            if let (Some(start), Some(end)) = (w.find('{'), w.find('}')) {
                let (prefix, suffix) = (&w[..start], &w[end + 1..]);
                let value = g.strip_prefix(prefix)?.strip_suffix(suffix)?;
                params.insert(w[start + 1..end].to_string(), value.to_string());
            } else if w != g {
                return None;
            }
        }
        Some(params)
    }
}

fn specs_dir() -> PathBuf {
    // CI clones the repo with shared/ beside it.
    let candidates = [
        root().join("../shared/specs"),
        root().join("../../shared/specs"),
    ];
    candidates
        .iter()
        .find(|p| p.join("README.md").exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!("vendor specs not found beside the repo (looked in {candidates:?})")
        })
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut node = doc;
            for part in r.trim_start_matches("#/").split('/') {
                node = &node[part];
            }
            resolve(doc, node)
        }
        None => v,
    }
}

fn operation(doc: &Value, path: &str, method: &str) -> Operation {
    let item = &doc["paths"][path];
    let op = &item[method];
    assert!(op.is_object(), "spec has no {method} {path}");
    let servers = item
        .get("servers")
        .or_else(|| doc.get("servers"))
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|s| s["url"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let content = op["requestBody"]["content"]
        .as_object()
        .expect("request body content");
    let content_types: Vec<String> = content.keys().cloned().collect();
    let schema = resolve(doc, &content[&content_types[0]]["schema"]);
    let required = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let properties = schema["properties"]
        .as_object()
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.clone(), resolve(doc, v).clone()))
                .collect()
        })
        .unwrap_or_default();
    let path_params = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(item["parameters"].as_array().into_iter().flatten())
        .map(|p| resolve(doc, p))
        .filter(|p| p["in"] == "path")
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["schema"].clone(),
            )
        })
        .collect();
    let scheme_name = op["security"][0]
        .as_object()
        .or_else(|| doc["security"][0].as_object())
        .and_then(|s| s.keys().next().cloned())
        .expect("security requirement");
    Operation {
        method: method.to_ascii_uppercase(),
        path_template: path.to_string(),
        servers,
        content_types,
        required,
        properties,
        path_params,
        security_scheme: doc["components"]["securitySchemes"][&scheme_name].clone(),
    }
}

pub fn mailgun_send() -> Operation {
    let text = std::fs::read_to_string(specs_dir().join("mailgun_openapi.yaml"))
        .expect("read mailgun spec");
    let doc: Value = serde_yaml::from_str(&text).expect("parse mailgun spec");
    operation(&doc, "/v3/{domain_name}/messages", "post")
}

pub fn twilio_create_message() -> Operation {
    let text = std::fs::read_to_string(specs_dir().join("twilio_api_v2010.json"))
        .expect("read twilio spec");
    let doc: Value = serde_json::from_str(&text).expect("parse twilio spec");
    operation(
        &doc,
        "/2010-04-01/Accounts/{AccountSid}/Messages.json",
        "post",
    )
}

/// Checks a string against a JSON-schema `pattern` (anchored ^...$ in these specs).
pub fn matches_pattern(schema: &Value, value: &str) -> bool {
    match schema["pattern"].as_str() {
        Some(p) => regex::Regex::new(p)
            .expect("spec pattern compiles")
            .is_match(value),
        None => true,
    }
}
