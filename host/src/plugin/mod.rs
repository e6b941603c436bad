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
//! - One [`wasmtime::Engine`] and one linker for the process; each plugin is
//!   compiled and linked once, at load (`InstancePre`).
//! - Every call runs in a fresh `Store` and instance: nothing a plugin does in
//!   one call is visible in the next, and a trapped instance is simply dropped.
//! - A plugin gets WASI with nothing granted (no files, no environment, no
//!   sockets or name lookup, empty stdin), a memory cap and a wall-clock
//!   deadline; its stdout/stderr are captured up to a limit and logged under
//!   its name. Any breach is a [`PluginError`] for that call only.
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
pub use channel::ChannelPlugin;
pub use error::{LoadError, PluginError};
pub use runtime::PluginRuntime;

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
