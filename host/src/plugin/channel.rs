//! One loaded channel plugin and the four calls of its world.

use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::bindings::{notify::channel::types as wit, Channel, ChannelPre};
use super::error::{LoadError, PluginError};
use super::runtime::root_message;
use super::sandbox::Sandbox;
use crate::config::PluginLimits;
use crate::redact;

/// At most this much of a plugin's stderr is quoted in a trap message: enough
/// for a panic message, not enough to flood a dead-letter record.
const STDERR_TAIL_BYTES: usize = 512;

/// A compiled, linked plugin, ready to be instantiated once per call.
pub struct ChannelPlugin {
    channel: String,
    path: PathBuf,
    engine: Engine,
    pre: ChannelPre<Sandbox>,
    limits: PluginLimits,
    info: wit::PluginInfo,
}

impl std::fmt::Debug for ChannelPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPlugin")
            .field("channel", &self.channel)
            .field("path", &self.path)
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .finish()
    }
}

impl ChannelPlugin {
    pub(crate) fn new(
        channel: &str,
        path: &Path,
        engine: Engine,
        pre: ChannelPre<Sandbox>,
        limits: PluginLimits,
    ) -> Result<Self, LoadError> {
        let mut plugin = ChannelPlugin {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            engine,
            pre,
            limits,
            info: wit::PluginInfo {
                name: channel.to_string(),
                version: String::new(),
                required_fields: Vec::new(),
                known_settings: Vec::new(),
            },
        };
        plugin.info = futures_executor::block_on(
            plugin.call("describe", async |c: &Channel, s: &mut Store<Sandbox>| {
                c.call_describe(s).await
            }),
        )
        .map_err(|source| LoadError::Describe {
            channel: channel.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
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

    /// Lets the plugin vet its settings; `Ok(Err(problems))` lists each one.
    pub fn check_settings(
        &self,
        settings: &[wit::Setting],
    ) -> Result<Result<(), Vec<String>>, PluginError> {
        futures_executor::block_on(self.call(
            "check-settings",
            async |c: &Channel, s: &mut Store<Sandbox>| c.call_check_settings(s, settings).await,
        ))
    }

    /// Renders an event; `Ok(Err(reason))` is the plugin rejecting it.
    ///
    /// The plugin runs on the calling task and yields to the executor at
    /// every epoch tick, so a slow plugin shares its thread instead of
    /// blocking it, and is stopped at its deadline.
    pub async fn render(
        &self,
        event: &wit::Event,
        settings: &[wit::Setting],
    ) -> Result<Result<Vec<wit::HttpRequest>, String>, PluginError> {
        self.call("render", async |c: &Channel, s: &mut Store<Sandbox>| {
            c.call_render(s, event, settings).await
        })
        .await
    }

    /// Classifies a provider response (see [`ChannelPlugin::render`] on how
    /// it runs).
    pub async fn classify(
        &self,
        response: &wit::HttpResponse,
        settings: &[wit::Setting],
        context: wit::CallContext,
    ) -> Result<wit::Disposition, PluginError> {
        self.call("classify", async |c: &Channel, s: &mut Store<Sandbox>| {
            c.call_classify(s, response, settings, context).await
        })
        .await
    }

    /// Runs `f` in a fresh sandboxed instance, forwards what the plugin
    /// printed to the log, and turns any failure into a [`PluginError`].
    async fn call<R>(
        &self,
        call: &'static str,
        f: impl AsyncFnOnce(&Channel, &mut Store<Sandbox>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let mut store = Store::new(&self.engine, Sandbox::new(&self.limits));
        store.limiter(|s| &mut s.limiter);
        let started = Instant::now();
        let deadline = started + self.limits.deadline;
        // Checked at every epoch tick: past the deadline the guest traps,
        // before it the guest yields so other tasks on this thread run.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });

        let mut instantiated = false;
        let result = match self.pre.instantiate_async(&mut store).await {
            Ok(instance) => {
                instantiated = true;
                f(&instance, &mut store).await
            }
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();

        let sandbox = store.data();
        self.forward_output("stdout", &sandbox.stdout);
        self.forward_output("stderr", &sandbox.stderr);
        tracing::trace!(plugin = %self.info.name, call, elapsed_us = elapsed.as_micros() as u64, ok = result.is_ok(), "plugin call");

        let result = result.map_err(|e| self.explain(call, instantiated, e, sandbox))?;
        // A guest that ignores write errors fills the pipe and carries on;
        // filling it is the breach, whatever the guest did next.
        let limit = self.limits.output_bytes;
        if sandbox.stdout.contents().len() >= limit || sandbox.stderr.contents().len() >= limit {
            return Err(PluginError::OutputLimit {
                plugin: self.info.name.clone(),
                call,
                limit,
            });
        }
        Ok(result)
    }

    fn explain(
        &self,
        call: &'static str,
        instantiated: bool,
        e: wasmtime::Error,
        sandbox: &Sandbox,
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
        let stderr = stderr_tail(&sandbox.stderr);
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

    fn forward_output(&self, stream: &'static str, pipe: &MemoryOutputPipe) {
        let bytes = pipe.contents();
        if bytes.is_empty() {
            return;
        }
        for line in String::from_utf8_lossy(&bytes).lines() {
            if line.trim().is_empty() {
                continue;
            }
            let line = redact::text(line);
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

fn stderr_tail(pipe: &MemoryOutputPipe) -> String {
    let bytes = pipe.contents();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let start = text.len().saturating_sub(STDERR_TAIL_BYTES);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    redact::text(&text[start..].replace('\n', " | ")).into_owned()
}
