//! `notify-host plugin compile`: compiles every enabled channel's plugin
//! into the compile cache ahead of time (for a container image), so the
//! service's start-up and every `plugin ...` command skip the compiler.
//!
//! Invariant: what it writes is exactly what `run` would look up: the same
//! engine configuration (built from the same config file) and wasmtime's
//! own cache, keyed by the component's bytes and that configuration.

use std::path::Path;
use std::process::ExitCode;

use super::{load_channels, load_config, EXIT_FAILURE};
use anyhow::Result;

pub fn run(config_path: &Path) -> Result<ExitCode> {
    let config = match load_config(config_path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let Some(dir) = config.plugins.cache_dir.clone() else {
        eprintln!(
            "error: the compile cache is off (plugins.cache = false in {}): there is nothing to compile into",
            config_path.display()
        );
        return Ok(ExitCode::from(EXIT_FAILURE));
    };
    let enabled: Vec<&str> = config.enabled_channels().map(|c| c.name.as_str()).collect();
    if enabled.is_empty() {
        println!(
            "no enabled channel in {}: nothing to compile",
            config_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "compiling {} plugin(s) into {} ...",
        enabled.len(),
        dir.display()
    );
    let started = std::time::Instant::now();
    let channels = match load_channels(config_path, &config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if let Some(why) = channels.runtime().cache_problem() {
        eprintln!(
            "error: the compile cache is not usable (plugins.cache_dir): {why}; nothing was stored"
        );
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    for c in channels.iter() {
        let compiled = c.plugin.compiled();
        println!(
            "  channel {}: {} {} sha256 {} {} in {} ms",
            c.name(),
            c.plugin.info().name,
            c.plugin.info().version,
            c.plugin.sha256(),
            if compiled.from_cache {
                "already cached, checked"
            } else {
                "compiled and cached"
            },
            compiled.took.as_millis()
        );
    }
    println!(
        "done in {:.1} s; pin a plugin with channels.NAME.sha256 = \"<sha256 above>\"",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
