//! Telemetry on whatever machine runs the tests: CPU-only without an NVIDIA driver (as in CI),
//! and per-GPU memory plus per-process VRAM where NVML answers.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use modelyard::telemetry::Telemetry;

#[test]
fn gpus_are_reported_where_nvml_answers_and_absent_gpus_are_not_an_error() {
    let mut t = Telemetry::new().expect("telemetry never fails for want of a GPU");
    let s = t.snapshot();
    assert_eq!(s.devices[0].name, "cpu");
    if !t.has_gpus() {
        eprintln!("no NVIDIA driver here: telemetry is CPU-only, as expected without a GPU");
        assert_eq!(s.devices.len(), 1);
        return;
    }
    let gpu = s.device("gpu0").expect("NVML answers, so gpu0 is listed");
    assert!(
        gpu.total_bytes > 0 && gpu.used_bytes <= gpu.total_bytes,
        "{gpu:?}"
    );
    assert!(!gpu.product.is_empty());
    eprintln!("{gpu:?}");

    // A real process holding 512 MiB of VRAM: its footprint shows it on gpu0.
    let script = "import torch, time\n\
                  x = torch.empty(512 << 20, dtype=torch.uint8, device='cuda')\n\
                  torch.cuda.synchronize()\n\
                  print('ready', flush=True)\n\
                  time.sleep(120)\n";
    let Ok(mut child) = Command::new("python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!("no python3 here: per-process VRAM not checked");
        return;
    };
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        eprintln!("python3 has no CUDA torch here: per-process VRAM not checked");
        return;
    }
    let fp = t.footprint(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("{fp:?}");
    assert!(fp.on("gpu0") >= 512 << 20, "{fp:?}");
    assert!(fp.ram_bytes > 0);
}
