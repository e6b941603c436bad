//! What can go wrong loading or calling a plugin.

use std::path::PathBuf;
use std::time::Duration;

/// A plugin could not be loaded. Each variant names the channel and the file,
/// because that is what an operator edits.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("channel `{channel}`: cannot read plugin file {}: {source}", path.display())]
    Read {
        channel: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A directory, FIFO, device or socket: refused before it is read, since
    /// reading one can block start-up or never end.
    #[error("channel `{channel}`: plugin file {} is {kind}, not a regular file", path.display())]
    NotAFile {
        channel: String,
        path: PathBuf,
        /// What it is instead, e.g. "a FIFO (named pipe)".
        kind: &'static str,
    },
    /// Larger than `plugins.max_file_mib`; `size` is `None` when the file
    /// grew past the limit while being read.
    #[error("channel `{channel}`: plugin file {} is {}, over the limit of {limit} bytes (plugins.max_file_mib)", path.display(), size_text(*.size, *.limit))]
    TooLarge {
        channel: String,
        path: PathBuf,
        size: Option<u64>,
        limit: usize,
    },
    #[error("channel `{channel}`: {} is not a WebAssembly component: {reason}", path.display())]
    NotAComponent {
        channel: String,
        path: PathBuf,
        reason: String,
    },
    /// A component, but of no contract version this host loads. `reason`
    /// names the versions the host supports and what did not fit (a missing
    /// or mistyped export, an unknown import), for the plugin's author.
    #[error("channel `{channel}`: {} does not fit the notify:channel world: {reason}", path.display())]
    WrongWorld {
        channel: String,
        path: PathBuf,
        reason: String,
    },
    #[error("channel `{channel}`: {} failed while describing itself: {source}", path.display())]
    Describe {
        channel: String,
        path: PathBuf,
        source: PluginError,
    },
    /// `channels.NAME.sha256` is set and the file is another one.
    #[error("channel `{channel}`: plugin file {} has SHA-256 {found}, but channels.{channel}.sha256 pins {pinned}", path.display())]
    PinMismatch {
        channel: String,
        path: PathBuf,
        found: String,
        pinned: String,
    },
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(String),
}

fn size_text(size: Option<u64>, limit: usize) -> String {
    match size {
        Some(size) => format!("{size} bytes"),
        None => format!("more than {limit} bytes"),
    }
}

/// One call into a plugin failed. The plugin was stopped; the host and every
/// other call are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin `{plugin}` ran past its {} ms deadline in {call} and was stopped", deadline.as_millis())]
    Deadline {
        plugin: String,
        call: &'static str,
        deadline: Duration,
    },
    #[error("plugin `{plugin}` exceeded its memory limit of {limit} bytes in {call} (asked for {requested}) and was stopped")]
    MemoryLimit {
        plugin: String,
        call: &'static str,
        limit: usize,
        requested: usize,
    },
    #[error("plugin `{plugin}` wrote more than {limit} bytes to stdout or stderr in {call} and was stopped")]
    OutputLimit {
        plugin: String,
        call: &'static str,
        limit: usize,
    },
    #[error("plugin `{plugin}` trapped in {call}: {message}")]
    Trap {
        plugin: String,
        call: &'static str,
        message: String,
    },
    #[error("plugin `{plugin}` could not be instantiated for {call}: {message}")]
    Instantiate {
        plugin: String,
        call: &'static str,
        message: String,
    },
}

impl PluginError {
    /// A short stable name for metrics and dead-letter records.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Deadline { .. } => "plugin_deadline",
            PluginError::MemoryLimit { .. } => "plugin_memory_limit",
            PluginError::OutputLimit { .. } => "plugin_output_limit",
            PluginError::Trap { .. } => "plugin_trap",
            PluginError::Instantiate { .. } => "plugin_instantiate",
        }
    }
}
