//! Cost of one plugin call in a fresh, isolated instance (the host's model:
//! a new Store and instance per call). Prints median and p99 of render,
//! classify, and render + classify, for each bundled plugin.
//!
//! Run: ./scripts/build-plugins.sh && cargo bench -p notify-host --bench plugin_call
//! Optional: PLUGIN_BENCH_ITERATIONS (default 2000).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_executor::block_on;

use notify_host::channels::Channels;
use notify_host::config;
use notify_host::event;
use notify_host::plugin::{Header, HttpResponse};

const SAMPLE_EVENT: &str = r#"{"event_id":"9b2f6a52-1d7e-4c7a-9a8e-0c1f2b3d4e5f","event_type":"appointments.created",
  "occurred_at":"2026-02-13T17:00:00Z","notify":{"email":true,"sms":true},
  "appointment":{"appointment_id":"a1b2c3","user_id":42,"time":"2026-02-20T15:00:00Z",
  "email":"user@example.com","phone_e164":"+15555550123"}}"#;

fn env(name: &str) -> Option<String> {
    let v = match name {
        "MAILGUN_API_KEY" => "key-bench",
        "MAILGUN_DOMAIN" => "mg.example.com",
        "MAILGUN_FROM_EMAIL" => "noreply@mg.example.com",
        "TWILIO_ACCOUNT_SID" => "AC0123456789abcdef0123456789abcdef",
        "TWILIO_AUTH_TOKEN" => "token-bench",
        "TWILIO_FROM_PHONE" => "+15005550006",
        _ => return None,
    };
    Some(v.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<28} n={:<6} median={:>8.1} us  p99={:>8.1} us",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let iterations: usize = std::env::var("PLUGIN_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = match config::load(&root.join("config.toml"), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let load_started = Instant::now();
    let channels = match Channels::load(&config) {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("{}: {}", p.key, p.message);
            }
            eprintln!("build the plugins first: ./scripts/build-plugins.sh");
            std::process::exit(2);
        }
    };
    println!(
        "loaded (compiled) both plugins in {:.0} ms",
        load_started.elapsed().as_secs_f64() * 1e3
    );
    for name in ["email", "sms"] {
        let size = std::fs::metadata(&config.channels[name].plugin_path)
            .map(|m| m.len())
            .unwrap_or(0);
        println!("plugin {name}: {} bytes", size);
    }
    let event = match event::parse(SAMPLE_EVENT.as_bytes()) {
        Ok(e) => e,
        Err(e) => panic!("sample event: {e}"),
    };
    let responses = [
        (
            "email",
            HttpResponse {
                status: 200,
                headers: vec![],
                body: br#"{"id":"<m1@mg>","message":"Queued. Thank you."}"#.to_vec(),
            },
        ),
        (
            "sms",
            HttpResponse {
                status: 201,
                headers: vec![Header {
                    name: "content-type".into(),
                    value: "application/json".into(),
                }],
                body: br#"{"sid":"SM0123456789abcdef0123456789abcdef"}"#.to_vec(),
            },
        ),
    ];
    for (name, response) in responses {
        let Some(ch) = channels.get(name) else {
            continue;
        };
        // Warm-up: first calls fault in pool memory and code pages.
        for _ in 0..50 {
            let _ = block_on(ch.render(&event));
            let _ = block_on(ch.classify(&response, 1));
        }
        let (mut render, mut classify, mut both) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..iterations {
            let t0 = Instant::now();
            let r = block_on(ch.render(&event));
            let t1 = Instant::now();
            let c = block_on(ch.classify(&response, 1));
            let t2 = Instant::now();
            assert!(r.is_ok() && c.is_ok(), "plugin call failed: {r:?} {c:?}");
            render.push(t1 - t0);
            classify.push(t2 - t1);
            both.push(t2 - t0);
        }
        report(&format!("{name} render"), render);
        report(&format!("{name} classify"), classify);
        report(&format!("{name} render+classify"), both);
    }
}
