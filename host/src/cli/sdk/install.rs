//! `modelyard setup --sdk LANG`: installs the tools that build policies in each language, from
//! the public registries, into `DIR/sdk` (by default inside `target/demo`, which git ignores),
//! and writes `DIR/sdk/LANG.env` to put them on a shell's `PATH`. Every step is skipped when
//! its result is already there.
//!
//! - Rust: the toolchain's `wasm32-wasip2` target (`rustup target add`, into the toolchain).
//! - Python: componentize-py from PyPI, in the demo's virtual environment (`DIR/venv`).
//! - JavaScript: componentize-js and jco from npm, in `sdk/node`.
//! - C: Debian's clang, lld, wasi-libc and wasm32 compiler-rt, unpacked (not installed) into
//!   `sdk/c`, plus `wit-bindgen` and `wasm-tools` from crates.io in `sdk/cargo`.
//!
//! A failed step fails with the step's name, so a test that needs the tools says which install
//! step broke.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::Lang;
use crate::cli::setup::run;

const COMPONENTIZE_PY_PACKAGE: &str = "componentize-py==0.25.1";
/// npm packages for JavaScript policies; the override keeps jco's type generator on a WASI
/// shim that can read the `wit/` folder (preview2-shim 0.26 preopens nothing).
const NODE_PACKAGE_JSON: &str = r#"{
  "private": true,
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/jco": "1.35.0",
    "typescript": "5.9.3"
  },
  "overrides": {
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;
/// Debian's packages for C policies: the compiler, its linker, the wasm32 builtins and libc.
const C_PACKAGES: [&str; 7] = [
    "clang-14",
    "libclang-cpp14",
    "libllvm14",
    "libclang-common-14-dev",
    "lld-14",
    "libclang-rt-14-dev-wasm32",
    "wasi-libc",
];
/// crates.io tools for C policies: bindings from the contract, and core module to component.
const WIT_BINDGEN: (&str, &str, &[&str]) = (
    "wit-bindgen-cli@0.63.0",
    "wit-bindgen",
    &["--no-default-features", "--features", "c"],
);
const WASM_TOOLS: (&str, &str, &[&str]) = (
    "wasm-tools@1.263.0",
    "wasm-tools",
    &[
        "--no-default-features",
        "--features",
        "component,print,validate",
    ],
);

/// What a build needs in its environment to find a language's tools: folders to put in front
/// of `PATH` (the C compiler's wrapper carries its own library path and sysroot).
#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub path: Vec<PathBuf>,
}

impl Tools {
    /// Applies these tools to `cmd`'s environment.
    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let mut path = self.path.clone();
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        if let Ok(joined) = std::env::join_paths(path) {
            cmd.env("PATH", joined);
        }
        cmd
    }
}

impl Tools {
    /// A POSIX shell snippet that sets these tools up (`. target/demo/sdk/c.env`).
    pub fn shell_env(&self) -> String {
        let quote = |v: &std::ffi::OsStr| {
            let v = v.to_string_lossy();
            shlex::try_quote(&v).map_or_else(|_| v.to_string(), |q| q.into_owned())
        };
        let mut out = String::new();
        for p in &self.path {
            out.push_str(&format!("export PATH={}:\"$PATH\"\n", quote(p.as_os_str())));
        }
        out
    }
}

/// Installs (or finds, if already installed) the tools for `lang` under `dir/sdk`.
pub fn install(dir: &Path, lang: Lang) -> anyhow::Result<Tools> {
    std::fs::create_dir_all(dir.join("sdk"))
        .with_context(|| format!("creating {}", dir.join("sdk").display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let result = match lang {
        Lang::Rust => rust(),
        Lang::Python => python(&dir),
        Lang::Js => js(&dir.join("sdk/node")),
        Lang::C => c(&dir.join("sdk")),
    };
    let tools = result.with_context(|| format!("installing the {} policy tools", lang.name()))?;
    let env_file = dir.join("sdk").join(format!("{}.env", lang.name()));
    std::fs::write(&env_file, tools.shell_env())
        .with_context(|| format!("writing {}", env_file.display()))?;
    step(
        lang.name(),
        &format!(
            "ready; `. {}` puts the tools on this shell's PATH",
            env_file.display()
        ),
    );
    Ok(tools)
}

fn rust() -> anyhow::Result<Tools> {
    step("rust", "adding the wasm32-wasip2 target (rustup)");
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    Ok(Tools::default())
}

fn python(dir: &Path) -> anyhow::Result<Tools> {
    let venv = dir.join("venv");
    if !venv.join("bin/python").exists() {
        step("python", "creating a Python virtual environment");
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    if !venv.join("bin/componentize-py").is_file() {
        step("python", "installing componentize-py from PyPI");
        run(Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .arg(COMPONENTIZE_PY_PACKAGE))?;
    }
    Ok(Tools {
        path: vec![venv.join("bin")],
    })
}

fn js(node: &Path) -> anyhow::Result<Tools> {
    let bin = node.join("node_modules/.bin");
    let manifest = node.join("package.json");
    let current = std::fs::read_to_string(&manifest).is_ok_and(|t| t == NODE_PACKAGE_JSON);
    if !current
        || ["componentize-js", "jco", "tsc"]
            .iter()
            .any(|b| !bin.join(b).exists())
    {
        std::fs::create_dir_all(node)?;
        std::fs::write(&manifest, NODE_PACKAGE_JSON)?;
        step(
            "js",
            "installing componentize-js, jco and TypeScript from npm",
        );
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--cache"])
            .arg(node.join("cache"))
            .current_dir(node))
        .context("`npm install` failed (are Node.js and npm installed?)")?;
    }
    Ok(Tools { path: vec![bin] })
}

fn c(sdk: &Path) -> anyhow::Result<Tools> {
    let root = sdk.join("c");
    let clang = root.join("usr/lib/llvm-14/bin/clang");
    let libc = root.join("usr/lib/wasm32-wasi/libc.a");
    if !clang.is_file() || !libc.is_file() {
        let debs = sdk.join("c-debs");
        std::fs::create_dir_all(&debs)?;
        step(
            "c",
            "downloading Debian's clang, lld, wasi-libc and wasm32 compiler-rt",
        );
        let download = || {
            run(Command::new("apt-get")
                .arg("download")
                .args(C_PACKAGES)
                .current_dir(&debs))
        };
        if download().is_err() {
            // A fresh machine may have no package lists yet.
            step(
                "c",
                "refreshing the package lists (apt-get update) and trying again",
            );
            let _ = run(Command::new("apt-get").args(["update", "-qq"]));
            download().context("`apt-get download` failed (the C SDK uses Debian's packages)")?;
        }
        step("c", "unpacking them (no system install)");
        for entry in std::fs::read_dir(&debs)? {
            let deb = entry?.path();
            if deb.extension().is_some_and(|x| x == "deb") {
                run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
            }
        }
        std::fs::remove_dir_all(&debs)?;
    }
    let cargo_root = sdk.join("cargo");
    for (package, bin, features) in [WIT_BINDGEN, WASM_TOOLS] {
        if !cargo_root.join("bin").join(bin).is_file() {
            step(
                "c",
                &format!("building {package} from crates.io (a few minutes, once)"),
            );
            run(Command::new("cargo")
                .args(["install", "--locked", "--quiet", "--root"])
                .arg(&cargo_root)
                .args(features)
                .arg(package)
                // Its own target folder, so a workspace build's settings do not leak in.
                .env("CARGO_TARGET_DIR", sdk.join("cargo-build")))?;
        }
    }
    let _ = std::fs::remove_dir_all(sdk.join("cargo-build"));
    // A `clang` that finds the unpacked libraries and wasi-libc without any set-up.
    let wrapper = root.join("bin/clang");
    std::fs::create_dir_all(root.join("bin"))?;
    let libs = format!(
        "{}:{}",
        root.join("usr/lib/x86_64-linux-gnu").display(),
        root.join("usr/lib/llvm-14/lib").display()
    );
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# Debian's clang 14, unpacked by `modelyard setup --sdk c`, with its libraries and wasi-libc.\n\
             LD_LIBRARY_PATH='{libs}'${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}} exec '{}' --sysroot='{}' \"$@\"\n",
            clang.display(),
            root.join("usr").display()
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    Ok(Tools {
        // `usr/bin` holds `wasm-ld-14`, which Debian's clang calls by that name.
        path: vec![
            cargo_root.join("bin"),
            root.join("bin"),
            root.join("usr/bin"),
        ],
    })
}

fn step(lang: &str, what: &str) {
    eprintln!("modelyard setup --sdk {lang}: {what}");
}
