//! One loaded channel plugin and the four calls of its world, whichever
//! released version of the contract it was built for.
//!
//! This is where WIT values become host values, and so the boundary for
//! what a plugin says: every string it hands back (a rejection, a
//! disposition's reason, a message id, a settings problem, each line it
//! prints) leaves here scrubbed of every configured credential
//! ([`crate::scrub::known`]) and cut to the channel's limits
//! (`text_bytes`, `output_line_bytes`), so nothing downstream (logs, dead
//! letters, CLI output) can carry a reflected secret or an unbounded text.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::bindings::v0_2::notify::channel::types as wit;
use super::bindings::{v0_1, v0_2};
use super::compat;
use super::error::{LoadError, PluginError};
use super::runtime::{root_message, CallGate};
use super::sandbox::Sandbox;
use crate::config::{InstanceMode, PluginLimits};
use crate::redact;
use crate::scrub;

/// At most this much of a plugin's stderr is quoted in a trap message: enough
/// for a panic message, not enough to flood a dead-letter record.
const STDERR_TAIL_BYTES: usize = 512;

/// A component linked and type-checked against one contract version.
pub(crate) enum ContractPre {
    V0_2(v0_2::ChannelPre<Sandbox>),
    V0_1(v0_1::ChannelPre<Sandbox>),
}

/// One instance, of the version its [`ContractPre`] was.
enum Instance {
    V0_2(v0_2::Channel),
    V0_1(v0_1::Channel),
}

impl ContractPre {
    /// Type-checks the component's exports against each supported version,
    /// newest first. On failure, gives each version's complaint, in that
    /// order: the caller explains them to the plugin's author.
    pub(crate) fn new(
        pre: InstancePre<Sandbox>,
    ) -> Result<ContractPre, Vec<(&'static str, String)>> {
        let v0_2 = match v0_2::ChannelPre::new(pre.clone()) {
            Ok(p) => return Ok(ContractPre::V0_2(p)),
            Err(e) => root_message(&e),
        };
        let v0_1 = match v0_1::ChannelPre::new(pre) {
            Ok(p) => return Ok(ContractPre::V0_1(p)),
            Err(e) => root_message(&e),
        };
        Err(vec![(v0_2::VERSION, v0_2), (v0_1::VERSION, v0_1)])
    }

    fn version(&self) -> &'static str {
        match self {
            ContractPre::V0_2(_) => v0_2::VERSION,
            ContractPre::V0_1(_) => v0_1::VERSION,
        }
    }

    async fn instantiate(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<Instance> {
        Ok(match self {
            ContractPre::V0_2(p) => Instance::V0_2(p.instantiate_async(store).await?),
            ContractPre::V0_1(p) => Instance::V0_1(p.instantiate_async(store).await?),
        })
    }
}

/// A compiled, linked plugin, ready to be instantiated once per call.
///
/// Callers speak the current contract (0.2.0) whatever the plugin was built
/// for; a 0.1.0 plugin's calls go through [`compat`].
pub struct ChannelPlugin {
    channel: String,
    path: PathBuf,
    engine: Engine,
    pre: ContractPre,
    limits: PluginLimits,
    info: wit::PluginInfo,
    /// The runtime's call gate: a permit per running call, and per call
    /// holding an instance.
    gate: CallGate,
    /// `instances = "reuse"`: the idle instances kept for the next calls.
    reuse: Option<Reuse>,
    sha256: String,
    pub(crate) compiled: Compiled,
}

/// How the plugin's code was obtained at load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compiled {
    /// Taken from the compile cache rather than compiled.
    pub from_cache: bool,
    /// Compiling (or reading from the cache), linking excluded.
    pub took: std::time::Duration,
}

/// Whether a call's instance may serve later calls: only the pipeline's
/// calls (render, classify) use and keep idle instances; the one-off calls
/// at load (describe, check-settings) run fresh, so what a channel's reused
/// instances have done is only ever its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Yes,
    No,
}

/// A running call's permit of the gate, and since when it has held it.
struct Slot {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    since: Instant,
}

/// How long a call runs before it lets a waiting call have its permit: a
/// plugin call of a few milliseconds (Python, JavaScript) finishes within
/// one, a looping one is rotated out after it.
const SLICE: std::time::Duration = std::time::Duration::from_millis(10);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // A callback never panics while holding it; a poisoned lock still
        // holds a whole value.
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The idle instances of a `reuse` channel.
struct Reuse {
    idle: Mutex<Vec<Warm>>,
    keep: usize,
    calls: u32,
}

/// An instance that served calls and may serve more.
struct Warm {
    store: Store<Sandbox>,
    instance: Instance,
    calls: u32,
}

impl std::fmt::Debug for ChannelPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPlugin")
            .field("channel", &self.channel)
            .field("path", &self.path)
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .field("contract", &self.pre.version())
            .field("reuse", &self.reuse.as_ref().map(|r| (r.keep, r.calls)))
            .finish()
    }
}

impl ChannelPlugin {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        channel: &str,
        path: &Path,
        engine: Engine,
        pre: ContractPre,
        limits: PluginLimits,
        gate: CallGate,
        instances: InstanceMode,
        sha256: String,
    ) -> Result<Self, LoadError> {
        let reuse = match instances {
            InstanceMode::Fresh => None,
            InstanceMode::Reuse { keep, calls } => Some(Reuse {
                idle: Mutex::new(Vec::new()),
                keep: keep as usize,
                calls: calls.max(1),
            }),
        };
        let mut plugin = ChannelPlugin {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            engine,
            pre,
            limits,
            gate,
            reuse,
            sha256,
            compiled: Compiled::default(),
            info: wit::PluginInfo {
                name: channel.to_string(),
                version: String::new(),
                required_fields: Vec::new(),
                known_settings: Vec::new(),
            },
        };
        plugin.info = futures_executor::block_on(plugin.call(
            "describe",
            Keep::No,
            async |i: &Instance, s: &mut Store<Sandbox>| match i {
                Instance::V0_2(c) => c.call_describe(s).await,
                Instance::V0_1(c) => c.call_describe(s).await.map(compat::plugin_info),
            },
        ))
        .map_err(|source| LoadError::Describe {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        // The name goes into every log line of the plugin's: bounded too.
        let (name, version) = (
            std::mem::take(&mut plugin.info.name),
            std::mem::take(&mut plugin.info.version),
        );
        plugin.info.name = plugin.text(name);
        plugin.info.version = plugin.text(version);
        Ok(plugin)
    }

    /// The channel this plugin serves (the key under `[channels]`).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the plugin said about itself at load.
    pub fn info(&self) -> &wit::PluginInfo {
        &self.info
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// The plugin file's SHA-256, lower-case hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// How its code was obtained at load (cache or compiler, and how long).
    pub fn compiled(&self) -> Compiled {
        self.compiled
    }

    /// Whether instances are reused (`instances = "reuse"`).
    pub fn reuses_instances(&self) -> bool {
        self.reuse.is_some()
    }

    /// The version of the `notify:channel` contract the plugin was built
    /// for: `"0.2.0"` or `"0.1.0"`.
    pub fn contract_version(&self) -> &'static str {
        self.pre.version()
    }

    /// A string from the plugin, made safe to pass on (see the module doc).
    fn text(&self, text: String) -> String {
        scrub::plugin_text(text, self.limits.text_bytes)
    }

    /// A disposition with its texts made safe (see the module doc).
    fn clean(&self, d: wit::Disposition) -> wit::Disposition {
        match d {
            wit::Disposition::Delivered(wit::Delivered {
                provider_message_id,
            }) => wit::Disposition::Delivered(wit::Delivered {
                provider_message_id: provider_message_id.map(|id| self.text(id)),
            }),
            wit::Disposition::Retry(wit::RetryLater { after_ms, reason }) => {
                wit::Disposition::Retry(wit::RetryLater {
                    after_ms,
                    reason: self.text(reason),
                })
            }
            wit::Disposition::Permanent(reason) => wit::Disposition::Permanent(self.text(reason)),
            wit::Disposition::ChannelDown(reason) => {
                wit::Disposition::ChannelDown(self.text(reason))
            }
        }
    }

    /// Lets the plugin vet its settings; `Ok(Err(problems))` lists each one.
    pub fn check_settings(
        &self,
        settings: &[wit::Setting],
    ) -> Result<Result<(), Vec<String>>, PluginError> {
        let checked = futures_executor::block_on(self.call(
            "check-settings",
            Keep::No,
            async |i: &Instance, s: &mut Store<Sandbox>| match i {
                Instance::V0_2(c) => c.call_check_settings(s, settings).await,
                Instance::V0_1(c) => c.call_check_settings(s, &compat::settings(settings)).await,
            },
        ))?;
        Ok(checked.map_err(|problems| problems.into_iter().map(|p| self.text(p)).collect()))
    }

    /// Renders an event as the message `message`; `Ok(Err(reason))` is the
    /// plugin rejecting it.
    ///
    /// A 0.1.0 plugin is not told about `message`: it renders its one text
    /// (the confirmation's) whatever the purpose; channels that need
    /// per-purpose texts need a 0.2.0 plugin.
    ///
    /// The plugin runs on the calling task and yields to the executor at
    /// every epoch tick, so a slow plugin shares its thread instead of
    /// blocking it, and is stopped at its deadline.
    pub async fn render(
        &self,
        event: &wit::Event,
        message: &wit::Message,
        settings: &[wit::Setting],
    ) -> Result<Result<Vec<wit::HttpRequest>, String>, PluginError> {
        let rendered = self
            .call(
                "render",
                Keep::Yes,
                async |i: &Instance, s: &mut Store<Sandbox>| match i {
                    Instance::V0_2(c) => c.call_render(s, event, message, settings).await,
                    Instance::V0_1(c) => {
                        let rendered = c
                            .call_render(s, &compat::event(event), &compat::settings(settings))
                            .await?;
                        Ok(rendered.map(compat::requests))
                    }
                },
            )
            .await?;
        Ok(rendered.map_err(|reason| self.text(reason)))
    }

    /// Classifies a provider response (see [`ChannelPlugin::render`] on how
    /// it runs). A 0.1.0 plugin's verdict is translated by the host's rule
    /// for old plugins: a `permanent` HTTP 401 is `channel-down` (see
    /// wit/README.md).
    pub async fn classify(
        &self,
        response: &wit::HttpResponse,
        settings: &[wit::Setting],
        context: wit::CallContext,
    ) -> Result<wit::Disposition, PluginError> {
        let verdict = self
            .call(
                "classify",
                Keep::Yes,
                async |i: &Instance, s: &mut Store<Sandbox>| match i {
                    Instance::V0_2(c) => c.call_classify(s, response, settings, context).await,
                    Instance::V0_1(c) => {
                        let verdict = c
                            .call_classify(
                                s,
                                &compat::response(response),
                                &compat::settings(settings),
                                compat::context(&context),
                            )
                            .await?;
                        Ok(compat::disposition(response.status, verdict))
                    }
                },
            )
            .await?;
        Ok(self.clean(verdict))
    }

    /// Runs `f` in a sandboxed instance (fresh, or an idle one of a
    /// `reuse` channel), forwards what the plugin printed to the log, and
    /// turns any failure into a [`PluginError`].
    ///
    /// The call first waits for a permit of the runtime's gate, so at most
    /// `plugins.max_concurrent_calls` run at once; its deadline counts from
    /// when it gets one, so time spent waiting is never charged to the
    /// plugin.
    async fn call<R>(
        &self,
        call: &'static str,
        keep: Keep,
        f: impl AsyncFnOnce(&Instance, &mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        // The gate is never closed; were it, running unthrottled beats
        // failing every call.
        // Held until the instance is dropped or back in the reuse pool (the
        // end of this function): it bounds the instances alive.
        let _live = self.gate.live.clone().acquire_owned().await.ok();
        let permit = self.gate.run.clone().acquire_owned().await.ok();
        let slot = Arc::new(Mutex::new(Slot {
            permit,
            since: Instant::now(),
        }));
        let reuse = self.reuse.as_ref().filter(|_| keep == Keep::Yes);
        let warm = reuse.and_then(|r| match r.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        });
        let (mut store, instance, calls) = match warm {
            Some(w) => (w.store, Some(w.instance), w.calls),
            None => (self.new_store(), None, 0),
        };
        let started = Instant::now();
        let budget = self.limits.deadline;
        let mut used = std::time::Duration::ZERO;
        let mut this_slice = std::time::Duration::ZERO;
        let (gate, shared) = (self.gate.run.clone(), slot.clone());
        // Checked at every epoch tick. The deadline counts the time the
        // call held a permit (running), not the time it waited for one:
        // past it the guest traps. A call that has run a whole slice while
        // every permit is taken gives its permit to the next in line and
        // queues again, so a looping plugin delays the others by a slice,
        // never by its deadline; otherwise it yields, so other tasks on
        // this thread run.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            let now = Instant::now();
            let mut held = lock(&shared);
            let ran = now.saturating_duration_since(held.since);
            held.since = now;
            used += ran;
            this_slice += ran;
            if used >= budget {
                return Ok(UpdateDeadline::Interrupt);
            }
            if this_slice >= SLICE && gate.available_permits() == 0 {
                this_slice = std::time::Duration::ZERO;
                let permit = held.permit.take();
                let (gate, shared) = (gate.clone(), shared.clone());
                return Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(async move {
                        drop(permit);
                        let permit = gate.acquire_owned().await.ok();
                        let mut held = lock(&shared);
                        held.permit = permit;
                        held.since = Instant::now();
                    }),
                ));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.data_mut().limiter.refused = None;
        let printed_before = (
            store.data().stdout.contents().len(),
            store.data().stderr.contents().len(),
        );

        let mut instantiated = instance.is_some();
        let (result, instance) = match instance {
            Some(i) => (f(&i, &mut store).await, Some(i)),
            None => match self.pre.instantiate(&mut store).await {
                Ok(i) => {
                    instantiated = true;
                    (f(&i, &mut store).await, Some(i))
                }
                Err(e) => (Err(e), None),
            },
        };
        let elapsed = started.elapsed();
        // The store (and the callback holding the slot) may outlive the call
        // in the reuse pool: the permit goes back now.
        lock(&slot).permit = None;

        let sandbox = store.data();
        let out = sandbox.stdout.contents();
        let err = sandbox.stderr.contents();
        let (out, err) = (
            out.get(printed_before.0..).unwrap_or_default(),
            err.get(printed_before.1..).unwrap_or_default(),
        );
        self.forward_output("stdout", out);
        self.forward_output("stderr", err);
        tracing::trace!(plugin = %self.info.name, call, elapsed_us = elapsed.as_micros() as u64, ok = result.is_ok(), reused = calls > 0, "plugin call");

        let result = result.map_err(|e| self.explain(call, instantiated, e, sandbox, err))?;
        // A guest that ignores write errors fills the pipe and carries on;
        // filling it is the breach, whatever the guest did next.
        let limit = self.limits.output_bytes;
        if out.len() >= limit || err.len() >= limit {
            return Err(PluginError::OutputLimit {
                plugin: self.info.name.clone(),
                call,
                limit,
            });
        }
        if let (Some(reuse), Some(instance)) = (reuse, instance) {
            // Kept only while it has served fewer than `reuse_calls` calls
            // and its output pipes have a whole call's limit left (they
            // hold twice the limit, see `new_store`). A failed call never
            // gets here: its instance is dropped.
            let calls = calls + 1;
            let printed = sandbox
                .stdout
                .contents()
                .len()
                .max(sandbox.stderr.contents().len());
            if calls < reuse.calls && printed < limit {
                let mut idle = match reuse.idle.lock() {
                    Ok(idle) => idle,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if idle.len() < reuse.keep {
                    idle.push(Warm {
                        store,
                        instance,
                        calls,
                    });
                }
            }
        }
        Ok(result)
    }

    /// A store for one instance: a sandbox granting nothing, the memory cap.
    /// A reused instance's output pipes hold twice the per-call limit, so a
    /// call started with at most one limit's worth used has a full one left.
    fn new_store(&self) -> Store<Sandbox> {
        let capacity = if self.reuse.is_some() {
            self.limits.output_bytes.saturating_mul(2)
        } else {
            self.limits.output_bytes
        };
        let mut store = Store::new(&self.engine, Sandbox::new(&self.limits, capacity));
        store.limiter(|s| &mut s.limiter);
        store
    }

    fn explain(
        &self,
        call: &'static str,
        instantiated: bool,
        e: wasmtime::Error,
        sandbox: &Sandbox,
        stderr: &[u8],
    ) -> PluginError {
        let plugin = self.info.name.clone();
        if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return PluginError::Deadline {
                plugin,
                call,
                deadline: self.limits.deadline,
            };
        }
        if let Some(requested) = sandbox.limiter.refused {
            return PluginError::MemoryLimit {
                plugin,
                call,
                limit: sandbox.limiter.limit,
                requested,
            };
        }
        let message = root_message(&e);
        // wasmtime-wasi reports a full output pipe as a host error that traps
        // the guest; its text is the only marker it carries.
        if message.contains("write beyond capacity") {
            return PluginError::OutputLimit {
                plugin,
                call,
                limit: self.limits.output_bytes,
            };
        }
        let trap = e.downcast_ref::<Trap>().map(|t| t.to_string());
        let mut message = trap.unwrap_or_else(|| first_line(&message).to_string());
        // A host function's refusal (a denied `wasi:http` call) is the
        // innermost cause, behind a line about the wasm backtrace: the
        // plugin's author needs it.
        let root = e.root_cause().to_string();
        let root = first_line(&root);
        if !root.is_empty() && !message.contains(root) {
            message.push_str(": ");
            message.push_str(root);
        }
        let stderr = stderr_tail(stderr);
        if !stderr.is_empty() {
            message.push_str("; stderr: ");
            message.push_str(&stderr);
        }
        if !instantiated {
            return PluginError::Instantiate {
                plugin,
                call,
                message,
            };
        }
        PluginError::Trap {
            plugin,
            call,
            message,
        }
    }

    fn forward_output(&self, stream: &'static str, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        for line in String::from_utf8_lossy(bytes).lines() {
            if line.trim().is_empty() {
                continue;
            }
            let line = scrub::plugin_text(line.to_string(), self.limits.output_line_bytes);
            let line = redact::text(&line);
            if stream == "stderr" {
                tracing::warn!(plugin = %self.info.name, channel = %self.channel, stream, "{line}");
            } else {
                tracing::info!(plugin = %self.info.name, channel = %self.channel, stream, "{line}");
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn stderr_tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    // Scrubbed whole before the tail is taken, so the cut cannot leave the
    // end of a secret behind.
    let text = scrub::known().scrub(text.trim()).into_owned();
    let start = text.len().saturating_sub(STDERR_TAIL_BYTES);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    redact::text(&text[start..].replace('\n', " | ")).into_owned()
}
