//! What a guest instance may touch: a capability-free WASI context, a frozen clock, and a
//! memory cap that remembers when it was hit.

use wasmtime::ResourceLimiter;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

/// The per-store data of one guest instance.
pub struct GuestState {
    /// The policy's name, for the guest's log lines.
    pub policy: String,
    wasi: WasiCtx,
    table: ResourceTable,
    memory_cap: usize,
    /// Set when the guest asked for more memory than its cap.
    pub hit_memory_cap: bool,
}

impl GuestState {
    pub fn new(policy: &str, memory_cap: usize) -> Self {
        // Nothing is granted: no preopened directory, no environment, no arguments, no stdio,
        // no sockets, and a clock stopped at zero. std guests still import these interfaces,
        // so they are linked, empty.
        let wasi = WasiCtx::builder()
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            policy: policy.to_string(),
            wasi,
            table: ResourceTable::new(),
            memory_cap,
            hit_memory_cap: false,
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.hit_memory_cap = true;
            wasmtime::bail!(
                "memory cap of {} bytes exceeded (asked for {desired})",
                self.memory_cap
            );
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

/// Table elements a guest may grow to; function tables of real guests stay far below.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// A clock that always reads zero: policies get time from `telemetry.now-ms` only, so their
/// decisions depend on their input alone.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
