//! Host-side bindings generated from `wit/channel.wit`.

wasmtime::component::bindgen!({
    world: "channel",
    path: "../wit",
    additional_derives: [PartialEq],
    // Called on the pipeline's tasks: the guest yields at epoch ticks.
    exports: { default: async },
});
