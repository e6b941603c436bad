//! Host-side bindings generated from `wit/channel.wit`.

wasmtime::component::bindgen!({
    world: "channel",
    path: "../wit",
    additional_derives: [PartialEq],
});
