//! The plugin runtime: loads channel plugins (WebAssembly components of the
//! `notify:channel` world in `wit/`) and calls them in a sandbox.
//!
//! Contract versions: the host loads every released version of
//! `notify:channel` side by side (today 0.2.0 and 0.1.0, see wit/README.md).
//! Its own types are the newest version's, re-exported here; a plugin built
//! for an older version is called through a translation (`compat`), so no
//! caller ever sees which version a plugin speaks except through
//! [`ChannelPlugin::contract_version`].
//!
//! Invariants:
//! - One [`wasmtime::Engine`] and one linker per loaded set of channels
//!   (a reload builds a new set); each plugin is compiled (or taken from the
//!   compile cache) and linked once, at load (`InstancePre`).
//! - At most `plugins.max_concurrent_calls` calls run at once (the gate);
//!   the rest wait, and a call's deadline counts from its start.
//! - By default every call runs in a fresh `Store` and instance: nothing a
//!   plugin does in one call is visible in the next. A channel with
//!   `instances = "reuse"` keeps a bounded set of idle instances instead; an
//!   instance that trapped, overran its deadline or breached a limit is
//!   always dropped, and so is one that served `reuse_calls` calls.
//! - A plugin gets WASI with no files, no environment, no sockets or name
//!   lookup and empty stdin; it does get the clocks and random numbers.
//!   `wasi:http`, for components that import it, is linked to functions
//!   that refuse every request. It has a memory cap and a wall-clock
//!   deadline; its stdout/stderr are captured up to a limit and logged
//!   under its name. Any breach is a [`PluginError`] for that call only.
//! - Credentials never enter a plugin: only the channel's non-secret settings
//!   are passed in.

mod bindings;
mod channel;
mod compat;
mod error;
mod runtime;
mod sandbox;

pub use bindings::v0_2::notify::channel::types::{
    Appointment, CallContext, Delivered, Disposition, Event, Header, HttpRequest, HttpResponse,
    Message, PluginInfo, Purpose, RetryLater, Setting,
};
pub use bindings::SUPPORTED_VERSIONS;
pub use channel::{ChannelPlugin, Compiled};
pub use error::{LoadError, PluginError};
pub use runtime::{CallGate, Footprint, PluginFile, PluginRuntime, PoolSize, IN_PROGRESS_PER_CALL};

impl Message {
    /// The confirmation of a booking: the message every
    /// `appointments.created` event asks for, with no time limit.
    pub fn confirmation() -> Message {
        Message {
            purpose: Purpose::Confirmation,
            reminder: None,
            useful_until: None,
        }
    }
}
