//! The one engine, linker and epoch ticker every plugin shares.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::ChannelPre;
use super::channel::ChannelPlugin;
use super::error::LoadError;
use super::sandbox::Sandbox;
use crate::config::{PluginLimits, PluginRuntimeConfig};

/// Deadline resolution. Deadlines are hundreds of milliseconds, so a 5 ms
/// tick makes them accurate to about 1 % at the cost of 200 wake-ups a second.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Per slot, how much of a linear memory is reset in place instead of
/// being given back to the kernel (see `PluginRuntime::new`).
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;
const DECOMMIT_BATCH: usize = 16;

/// Compiles and links plugins, and keeps the epoch ticking so deadlines fire.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<Sandbox>,
    max_memory_bytes: usize,
    ticker: Option<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl PluginRuntime {
    /// Builds the runtime. `max_memory_bytes` is the largest memory limit of
    /// any plugin that will be loaded: pool slots are sized for it.
    pub fn new(config: &PluginRuntimeConfig, max_memory_bytes: usize) -> Result<Self, LoadError> {
        let slots = config.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        // A component built by today's toolchains has one main memory and a
        // few small shim instances and tables; the factors leave headroom for
        // toolchains (componentize-py, jco) that add a second memory.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(8))
            .total_stacks(slots)
            .max_memory_size(max_memory_bytes.max(config.default_limits.memory_bytes))
            // Every call gets a fresh instance, so slot reset is on the hot
            // path. By default a slot is reset with madvise, which unmaps the
            // pages (a TLB shootdown across threads) and makes the next
            // instance fault them in again. Keeping the first pages resident
            // and resetting only the dirtied ones (found with PAGEMAP_SCAN,
            // Linux 6.7+; elsewhere by memset) avoids both; a plugin call
            // dirties a few hundred KiB, so this costs little memory.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
            .pagemap_scan(Enabled::Auto)
            // What is still decommitted goes in batches: one syscall per
            // several slots instead of one per slot.
            .decommit_batch_size(DECOMMIT_BATCH);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|e| LoadError::Runtime(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Runtime(format!("{e:#}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Runtime(format!("cannot start the epoch thread: {e}")))?
        };

        Ok(PluginRuntime {
            engine,
            linker,
            max_memory_bytes: max_memory_bytes.max(config.default_limits.memory_bytes),
            ticker: Some(Ticker { stop, thread }),
        })
    }

    /// Compiles and links the component at `path` for channel `channel`, then
    /// asks it to describe itself.
    pub fn load(
        &self,
        channel: &str,
        path: &Path,
        limits: PluginLimits,
    ) -> Result<ChannelPlugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        let wrong = |reason: String| LoadError::WrongWorld {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            reason,
        };
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotAComponent {
                channel: channel.to_string(),
                path: path.to_path_buf(),
                reason: "not a WebAssembly file (no `\\0asm` header)".into(),
            });
        }
        if wasmparser_is_core_module(&bytes) {
            return Err(LoadError::NotAComponent {
                channel: channel.to_string(),
                path: path.to_path_buf(),
                reason: "it is a core WebAssembly module; build it as a component (e.g. --target wasm32-wasip2, or `wasm-tools component new`)".into(),
            });
        }
        let component =
            Component::new(&self.engine, &bytes).map_err(|e| LoadError::NotAComponent {
                channel: channel.to_string(),
                path: path.to_path_buf(),
                reason: root_message(&e),
            })?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| wrong(root_message(&e)))?;
        let pre = ChannelPre::new(pre).map_err(|e| wrong(root_message(&e)))?;
        let limits = PluginLimits {
            memory_bytes: limits.memory_bytes.min(self.max_memory_bytes),
            ..limits
        };
        ChannelPlugin::new(channel, path, self.engine.clone(), pre, limits)
    }
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop.store(true, Ordering::Relaxed);
            // The thread wakes within one tick; joining keeps shutdown clean.
            let _ = t.thread.join();
        }
    }
}

/// Core modules start `\0asm` followed by version 1; components use a
/// different version/layer field. Checked so the error says what to do.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// wasmtime's errors carry a context chain; the innermost cause is the one
/// that tells a plugin author what is missing or mistyped.
pub(crate) fn root_message(e: &wasmtime::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.join(": ")
}
