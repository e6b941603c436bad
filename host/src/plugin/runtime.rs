//! The one engine, linker, call gate and epoch ticker every plugin shares,
//! and loading plugin files.
//!
//! Invariants:
//! - Only a regular file of at most `plugins.max_file_mib` is read, and
//!   never more than that many bytes of it: a FIFO, directory, device or
//!   socket named as a plugin is refused before it is opened for reading, so
//!   start-up cannot hang on it or read without end. A file whose SHA-256
//!   is not the pinned one (`channels.NAME.sha256`) is refused unread by
//!   the compiler.
//! - The instance pool is sized from what the loaded components really take
//!   per instance (core instances, memories, tables: [`Footprint`]) times
//!   the instances that can be alive at once: one per call the gate lets run
//!   plus the idle instances `reuse` channels keep. A call therefore never
//!   fails for want of a slot; it waits at the gate instead.
//! - Compiled code is cached on disk (`plugins.cache_dir`) by wasmtime's
//!   cache, keyed by a hash of the component's bytes and the engine's
//!   configuration and version: a changed file or a wasmtime upgrade
//!   compiles again, never runs stale code.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceType};
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

use super::bindings::SUPPORTED_VERSIONS;
use super::channel::{ChannelPlugin, ContractPre};
use super::error::LoadError;
use super::sandbox::Sandbox;
use crate::config::{InstanceMode, PluginLimits, PluginRuntimeConfig};

/// Deadline resolution. Deadlines are hundreds of milliseconds, so a 5 ms
/// tick makes them accurate to about 1 % at the cost of 200 wake-ups a second.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Per slot, how much of a linear memory is reset in place instead of
/// being given back to the kernel (see `PluginRuntime::new`).
const KEEP_RESIDENT_BYTES: usize = 2 << 20;
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;
const DECOMMIT_BATCH: usize = 16;

/// The interface prefix of WASI's HTTP world: imported by jco's default
/// output, and answered by the host with a refusal (see `deny_http`).
const WASI_HTTP: &str = "wasi:http/";

/// What one instance of a component takes from the instance pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Core module instances (a Rust plugin has a few, componentize-py's
    /// output about 14).
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
    /// The most any one core module defines (pool limits are per module too).
    pub memories_per_module: u32,
    pub tables_per_module: u32,
}

impl Footprint {
    /// Counts a component's core instantiations and the memories and tables
    /// its modules define. Read from the binary before any engine exists,
    /// since the pool must be sized when the engine is built.
    pub fn of(bytes: &[u8]) -> Result<Footprint, String> {
        use wasmparser::{Encoding, Instance as CoreInstance, Parser, Payload};
        let mut f = Footprint::default();
        // (memories, tables) of each core module being read, innermost last.
        let mut modules: Vec<Option<(u32, u32)>> = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(|e| e.to_string())? {
                Payload::Version { encoding, .. } => {
                    modules.push((encoding == Encoding::Module).then_some((0, 0)));
                }
                Payload::InstanceSection(reader) => {
                    for instance in reader {
                        if let CoreInstance::Instantiate { .. } =
                            instance.map_err(|e| e.to_string())?
                        {
                            f.core_instances += 1;
                        }
                    }
                }
                Payload::MemorySection(reader) => {
                    f.memories += reader.count();
                    if let Some(Some(m)) = modules.last_mut() {
                        m.0 += reader.count();
                    }
                }
                Payload::TableSection(reader) => {
                    f.tables += reader.count();
                    if let Some(Some(m)) = modules.last_mut() {
                        m.1 += reader.count();
                    }
                }
                Payload::End(_) => {
                    if let Some(Some((memories, tables))) = modules.pop() {
                        f.memories_per_module = f.memories_per_module.max(memories);
                        f.tables_per_module = f.tables_per_module.max(tables);
                    }
                }
                _ => {}
            }
        }
        Ok(f)
    }

    /// The larger of each count: a pool sized for it fits either component.
    pub fn max(self, other: Footprint) -> Footprint {
        Footprint {
            core_instances: self.core_instances.max(other.core_instances),
            memories: self.memories.max(other.memories),
            tables: self.tables.max(other.tables),
            memories_per_module: self.memories_per_module.max(other.memories_per_module),
            tables_per_module: self.tables_per_module.max(other.tables_per_module),
        }
    }
}

/// A footprint that fits every toolchain seen so far (Rust, componentize-py,
/// jco), for tools that load a plugin without sizing the pool for it.
const GENEROUS: Footprint = Footprint {
    core_instances: 32,
    memories: 4,
    tables: 16,
    memories_per_module: 2,
    tables_per_module: 4,
};

/// Calls in progress (holding an instance) per call allowed to run: a call
/// that gave its turn away at the end of a slice keeps its instance while
/// it waits for the next, so a few more instances than running calls are
/// alive. Bounded, so a crowd of looping plugins waits for instances instead
/// of exhausting the pool.
pub const IN_PROGRESS_PER_CALL: u32 = 4;

/// The runtime's call gate: `run` permits for calls running now
/// (`plugins.max_concurrent_calls`), `live` permits for calls holding an
/// instance ([`IN_PROGRESS_PER_CALL`] times as many). Shared by every
/// plugin, and handed on to the runtime a reload builds.
#[derive(Clone, Debug)]
pub struct CallGate {
    pub(crate) run: Arc<Semaphore>,
    pub(crate) live: Arc<Semaphore>,
}

impl CallGate {
    pub fn new(max_concurrent_calls: u32) -> CallGate {
        let calls = max_concurrent_calls.max(1);
        CallGate {
            run: Arc::new(Semaphore::new(calls as usize)),
            live: Arc::new(Semaphore::new(
                calls.saturating_mul(IN_PROGRESS_PER_CALL) as usize
            )),
        }
    }
}

/// How the instance pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Component instances alive at once.
    pub instances: u32,
    /// What each may take.
    pub per_instance: Footprint,
}

/// A plugin file read and checked, not yet compiled.
#[derive(Clone)]
pub struct PluginFile {
    pub channel: String,
    pub path: std::path::PathBuf,
    bytes: Arc<Vec<u8>>,
    /// Lower-case hex.
    pub sha256: String,
    pub footprint: Footprint,
}

impl PluginFile {
    /// Reads `path` (see the module doc), checks it is a component, counts
    /// its footprint and, with `pin`, refuses another file than the pinned.
    pub fn read(
        channel: &str,
        path: &Path,
        max_file_bytes: usize,
        pin: Option<&str>,
    ) -> Result<PluginFile, LoadError> {
        let bytes = read_plugin_file(channel, path, max_file_bytes)?;
        let sha256 = hex(&Sha256::digest(&bytes));
        if let Some(pinned) = pin {
            if !pinned.eq_ignore_ascii_case(&sha256) {
                return Err(LoadError::PinMismatch {
                    channel: channel.to_string(),
                    path: path.to_path_buf(),
                    found: sha256,
                    pinned: pinned.to_ascii_lowercase(),
                });
            }
        }
        let not_a_component = |reason: String| LoadError::NotAComponent {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            reason,
        };
        if !bytes.starts_with(b"\0asm") {
            return Err(not_a_component(
                "not a WebAssembly file (no `\\0asm` header)".into(),
            ));
        }
        if wasmparser_is_core_module(&bytes) {
            return Err(not_a_component("it is a core WebAssembly module; build it as a component (e.g. --target wasm32-wasip2, or `wasm-tools component new`)".into()));
        }
        let footprint = Footprint::of(&bytes).map_err(not_a_component)?;
        Ok(PluginFile {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            bytes: Arc::new(bytes),
            sha256,
            footprint,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles and links plugins, lets at most `plugins.max_concurrent_calls`
/// plugin calls run at once, and keeps the epoch ticking so deadlines fire.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<Sandbox>,
    max_memory_bytes: usize,
    /// Plugin files larger than this are refused unread.
    max_file_bytes: usize,
    /// One permit per call allowed to run: shared by every plugin, and
    /// handed on to the runtime a reload builds, so a reload never doubles
    /// the calls running.
    gate: CallGate,
    cache: Option<Cache>,
    /// Why `plugins.cache_dir` is not in use, when it is set but unusable.
    cache_problem: Option<String>,
    pool: PoolSize,
    ticker: Option<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl PluginRuntime {
    /// A runtime for tools that load a plugin or two without sizing the pool
    /// for them (`plugin test`): room for `max_concurrent_calls` + 1
    /// instances of any toolchain's component. `max_memory_bytes` is the
    /// largest memory limit of any plugin that will be loaded.
    pub fn new(config: &PluginRuntimeConfig, max_memory_bytes: usize) -> Result<Self, LoadError> {
        let pool = PoolSize {
            instances: config
                .max_concurrent_calls
                .saturating_mul(IN_PROGRESS_PER_CALL)
                .saturating_add(1),
            per_instance: GENEROUS,
        };
        PluginRuntime::with_pool(config, max_memory_bytes, pool, None)
    }

    /// Builds the runtime with the pool `pool`; `gate` is the call gate to
    /// share (a reload passes the running one), else a new one of
    /// `plugins.max_concurrent_calls` permits.
    pub fn with_pool(
        config: &PluginRuntimeConfig,
        max_memory_bytes: usize,
        pool: PoolSize,
        gate: Option<CallGate>,
    ) -> Result<Self, LoadError> {
        // A freed slot is decommitted in batches (`DECOMMIT_BATCH`) and only
        // then reused: the pool holds a batch's worth beyond what can be
        // alive at once, or a full batch waiting to be flushed would make
        // an instantiation fail while nothing is really running.
        let slots = pool.instances.max(1).saturating_add(DECOMMIT_BATCH as u32);
        let each = pool.per_instance;
        let mut allocation = PoolingAllocationConfig::default();
        allocation
            .total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(each.core_instances.max(1)))
            .total_memories(slots.saturating_mul(each.memories.max(1)))
            .total_tables(slots.saturating_mul(each.tables.max(1)))
            .max_memories_per_module(each.memories_per_module.max(1))
            .max_tables_per_module(each.tables_per_module.max(1))
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
            .allocation_strategy(InstanceAllocationStrategy::Pooling(allocation));
        let (cache, cache_problem) = match config.cache_dir.as_deref().map(open_cache) {
            None => (None, None),
            Some(Ok(cache)) => (Some(cache), None),
            Some(Err(why)) => {
                tracing::warn!(error = %why, "plugins.cache_dir is not usable; compiling plugins without a cache");
                (None, Some(why))
            }
        };
        wasm.cache(cache.clone());
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

        let gate = gate.unwrap_or_else(|| CallGate::new(config.max_concurrent_calls));
        Ok(PluginRuntime {
            engine,
            linker,
            max_memory_bytes: max_memory_bytes.max(config.default_limits.memory_bytes),
            max_file_bytes: config.max_file_bytes,
            gate,
            cache,
            cache_problem,
            pool: PoolSize {
                instances: slots,
                per_instance: each,
            },
            ticker: Some(Ticker { stop, thread }),
        })
    }

    /// How the pool was sized.
    pub fn pool(&self) -> PoolSize {
        self.pool
    }

    /// The call gate, for a runtime built to replace this one.
    pub fn gate(&self) -> CallGate {
        self.gate.clone()
    }

    /// The cache directory in use, if the cache is on and usable.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(|c| c.directory().as_path())
    }

    /// Why the configured compile cache is not in use, if it is not.
    pub fn cache_problem(&self) -> Option<&str> {
        self.cache_problem.as_deref()
    }

    /// Compiles and links the component at `path` for channel `channel`
    /// (fresh instances, no pin), then asks it to describe itself.
    pub fn load(
        &self,
        channel: &str,
        path: &Path,
        limits: PluginLimits,
    ) -> Result<ChannelPlugin, LoadError> {
        let file = PluginFile::read(channel, path, self.max_file_bytes, None)?;
        self.load_file(&file, limits, InstanceMode::Fresh)
    }

    /// Reads and checks a plugin file with this runtime's size limit.
    pub fn read(
        &self,
        channel: &str,
        path: &Path,
        pin: Option<&str>,
    ) -> Result<PluginFile, LoadError> {
        PluginFile::read(channel, path, self.max_file_bytes, pin)
    }

    /// Compiles (or takes from the cache) and links a file read by
    /// [`PluginFile::read`], then asks the plugin to describe itself.
    pub fn load_file(
        &self,
        file: &PluginFile,
        limits: PluginLimits,
        instances: InstanceMode,
    ) -> Result<ChannelPlugin, LoadError> {
        let (channel, path) = (file.channel.as_str(), file.path.as_path());
        let wrong = |reason: String| LoadError::WrongWorld {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            reason,
        };
        let started = std::time::Instant::now();
        let hits_before = self.cache.as_ref().map_or(0, Cache::cache_hits);
        let component = Component::new(&self.engine, file.bytes.as_slice()).map_err(|e| {
            LoadError::NotAComponent {
                channel: channel.to_string(),
                path: path.to_path_buf(),
                reason: root_message(&e),
            }
        })?;
        let from_cache = self.cache.as_ref().map_or(0, Cache::cache_hits) > hits_before;
        let took = started.elapsed();
        let compile_ms = took.as_millis() as u64;
        let built_for = contract_imports(&self.engine, &component);
        // Type checking is structural: a later version that happens to keep
        // the shape of a known one would pass it. The version the component
        // names decides first, so a plugin is never run under a contract its
        // author did not build for.
        if let Some(note) = unknown_version_note(&built_for) {
            return Err(wrong(format!("{}; {note}", supported())));
        }
        let linker = self
            .linker_for(&component)
            .map_err(|e| wrong(root_message(&e)))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| wrong(link_mismatch(&root_message(&e))))?;
        let pre =
            ContractPre::new(pre).map_err(|tried| wrong(world_mismatch(&built_for, &tried)))?;
        let limits = PluginLimits {
            memory_bytes: limits.memory_bytes.min(self.max_memory_bytes),
            ..limits
        };
        let mut plugin = ChannelPlugin::new(
            channel,
            path,
            self.engine.clone(),
            pre,
            limits,
            self.gate.clone(),
            instances,
            file.sha256.clone(),
        )?;
        plugin.compiled = super::channel::Compiled { from_cache, took };
        tracing::info!(
            channel,
            plugin = %plugin.info().name,
            version = %plugin.info().version,
            contract = plugin.contract_version(),
            sha256 = %file.sha256,
            core_instances = file.footprint.core_instances,
            memories = file.footprint.memories,
            source = if from_cache { "cache" } else { "compiled" },
            took_ms = compile_ms,
            "plugin loaded"
        );
        Ok(plugin)
    }

    /// The shared linker, or for a component that imports `wasi:http` (jco's
    /// default output does, for `fetch`) a copy where every `wasi:http`
    /// function traps with a refusal: the plugin loads, and any request it
    /// tries fails without reaching the network.
    fn linker_for(
        &self,
        component: &Component,
    ) -> wasmtime::Result<std::borrow::Cow<'_, Linker<Sandbox>>> {
        let imports: Vec<(String, ComponentItem)> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, item)| (name.to_string(), item.ty))
            .collect();
        let (http, others): (Vec<_>, Vec<_>) = imports
            .into_iter()
            .partition(|(name, _)| name.starts_with(WASI_HTTP));
        if http.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(&self.linker));
        }
        // `wasi:http/types` re-exports wasi:io's streams and pollable: those
        // are the real ones wasmtime-wasi provides (imported by the
        // component too), and must not be stubbed with another type.
        let borrowed: Vec<ResourceType> = others
            .iter()
            .filter_map(|(_, item)| match item {
                ComponentItem::ComponentInstance(i) => Some(i),
                _ => None,
            })
            .flat_map(|i| {
                i.exports(&self.engine)
                    .filter_map(|(_, e)| match e.ty {
                        ComponentItem::Resource(r) => Some(r),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut linker = self.linker.clone();
        for (name, item) in http {
            let ComponentItem::ComponentInstance(instance) = item else {
                continue;
            };
            let mut root = linker.root();
            let mut at = root.instance(&name)?;
            for (export, item) in instance.exports(&self.engine) {
                match item.ty {
                    ComponentItem::ComponentFunc(_) => {
                        let what = format!("{name}#{export}");
                        at.func_new(export, move |_, _, _, _| {
                            Err(wasmtime::Error::msg(format!(
                                "{what}: plugins have no network access (the host sends the requests a plugin renders); wasi:http is denied"
                            )))
                        })?;
                    }
                    ComponentItem::Resource(r) if borrowed.contains(&r) => {}
                    ComponentItem::Resource(_) => {
                        at.resource(export, ResourceType::host::<DeniedHttp>(), |_, _| Ok(()))?;
                    }
                    _ => {}
                }
            }
        }
        Ok(std::borrow::Cow::Owned(linker))
    }
}

/// The host type behind every `wasi:http` resource: none is ever made.
struct DeniedHttp;

/// Opens wasmtime's compile cache in `dir`. A cache that cannot be used
/// costs start-up time, not correctness: warned about, and run without.
fn open_cache(dir: &Path) -> Result<Cache, String> {
    // wasmtime wants an absolute path; the config's may be relative to the
    // working directory.
    let dir = std::path::absolute(dir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut config = CacheConfig::new();
    config.with_directory(&dir);
    Cache::new(config).map_err(|e| format!("{}: {e:#}", dir.display()))
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

/// Reads a plugin file: a regular file of at most `limit` bytes.
fn read_plugin_file(channel: &str, path: &Path, limit: usize) -> Result<Vec<u8>, LoadError> {
    let read = |source| LoadError::Read {
        channel: channel.to_string(),
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening, by path: opening a FIFO for reading blocks
    // until a writer comes, and a socket cannot be opened at all (ENXIO,
    // which would not say what is wrong).
    let before = std::fs::metadata(path).map_err(read)?;
    check_plugin_file(channel, path, &before, limit)?;
    let file = open_without_blocking(path).map_err(read)?;
    // Checked again on the open handle: what was checked is what is read,
    // even if the path was swapped for something else meanwhile.
    let meta = file.metadata().map_err(read)?;
    check_plugin_file(channel, path, &meta, limit)?;
    let expected = usize::try_from(meta.len()).unwrap_or(limit).min(limit);
    let mut bytes = Vec::with_capacity(expected);
    // One byte past the limit tells a file that grew (or whose size the
    // file system misreports) from one that fits.
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() > limit {
        return Err(LoadError::TooLarge {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            size: None,
            limit,
        });
    }
    Ok(bytes)
}

/// Opens `path` for reading without blocking: should the path be swapped
/// for a FIFO after the check by path, the open returns at once (and the
/// check on the handle refuses it) instead of waiting for a writer.
fn open_without_blocking(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // No effect on a regular file's reads.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

fn check_plugin_file(
    channel: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    limit: usize,
) -> Result<(), LoadError> {
    if !meta.is_file() {
        return Err(LoadError::NotAFile {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            kind: file_kind(&meta.file_type()),
        });
    }
    if meta.len() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(LoadError::TooLarge {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            size: Some(meta.len()),
            limit,
        });
    }
    Ok(())
}

/// What a path that is not a regular file is, for the operator.
fn file_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "neither a file nor a directory"
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
