//! The per-call state a plugin instance lives in.

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::PluginLimits;

/// Tables past this many elements are a runaway, not a plugin's real need.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Store data for one call: a WASI context that grants nothing, and a limiter.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
}

impl Sandbox {
    /// `output_capacity`: what each of stdout and stderr holds (the per-call
    /// limit, or more for an instance that serves several calls).
    pub(crate) fn new(limits: &PluginLimits, output_capacity: usize) -> Sandbox {
        let stdout = MemoryOutputPipe::new(output_capacity);
        let stderr = MemoryOutputPipe::new(output_capacity);
        // The builder's defaults already grant nothing (no preopens, no env,
        // no args, closed stdin, every socket address denied); the explicit
        // calls make that visible here and keep it true if defaults change.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Sandbox {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: limits.memory_bytes,
                refused: None,
            },
            stdout,
            stderr,
        }
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers a refusal, so the trap that usually
/// follows (the guest aborts on allocation failure) is reported as what it is.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    /// The size a refused growth asked for.
    pub(crate) refused: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
