//! How a plugin built for `notify:channel@0.1.0` is called in the host's
//! 0.2.0 vocabulary: its inputs are narrowed to what 0.1.0 knows, its answers
//! widened, and one rule corrects what 0.1.0 could not say.
//!
//! - `render` loses the `message`: 0.1.0 renders its one text (the
//!   confirmation's) for every purpose.
//! - `classify` loses `call-context.purpose`: 0.1.0 classifies every answer
//!   alike.
//! - A `permanent` verdict on an HTTP 401 answer becomes `channel-down`
//!   ([`disposition`]): 0.1.0 had no way to say "the channel is down", and a
//!   401 means the host's credentials were refused, which no event can fix.
//!
//! Every other value is the same record in both versions and is copied field
//! by field.

use super::bindings::v0_1::notify::channel::types as old;
use super::bindings::v0_2::notify::channel::types as new;

pub(crate) fn event(e: &new::Event) -> old::Event {
    let a = &e.appointment;
    old::Event {
        event_id: e.event_id.clone(),
        event_type: e.event_type.clone(),
        occurred_at: e.occurred_at.clone(),
        appointment: old::Appointment {
            appointment_id: a.appointment_id.clone(),
            user_id: a.user_id.clone(),
            time: a.time.clone(),
            email: a.email.clone(),
            phone_e164: a.phone_e164.clone(),
        },
        raw_json: e.raw_json.clone(),
    }
}

pub(crate) fn settings(settings: &[new::Setting]) -> Vec<old::Setting> {
    settings
        .iter()
        .map(|s| old::Setting {
            key: s.key.clone(),
            value: s.value.clone(),
        })
        .collect()
}

pub(crate) fn response(r: &new::HttpResponse) -> old::HttpResponse {
    old::HttpResponse {
        status: r.status,
        headers: r
            .headers
            .iter()
            .map(|h| old::Header {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
        body: r.body.clone(),
    }
}

/// `purpose` is dropped: a 0.1.0 plugin classifies every answer alike.
pub(crate) fn context(c: &new::CallContext) -> old::CallContext {
    old::CallContext {
        attempt: c.attempt,
        now_unix_ms: c.now_unix_ms,
    }
}

pub(crate) fn plugin_info(i: old::PluginInfo) -> new::PluginInfo {
    new::PluginInfo {
        name: i.name,
        version: i.version,
        required_fields: i.required_fields,
        known_settings: i.known_settings,
    }
}

pub(crate) fn requests(requests: Vec<old::HttpRequest>) -> Vec<new::HttpRequest> {
    requests
        .into_iter()
        .map(|r| new::HttpRequest {
            method: r.method,
            url: r.url,
            headers: r
                .headers
                .into_iter()
                .map(|h| new::Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            body: r.body,
        })
        .collect()
}

/// A 0.1.0 plugin's verdict on an answer with HTTP `status`, in 0.2.0 terms.
///
/// The host owns the credentials: it attaches them to every request, and a
/// plugin never sees them. So an HTTP 401 (authentication refused) is never
/// one event's fault, whatever the plugin says; a 0.1.0 plugin could only
/// call it `permanent`, which would dead-letter every event until an
/// operator fixed the key. It becomes `channel-down` instead. A 403 is left
/// as the plugin said: it can be about one recipient or resource, and only a
/// plugin that knows its provider (0.2.0 ones do) can tell.
pub(crate) fn disposition(status: u16, d: old::Disposition) -> new::Disposition {
    match d {
        old::Disposition::Delivered(d) => new::Disposition::Delivered(new::Delivered {
            provider_message_id: d.provider_message_id,
        }),
        old::Disposition::Retry(r) => new::Disposition::Retry(new::RetryLater {
            after_ms: r.after_ms,
            reason: r.reason,
        }),
        old::Disposition::Permanent(reason) if status == 401 => {
            new::Disposition::ChannelDown(format!(
                "HTTP 401 treated as channel-level: the host owns the credentials (0.1.0 plugin); the plugin said: {reason}"
            ))
        }
        old::Disposition::Permanent(reason) => new::Disposition::Permanent(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered() -> old::Disposition {
        old::Disposition::Delivered(old::Delivered {
            provider_message_id: Some("m1".into()),
        })
    }

    fn retry() -> old::Disposition {
        old::Disposition::Retry(old::RetryLater {
            after_ms: Some(5),
            reason: "busy".into(),
        })
    }

    #[test]
    fn only_a_permanent_401_becomes_channel_down() {
        let permanent = || old::Disposition::Permanent("bad key".into());
        let channel_down = new::Disposition::ChannelDown(
            "HTTP 401 treated as channel-level: the host owns the credentials (0.1.0 plugin); the plugin said: bad key".into(),
        );
        let new_delivered = new::Disposition::Delivered(new::Delivered {
            provider_message_id: Some("m1".into()),
        });
        let new_retry = new::Disposition::Retry(new::RetryLater {
            after_ms: Some(5),
            reason: "busy".into(),
        });
        let new_permanent = new::Disposition::Permanent("bad key".into());
        let cases: Vec<(u16, old::Disposition, new::Disposition)> = vec![
            (401, permanent(), channel_down),
            // A 403 may be about one recipient; a 0.1.0 plugin's word stands.
            (403, permanent(), new_permanent.clone()),
            (400, permanent(), new_permanent.clone()),
            (404, permanent(), new_permanent),
            // Only a permanent verdict is corrected: a plugin that retries or
            // accepts a 401 had its reasons.
            (401, retry(), new_retry.clone()),
            (401, delivered(), new_delivered.clone()),
            (200, delivered(), new_delivered),
            (503, retry(), new_retry),
        ];
        for (status, given, want) in cases {
            let shown = format!("{given:?}");
            assert_eq!(disposition(status, given), want, "{status} {shown}");
        }
    }

    #[test]
    fn context_drops_only_the_purpose() {
        let c = new::CallContext {
            attempt: 3,
            now_unix_ms: 42,
            purpose: new::Purpose::Reminder,
        };
        assert_eq!(
            context(&c),
            old::CallContext {
                attempt: 3,
                now_unix_ms: 42
            }
        );
    }
}
