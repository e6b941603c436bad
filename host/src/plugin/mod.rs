//! The plugin runtime: loads channel plugins (WebAssembly components of the
//! `notify:channel` world in `wit/`) and calls them in a sandbox.
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
mod error;
mod runtime;
mod sandbox;

pub use bindings::notify::channel::types::{
    Appointment, CallContext, Delivered, Disposition, Event, Header, HttpRequest, HttpResponse,
    PluginInfo, RetryLater, Setting,
};
pub use channel::ChannelPlugin;
pub use error::{LoadError, PluginError};
pub use runtime::PluginRuntime;
