//! Logging setup: `tracing` to stderr, JSON lines by default, every line
//! passed through [`crate::scrub`] (every configured credential becomes
//! `[redacted]`) and then [`crate::redact`] (e-mail and phone masked) before
//! it is written. Secrets go first, so masking cannot split one into parts
//! that no longer match.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::{redact, scrub};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the
/// configured level, so an operator can turn on debug logs without editing
/// the file.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactingStderr);
    // A second init (tests calling in-process) is harmless: keep the first.
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // Events live in one span (the event's); listing it a second time
            // under "spans" made every line ~40 % longer.
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Writes formatted log lines to stderr with personal data masked.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = LineRedactor;

    fn make_writer(&'a self) -> Self::Writer {
        LineRedactor { buf: Vec::new() }
    }
}

/// Buffers one formatted event, then masks and writes it in one call so lines
/// from different threads never interleave.
pub struct LineRedactor {
    buf: Vec<u8>,
}

impl Write for LineRedactor {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineRedactor {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let secrets = scrub::known();
        let text = secrets.scrub(&text);
        let masked = redact::text(&text);
        // Nowhere to report a failed log write; dropping the line is all
        // that can be done.
        let _ = io::stderr().lock().write_all(masked.as_bytes());
    }
}
