//! The one engine, linker and epoch ticker every plugin shares.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::SUPPORTED_VERSIONS;
use super::channel::{ChannelPlugin, ContractPre};
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
        let built_for = contract_imports(&self.engine, &component);
        // Type checking is structural: a later version that happens to keep
        // the shape of a known one would pass it. The version the component
        // names decides first, so a plugin is never run under a contract its
        // author did not build for.
        if let Some(note) = unknown_version_note(&built_for) {
            return Err(wrong(format!("{}; {note}", supported())));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| wrong(link_mismatch(&root_message(&e))))?;
        let pre =
            ContractPre::new(pre).map_err(|tried| wrong(world_mismatch(&built_for, &tried)))?;
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

/// The `notify:channel` interfaces the component imports, e.g.
/// `notify:channel/types@0.3.0`: they name the version it was built for,
/// which is what a plugin author needs to hear when it does not load.
fn contract_imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("notify:channel/"))
        .map(str::to_string)
        .collect()
}

/// "this host loads notify:channel 0.2.0 and 0.1.0"
fn supported() -> String {
    let mut versions = SUPPORTED_VERSIONS.map(String::from).to_vec();
    let last = versions.pop().unwrap_or_default();
    if versions.is_empty() {
        format!("this host loads notify:channel {last}")
    } else {
        format!(
            "this host loads notify:channel {} and {last}",
            versions.join(", ")
        )
    }
}

/// The supported version an imported interface name carries, if any.
fn version_of(import: &str) -> Option<&'static str> {
    SUPPORTED_VERSIONS
        .into_iter()
        .find(|v| import.ends_with(&format!("@{v}")))
}

/// "the component imports notify:channel/types@0.3.0, a version this host
/// does not know", when it imports one.
fn unknown_version_note(built_for: &[String]) -> Option<String> {
    let unknown: Vec<&str> = built_for
        .iter()
        .map(String::as_str)
        .filter(|name| version_of(name).is_none())
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "the component imports {}, a version this host does not know (build the plugin against a supported version, or run a host that supports it)",
            unknown.join(", ")
        )
    })
}

/// The component imports something the host does not provide (a host
/// function of a newer contract, a WASI interface beyond p2).
fn link_mismatch(message: &str) -> String {
    format!("{}; {message}", supported())
}

/// The component links but its exports fit no supported version. `tried`
/// holds each version's complaint, newest first.
fn world_mismatch(built_for: &[String], tried: &[(&'static str, String)]) -> String {
    // Built for a version this host knows (its types import says so): that
    // version's complaint is the one that matters.
    let named = built_for.iter().find_map(|name| {
        let version = version_of(name)?;
        let (_, complaint) = tried.iter().find(|(v, _)| *v == version)?;
        Some((name, version, complaint))
    });
    if let Some((name, version, complaint)) = named {
        return format!(
            "the component imports {name} but its exports do not fit notify:channel@{version}: {complaint}"
        );
    }
    let mut out = supported();
    out.push_str(if tried.len() == 2 {
        ", and the component fits neither"
    } else {
        ", and the component fits none of them"
    });
    let first = tried.first().map(|(_, m)| m.as_str());
    if tried.iter().all(|(_, m)| Some(m.as_str()) == first) {
        // The usual case for a component of another world altogether: the
        // same export is missing whatever the version.
        out.push_str(&format!(": {}", first.unwrap_or_default()));
    } else {
        let each: Vec<String> = tried.iter().map(|(v, m)| format!("as {v}: {m}")).collect();
        out.push_str(&format!(": {}", each.join("; ")));
    }
    out
}

/// wasmtime's errors carry a context chain; the innermost cause is the one
/// that tells a plugin author what is missing or mistyped.
pub(crate) fn root_message(e: &wasmtime::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (the component's contract imports, each version's complaint, the reason)
    type Case<'a> = (&'a [String], &'a [(&'static str, String)], &'a str);

    #[test]
    fn a_refusal_names_the_supported_versions_and_the_mismatch() {
        let same = [
            ("0.2.0", "no export `check-settings` found".to_string()),
            ("0.1.0", "no export `check-settings` found".to_string()),
        ];
        let differ = [
            ("0.2.0", "type mismatch for function `render`".to_string()),
            (
                "0.1.0",
                "type mismatch with variant `disposition`".to_string(),
            ),
        ];
        let imports_v2 = ["notify:channel/types@0.2.0".to_string()];
        let cases: [Case; 3] = [
            (
                &[],
                &same,
                "this host loads notify:channel 0.2.0 and 0.1.0, and the component fits neither: no export `check-settings` found",
            ),
            (
                &[],
                &differ,
                "this host loads notify:channel 0.2.0 and 0.1.0, and the component fits neither: as 0.2.0: type mismatch for function `render`; as 0.1.0: type mismatch with variant `disposition`",
            ),
            (
                &imports_v2,
                &differ,
                "the component imports notify:channel/types@0.2.0 but its exports do not fit notify:channel@0.2.0: type mismatch for function `render`",
            ),
        ];
        for (built_for, tried, want) in cases {
            assert_eq!(world_mismatch(built_for, tried), want);
        }
    }

    #[test]
    fn only_an_unknown_contract_version_is_noted() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(unknown_version_note(&[]), None);
        assert_eq!(
            unknown_version_note(&names(&["notify:channel/types@0.1.0"])),
            None
        );
        assert_eq!(
            unknown_version_note(&names(&["notify:channel/types@0.2.0"])),
            None
        );
        let note =
            unknown_version_note(&names(&["notify:channel/types@0.3.0"])).unwrap_or_default();
        assert!(
            note.starts_with(
                "the component imports notify:channel/types@0.3.0, a version this host does not know"
            ),
            "{note}"
        );
    }
}
