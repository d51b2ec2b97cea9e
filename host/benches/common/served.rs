//! `modelyard serve` as a process on loopback over the load runs' four models (the demo's
//! files, room for two), for the load and soak benchmarks: started, measured from `/proc`,
//! stopped with SIGTERM, and checked for model servers left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use modelyard::cli::setup::{self, Demo};

use super::generator;

/// A running host and the folder its config, policies and log live in.
pub struct Served {
    host: Child,
    pub pid: u32,
    pub base: String,
    pub work: tempfile::TempDir,
}

/// How a host ended.
pub struct Stopped {
    pub exit: ExitStatus,
    /// Model servers that outlived it.
    pub left: usize,
}

impl Stopped {
    /// Ends a run's table with how the host stopped and why requests were lost; an error if
    /// any was, or a server outlived the host.
    pub fn report(&self, tally: &generator::Tally) -> anyhow::Result<()> {
        println!("| host exit after SIGTERM | {} |", self.exit);
        println!("| llama-server processes left | {} |", self.left);
        for why in &tally.lost_why {
            println!("lost: {why}");
        }
        anyhow::ensure!(
            tally.lost == 0 && self.left == 0,
            "requests lost or servers left"
        );
        Ok(())
    }
}

impl Served {
    /// Starts the host with the load runs' config plus `extra` TOML, and waits for `/health`.
    pub fn start(rt: &tokio::runtime::Runtime, extra: &str) -> anyhow::Result<Served> {
        let demo = Demo::read(&super::common::demo_dir())?;
        let q4_0 = (demo.smollm2_q4_0.as_ref())
            .ok_or_else(|| anyhow::anyhow!("the demo has no Q4_0 model; run `modelyard setup`"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let work = tempfile::tempdir()?;
        let config = generator::config(
            &setup::llama_server_cmd(&demo.llama_server),
            &demo.smollm2.display().to_string(),
            &demo.gemma3.display().to_string(),
            &q4_0.display().to_string(),
            &format!("127.0.0.1:{port}"),
        );
        std::fs::write(
            work.path().join("modelyard.toml"),
            format!("{config}{extra}"),
        )?;
        let host = Command::new(env!("CARGO_BIN_EXE_modelyard"))
            .args(["serve", "--config"])
            .arg(work.path().join("modelyard.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("serve.log"))?)
            .spawn()?;
        let served = Served {
            pid: host.id(),
            host,
            base: format!("http://127.0.0.1:{port}"),
            work,
        };
        let up = rt.block_on(async {
            for _ in 0..100 {
                if reqwest::get(format!("{}/health", served.base))
                    .await
                    .is_ok()
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        anyhow::ensure!(up, "the host did not start; see {}", served.log().display());
        Ok(served)
    }

    pub fn log(&self) -> PathBuf {
        self.work.path().join("serve.log")
    }

    /// The host's resident memory (KiB) and open file descriptors now.
    pub fn rss_and_fds(&self) -> (u64, usize) {
        (generator::rss_kib(self.pid), generator::open_fds(self.pid))
    }

    /// Sends the host `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(self.pid)?), signal)?;
        Ok(())
    }

    /// Stops the host with SIGTERM and counts the model servers that outlived it. The host's
    /// log (warnings and errors: every 5xx is there with its model and cause) is kept in
    /// `target/bench-logs/`, since the run's folder goes with it.
    pub fn stop(mut self) -> anyhow::Result<Stopped> {
        let servers = descendants(self.pid);
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        let exit = self.host.wait()?;
        // A server killed as the host went may take a moment to be gone; one still there
        // after this is left behind.
        let alive = |p: &u32| Path::new(&format!("/proc/{p}")).exists();
        for _ in 0..50 {
            if !servers.iter().any(alive) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = servers.iter().filter(|p| alive(p)).count();
        let kept = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bench-logs")
            .join(format!("serve-{}.log", self.pid));
        if std::fs::create_dir_all(kept.parent().unwrap_or(Path::new(".")))
            .and_then(|()| std::fs::copy(self.log(), &kept))
            .is_ok()
        {
            eprintln!("the host's log: {}", kept.display());
        }
        Ok(Stopped { exit, left })
    }
}

/// Every process descended from `root` (its model servers and whatever they started).
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so read after its last ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.retain(|&p| p != root);
    found
}
