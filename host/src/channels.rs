//! The enabled channels, each a validated config plus its loaded plugin:
//! rendering and classifying (one send is `attempt`).
//!
//! Invariant: what [`Channel::render_message`] returns has passed
//! `transport::prepare` request by request, and the render as a whole is
//! within `plugins.caps.requests_per_render`; a render past any cap is a
//! [`Refusal`], never a panic or a partial send.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{ChannelConfig, Config, InstanceMode, OutputCaps, Problem};
use crate::event::AppointmentEvent;
use crate::plugin::{
    CallContext, CallGate, ChannelPlugin, Disposition, Footprint, HttpRequest, LoadError, Message,
    PluginError, PluginFile, PluginRuntime, PoolSize, Purpose, Setting,
};
use crate::transport::{self, OutboundRequest, Refusal};

/// One enabled channel, ready to render and classify.
#[derive(Debug)]
pub struct Channel {
    pub config: ChannelConfig,
    pub plugin: ChannelPlugin,
    settings: Vec<Setting>,
    /// `[plugins.caps]`: what one render may hand the host.
    caps: OutputCaps,
}

/// Why an event cannot be rendered for a channel. All of these are permanent
/// for the event except a plugin error, which the caller may retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("event lacks `{field}`, which plugin `{plugin}` requires")]
    MissingField { plugin: String, field: String },
    #[error("plugin `{plugin}` rejected the event: {reason}")]
    Rejected { plugin: String, reason: String },
    #[error("plugin `{plugin}` rendered no request")]
    Empty { plugin: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

impl Channel {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// Renders the event's confirmation (see [`Channel::render_message`]).
    pub async fn render(
        &self,
        event: &AppointmentEvent,
    ) -> Result<Vec<OutboundRequest>, RenderError> {
        self.render_message(event, &Message::confirmation()).await
    }

    /// Checks the plugin's required fields, renders `message` for the event,
    /// and applies the host's rules (caps, allow-lists, methods, reserved
    /// headers, auth) to every request.
    pub async fn render_message(
        &self,
        event: &AppointmentEvent,
        message: &Message,
    ) -> Result<Vec<OutboundRequest>, RenderError> {
        let info = self.plugin.info();
        if let Some(field) = info.required_fields.iter().find(|f| !event.has_field(f)) {
            return Err(RenderError::MissingField {
                plugin: info.name.clone(),
                field: field.clone(),
            });
        }
        let requests: Vec<HttpRequest> = self
            .plugin
            .render(&event.to_plugin_event(), message, &self.settings)
            .await?
            .map_err(|reason| RenderError::Rejected {
                plugin: info.name.clone(),
                reason,
            })?;
        if requests.is_empty() {
            return Err(RenderError::Empty {
                plugin: info.name.clone(),
            });
        }
        // Counted before any request is prepared: a render of thousands is
        // refused as a whole, not sent in part.
        transport::check_request_count(&self.caps, requests.len())?;
        Ok(requests
            .into_iter()
            .map(|r| transport::prepare(&self.config, &self.caps, r))
            .collect::<Result<_, _>>()?)
    }

    /// Classifies a provider answer to a confirmation (see
    /// [`Channel::classify_for`]).
    pub async fn classify(
        &self,
        response: &crate::plugin::HttpResponse,
        attempt: u32,
    ) -> Result<Disposition, PluginError> {
        self.classify_for(response, attempt, Purpose::Confirmation)
            .await
    }

    /// Classifies a provider answer to attempt `attempt` of a message sent
    /// for `purpose`.
    pub async fn classify_for(
        &self,
        response: &crate::plugin::HttpResponse,
        attempt: u32,
        purpose: Purpose,
    ) -> Result<Disposition, PluginError> {
        let now_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.plugin
            .classify(
                response,
                &self.settings,
                CallContext {
                    attempt,
                    now_unix_ms,
                    purpose,
                },
            )
            .await
    }
}

/// The channels running now, swapped whole by a reload: a reader takes the
/// current set (an `Arc`) and keeps it for as long as its work needs, so
/// calls in flight finish on the old plugins while new work gets the new.
pub struct LiveChannels(std::sync::RwLock<Arc<Channels>>);

impl LiveChannels {
    pub fn new(channels: Channels) -> LiveChannels {
        LiveChannels(std::sync::RwLock::new(Arc::new(channels)))
    }

    /// The set running now.
    pub fn load(&self) -> Arc<Channels> {
        match self.0.read() {
            Ok(c) => c.clone(),
            // A writer only swaps an Arc: a poisoned lock still holds a
            // whole set.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `channels` the running set; returns the one it replaces.
    pub fn swap(&self, channels: Channels) -> Arc<Channels> {
        let new = Arc::new(channels);
        match self.0.write() {
            Ok(mut c) => std::mem::replace(&mut *c, new),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
        }
    }
}

impl std::fmt::Debug for LiveChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LiveChannels").field(&self.load()).finish()
    }
}

/// Every enabled channel, loaded.
pub struct Channels {
    // Kept alive for the plugins: it owns the epoch ticker.
    runtime: PluginRuntime,
    channels: BTreeMap<String, Channel>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("channels", &self.channels)
            .finish()
    }
}

impl Channels {
    /// Loads every enabled channel's plugin and lets it check its settings.
    /// Problems are keyed like config problems, so `check-config` reports
    /// them the same way.
    pub fn load(config: &Config) -> Result<Channels, Vec<Problem>> {
        Channels::load_only(config, &[])
    }

    /// Loads only the enabled channels named in `names` (every enabled one
    /// when it is empty): a command about one channel neither compiles nor
    /// needs the credentials of the others.
    pub fn load_only(config: &Config, names: &[&str]) -> Result<Channels, Vec<Problem>> {
        Channels::load_sharing(config, names, None)
    }

    /// Loads the channels to replace these ones (a reload): the new runtime
    /// shares this one's call gate, so the calls running across the swap
    /// stay within `plugins.max_concurrent_calls`.
    pub fn reload(&self, config: &Config) -> Result<Channels, Vec<Problem>> {
        Channels::load_sharing(config, &[], Some(self.runtime.gate()))
    }

    fn load_sharing(
        config: &Config,
        names: &[&str],
        gate: Option<CallGate>,
    ) -> Result<Channels, Vec<Problem>> {
        let max_memory = config
            .enabled_among(names)
            .map(|c| c.limits.memory_bytes)
            .max()
            .unwrap_or(config.plugins.default_limits.memory_bytes);
        let mut problems = Vec::new();
        // Every file is read and counted before the engine exists: the
        // pool is sized from what they need.
        let mut files = Vec::new();
        for cfg in config.enabled_among(names) {
            match PluginFile::read(
                &cfg.name,
                &cfg.plugin_path,
                config.plugins.max_file_bytes,
                cfg.sha256.as_deref(),
            ) {
                Ok(file) => files.push((cfg, file)),
                Err(e) => problems.push(Problem::new(
                    format!("channels.{}.plugin", cfg.name),
                    load_message(&e),
                )),
            }
        }
        let pool = match pool_size(config, files.iter().map(|(c, f)| (*c, f.footprint))) {
            Ok(pool) => pool,
            Err(p) => {
                problems.push(p);
                return Err(config.hide_values(problems));
            }
        };
        let runtime = PluginRuntime::with_pool(&config.plugins, max_memory, pool, gate)
            .map_err(|e| vec![Problem::new("plugins", e.to_string())])?;

        let mut channels = BTreeMap::new();
        for (cfg, file) in files {
            let key = format!("channels.{}.plugin", cfg.name);
            let plugin = match runtime.load_file(&file, cfg.limits, cfg.instances) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(Problem::new(key, load_message(&e)));
                    continue;
                }
            };
            let settings: Vec<Setting> = cfg
                .settings
                .iter()
                .map(|(key, value)| Setting {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect();
            let settings_key = format!("channels.{}.settings", cfg.name);
            let known = &plugin.info().known_settings;
            if !known.is_empty() {
                for (k, _) in &cfg.settings {
                    // `base_url` is the host's, from channels.NAME.base_url:
                    // a plugin need not list it to be told it.
                    if k != "base_url" && !known.contains(k) {
                        problems.push(Problem::new(
                            format!("{settings_key}.{k}"),
                            format!(
                                "plugin `{}` does not know this setting (it knows: {})",
                                plugin.info().name,
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
            match plugin.check_settings(&settings) {
                Ok(Ok(())) => {}
                Ok(Err(list)) => {
                    problems.extend(list.into_iter().map(|m| settings_problem(&settings_key, m)))
                }
                Err(e) => problems.push(Problem::new(settings_key.clone(), e.to_string())),
            }
            channels.insert(
                cfg.name.clone(),
                Channel {
                    config: cfg.clone(),
                    plugin,
                    settings,
                    caps: config.plugins.caps,
                },
            );
        }
        if problems.is_empty() {
            Ok(Channels { runtime, channels })
        } else {
            // A plugin's settings check may quote a value that came from
            // the environment: shown as its `${VAR}` instead, here, once,
            // for every command that loads channels.
            Err(config.hide_values(problems))
        }
    }

    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.channels.get(name)
    }

    /// The runtime the plugins run in (pool size, cache directory).
    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    pub fn iter(&self) -> impl Iterator<Item = &Channel> {
        self.channels.values()
    }
}

/// The instance pool for these channels: each instance sized for the
/// largest footprint among them, and as many instances as can be alive at
/// once (one per call the gate lets run, plus what `reuse` channels keep
/// idle). `plugins.max_instances`, when set, must be at least that.
fn pool_size<'a>(
    config: &Config,
    loaded: impl Iterator<Item = (&'a ChannelConfig, Footprint)>,
) -> Result<PoolSize, Problem> {
    let mut per_instance = Footprint::default();
    // Calls holding an instance (running, or waiting for their next slice)
    // are bounded by the gate; idle `reuse` instances come on top.
    let mut needed = config
        .plugins
        .max_concurrent_calls
        .saturating_mul(crate::plugin::IN_PROGRESS_PER_CALL);
    for (cfg, footprint) in loaded {
        per_instance = per_instance.max(footprint);
        if let InstanceMode::Reuse { keep, .. } = cfg.instances {
            needed = needed.saturating_add(keep);
        }
    }
    let instances = match config.plugins.max_instances {
        None => needed,
        Some(m) if m >= needed => m,
        Some(m) => {
            return Err(Problem::new(
                "plugins.max_instances",
                format!(
                    "{m} is fewer than the {needed} instances that can be alive at once (4 per plugins.max_concurrent_calls, for calls running or waiting for their next turn, plus every reuse channel's reuse_instances); raise it or leave it unset to size the pool from those"
                ),
            ))
        }
    };
    Ok(PoolSize {
        instances,
        per_instance,
    })
}

/// Plugins name the setting as "setting `KEY` ..."; file the problem under
/// that key so it reads like every other config problem.
fn settings_problem(settings_key: &str, message: String) -> Problem {
    if let Some(rest) = message.strip_prefix("setting `") {
        if let Some((key, text)) = rest.split_once('`') {
            let text = text.trim_start_matches(':').trim();
            if !key.is_empty() && !key.contains(char::is_whitespace) && !text.is_empty() {
                return Problem::new(format!("{settings_key}.{key}"), text);
            }
        }
    }
    Problem::new(settings_key, message)
}

/// The config problem already names the channel; say what is wrong with the file.
fn load_message(e: &LoadError) -> String {
    match e {
        LoadError::Read { path, source, .. } => format!("cannot read {}: {source}", path.display()),
        LoadError::NotAFile { path, kind, .. } => {
            format!("{} is {kind}, not a regular file", path.display())
        }
        LoadError::TooLarge {
            path, size, limit, ..
        } => format!(
            "{} is {}, over the limit of {limit} bytes (plugins.max_file_mib)",
            path.display(),
            match size {
                Some(size) => format!("{size} bytes"),
                None => format!("more than {limit} bytes"),
            }
        ),
        LoadError::NotAComponent { path, reason, .. } => format!(
            "{} is not a WebAssembly component: {reason}",
            path.display()
        ),
        LoadError::WrongWorld { path, reason, .. } => format!(
            "{} does not fit the notify:channel world: {reason}",
            path.display()
        ),
        LoadError::Describe { path, source, .. } => format!(
            "{} failed while describing itself: {source}",
            path.display()
        ),
        LoadError::PinMismatch {
            path,
            found,
            pinned,
            ..
        } => format!(
            "{} has SHA-256 {found}, but sha256 pins {pinned}: the file is not the one this config was written for (update the pin if the new plugin is intended)",
            path.display()
        ),
        LoadError::Runtime(m) => m.clone(),
    }
}
