//! Resource telemetry: one [`Snapshot`] type filled from `sysinfo` (RAM, CPU, per-process RSS)
//! and NVML (per-GPU memory and use, per-process VRAM), and the measured [`Footprint`] of a
//! backend's process tree.
//!
//! It never fails for want of a GPU: without an NVIDIA driver the host runs CPU-only and says
//! so once in the log. It knows nothing of models or policies; callers ask about pids.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::config::CPU_DEVICE;

/// Memory and use of one device at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceUsage {
    /// `cpu` for RAM, `gpu0`, `gpu1`, ... for GPUs.
    pub name: String,
    /// What the hardware calls itself (the GPU's name; empty for RAM).
    pub product: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    /// Busy percentage (GPU utilisation; for the CPU, all cores together).
    pub utilization_percent: Option<u8>,
}

/// The machine at one moment: RAM first, then each GPU.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshot {
    pub devices: Vec<DeviceUsage>,
    pub cpu_percent: f32,
}

impl Snapshot {
    /// The device with this name.
    pub fn device(&self, name: &str) -> Option<&DeviceUsage> {
        self.devices.iter().find(|d| d.name == name)
    }
}

/// What a process tree really holds: its resident memory and its memory on each GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    /// The root and every descendant found alive.
    pub pids: Vec<u32>,
    pub ram_bytes: u64,
    /// VRAM by GPU device name (`gpu0`, ...); empty on a CPU-only machine.
    pub vram_bytes: BTreeMap<String, u64>,
}

impl Footprint {
    /// The bytes it holds on `device`.
    pub fn on(&self, device: &str) -> u64 {
        if device == CPU_DEVICE {
            self.ram_bytes
        } else {
            self.vram_bytes.get(device).copied().unwrap_or(0)
        }
    }
}

/// Reads the machine. Not shared: wrap it in a mutex; each call takes a few milliseconds.
pub struct Telemetry {
    system: System,
    nvml: Option<Nvml>,
    last_cpu_refresh: Option<Instant>,
    /// A machine that is not this one (the simulator's): every snapshot is this one.
    fixed: Option<Snapshot>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("gpus", &self.nvml.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Opens sysinfo and, where an NVIDIA driver is present, NVML.
    pub fn new() -> anyhow::Result<Self> {
        let system =
            System::new().map_err(|e| anyhow::anyhow!("reading system information: {e}"))?;
        let nvml = match Nvml::init() {
            Ok(nvml) => {
                let n = nvml.device_count().unwrap_or(0);
                tracing::info!(gpus = n, "NVML telemetry on");
                Some(nvml)
            }
            Err(e) => {
                tracing::info!(reason = %e, "no NVIDIA GPU telemetry; running CPU-only");
                None
            }
        };
        Ok(Self {
            system,
            nvml,
            last_cpu_refresh: None,
            fixed: None,
        })
    }

    /// Telemetry of an imagined machine that always reads `snapshot` and measures no process:
    /// what the simulator runs the scheduler on.
    pub fn fixed(snapshot: Snapshot) -> anyhow::Result<Self> {
        let system =
            System::new().map_err(|e| anyhow::anyhow!("reading system information: {e}"))?;
        Ok(Self {
            system,
            nvml: None,
            last_cpu_refresh: None,
            fixed: Some(snapshot),
        })
    }

    /// True when GPU telemetry is available.
    pub fn has_gpus(&self) -> bool {
        self.nvml.is_some()
    }

    /// RAM, CPU and every GPU now.
    pub fn snapshot(&mut self) -> Snapshot {
        if let Some(fixed) = &self.fixed {
            return fixed.clone();
        }
        self.system.refresh_memory();
        // CPU use is a difference between two readings; the first one reads 0.
        self.system.refresh_cpu_usage();
        let cpu_percent = if self.last_cpu_refresh.is_some() {
            self.system.global_cpu_usage()
        } else {
            0.0
        };
        self.last_cpu_refresh = Some(Instant::now());
        let total = self.system.total_memory();
        let available = self.system.available_memory();
        let mut devices = vec![DeviceUsage {
            name: CPU_DEVICE.to_string(),
            product: String::new(),
            total_bytes: total,
            used_bytes: total.saturating_sub(available),
            free_bytes: available,
            utilization_percent: Some(cpu_percent.clamp(0.0, 100.0) as u8),
        }];
        devices.extend(self.gpus());
        Snapshot {
            devices,
            cpu_percent,
        }
    }

    fn gpus(&self) -> Vec<DeviceUsage> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let dev = nvml.device_by_index(i).ok()?;
                let mem = dev.memory_info().ok()?;
                Some(DeviceUsage {
                    name: format!("gpu{i}"),
                    product: dev.name().unwrap_or_default(),
                    total_bytes: mem.total,
                    // Not `mem.used`: recent drivers leave the driver's reserved memory out of
                    // it (it read 0 on an idle H200 with 600 MiB not free).
                    used_bytes: mem.total.saturating_sub(mem.free),
                    free_bytes: mem.free,
                    utilization_percent: dev.utilization_rates().ok().map(|u| u.gpu.min(100) as u8),
                })
            })
            .collect()
    }

    /// The measured footprint of `root` and all its descendants. Empty if `root` is gone.
    pub fn footprint(&mut self, root: u32) -> Footprint {
        if self.fixed.is_some() {
            return Footprint::default();
        }
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let procs = self.system.processes();
        if !procs.contains_key(&Pid::from_u32(root)) {
            return Footprint::default();
        }
        let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
        for (pid, p) in procs {
            if let Some(parent) = p.parent() {
                children.entry(parent).or_default().push(*pid);
            }
        }
        let mut pids = Vec::new();
        let mut stack = vec![Pid::from_u32(root)];
        let mut ram_bytes = 0;
        while let Some(pid) = stack.pop() {
            if let Some(p) = procs.get(&pid) {
                // Threads show up as processes on Linux; count each task's memory once.
                if p.thread_kind().is_some() {
                    continue;
                }
                ram_bytes += p.memory();
                pids.push(pid.as_u32());
            }
            stack.extend(children.get(&pid).into_iter().flatten());
        }
        pids.sort_unstable();
        let vram_bytes = self.vram_of(&pids);
        Footprint {
            pids,
            ram_bytes,
            vram_bytes,
        }
    }

    fn vram_of(&self, pids: &[u32]) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Some(nvml) = &self.nvml else {
            return out;
        };
        for i in 0..nvml.device_count().unwrap_or(0) {
            let Ok(dev) = nvml.device_by_index(i) else {
                continue;
            };
            let procs = dev
                .running_compute_processes()
                .into_iter()
                .chain(dev.running_graphics_processes())
                .flatten();
            let bytes: u64 = procs
                .filter(|p| pids.contains(&p.pid))
                .map(|p| match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => b,
                    UsedGpuMemory::Unavailable => 0,
                })
                .sum();
            if bytes > 0 {
                out.insert(format!("gpu{i}"), bytes);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_always_has_ram_and_a_footprint_finds_this_process() {
        let mut t = Telemetry::new().expect("sysinfo");
        let s = t.snapshot();
        let ram = s.device(CPU_DEVICE).expect("ram");
        assert!(ram.total_bytes > 0 && ram.used_bytes <= ram.total_bytes);
        assert_eq!(s.devices.len(), 1 + t.gpus().len());
        let me = t.footprint(std::process::id());
        assert!(me.pids.contains(&std::process::id()));
        assert!(me.ram_bytes > 1 << 20, "{me:?}");
        assert_eq!(t.footprint(u32::MAX - 1), Footprint::default());
    }
}
