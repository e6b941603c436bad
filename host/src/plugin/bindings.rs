//! Host-side bindings, one module per released version of the
//! `notify:channel` contract (see wit/README.md).
//!
//! `v0_2` (from `wit/channel.wit`) is the host's own vocabulary: its types are
//! the ones the rest of the host uses. `v0_1` (from the frozen
//! `wit/0.1.0/channel.wit`) exists only to call plugins built for 0.1.0;
//! [`super::compat`] translates between the two. wit-parser reads only the
//! `*.wit` files directly in the given folder (and its `deps/`), so the
//! frozen copy in `wit/0.1.0/` does not leak into the 0.2.0 package.

/// `notify:channel@0.2.0`, the current contract.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        world: "channel",
        path: "../wit",
        additional_derives: [PartialEq],
        // Called on the pipeline's tasks: the guest yields at epoch ticks.
        exports: { default: async },
    });

    /// The contract version these bindings were generated from.
    pub(crate) const VERSION: &str = "0.2.0";
}

/// `notify:channel@0.1.0`, frozen as released.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        world: "channel",
        path: "../wit/0.1.0",
        additional_derives: [PartialEq],
        exports: { default: async },
    });

    pub(crate) const VERSION: &str = "0.1.0";
}

/// Every contract version this host loads, newest first: the order load
/// tries them in, and the list a refused plugin's error quotes.
pub const SUPPORTED_VERSIONS: [&str; 2] = [v0_2::VERSION, v0_1::VERSION];
