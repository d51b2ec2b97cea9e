//! The project `modelyard policy new --lang L` writes: each SDK's template, its helpers and the
//! contract, as files compiled into the binary, so a new project builds with no checkout.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Lang;

const CONTRACT: &str = include_str!("../../../../wit/policy.wit");
const CONTRACT_V0_2: &str = include_str!("../../../../wit/v0.2/policy.wit");
/// The world a Python, JavaScript or C project builds: the 0.2 hooks it exports.
const WORLD_V0_2: &str = include_str!("../../../../sdk/world.wit");
const PY_APP: &str = include_str!("../../../../sdk/python/template/app.py");
const PY_README: &str = include_str!("../../../../sdk/python/template/README.md");
const PY_HELPERS: &str = include_str!("../../../../sdk/python/modelyard_policy.py");
const JS_APP: &str = include_str!("../../../../sdk/js/template/app.js");
const JS_PACKAGE: &str = include_str!("../../../../sdk/js/template/package.json");
const JS_CONFIG: &str = include_str!("../../../../sdk/js/template/jsconfig.json");
const JS_README: &str = include_str!("../../../../sdk/js/template/README.md");
const JS_HELPERS: &str = include_str!("../../../../sdk/js/modelyard_policy.js");
const C_APP: &str = include_str!("../../../../sdk/c/template/app.c");
const C_MAKEFILE: &str = include_str!("../../../../sdk/c/template/Makefile");
const C_README: &str = include_str!("../../../../sdk/c/template/README.md");
const C_HEADER: &str = include_str!("../../../../sdk/c/modelyard_policy.h");
const C_HELPERS: &str = include_str!("../../../../sdk/c/modelyard_policy.c");
const RS_MANIFEST: &str = include_str!("../../../../sdk/rust/template/Cargo.toml");
const RS_LIB: &str = include_str!("../../../../sdk/rust/template/src/lib.rs");
const RS_README: &str = include_str!("../../../../sdk/rust/template/README.md");
const RS_SDK_BUILD: &str = include_str!("../../../../sdk/rust/build.rs");
const RS_SDK_LIB: &str = include_str!("../../../../sdk/rust/src/lib.rs");
const RS_SDK_HELPERS: &str = include_str!("../../../../sdk/rust/src/helpers.rs");
const RS_SDK_V0_2: &str = include_str!("../../../../sdk/rust/src/v0_2/mod.rs");
const RS_SDK_V0_2_HELPERS: &str = include_str!("../../../../sdk/rust/src/v0_2/helpers.rs");
/// The workspace's manifest: the one place the SDK crate's version, edition, licence and
/// wit-bindgen requirement are written.
const WORKSPACE_MANIFEST: &str = include_str!("../../../../Cargo.toml");

/// The SDK crate's manifest outside this workspace, with the fields the workspace's own
/// inherits filled in from the workspace's manifest.
fn rs_sdk_manifest() -> String {
    let root: toml::Table = toml::from_str(WORKSPACE_MANIFEST).unwrap_or_default();
    let ws = &root["workspace"];
    let package = |key: &str| ws["package"][key].as_str().unwrap_or_default().to_string();
    let bindgen = &ws["dependencies"]["wit-bindgen"];
    let features: Vec<String> = bindgen["features"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(toml::Value::as_str)
                .map(|v| format!("{v:?}"))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "[package]\nname = \"modelyard-policy\"\n\
         description = \"Write modelyard policies in Rust: typed bindings, one trait per hook, helpers, export macro\"\n\
         version = \"{}\"\nedition = \"{}\"\nlicense = \"{}\"\npublish = false\n\n\
         [dependencies]\nwit-bindgen = {{ version = {:?}, default-features = {}, features = [{}] }}\n",
        package("version"),
        package("edition"),
        package("license"),
        bindgen["version"].as_str().unwrap_or_default(),
        bindgen["default-features"].as_bool().unwrap_or(true),
        features.join(", ")
    )
}
const IGNORE: &str = "*.wasm\ntarget/\nnode_modules/\ntypes/\ngen/\n";

/// The files of a new `lang` project named `name`, by path within its folder.
fn template(lang: Lang, name: &str) -> Vec<(&'static str, String)> {
    let fill = |t: &str| {
        t.replace("{{NAME}}", name)
            .replace("{{CRATE}}", &name.replace('-', "_"))
    };
    let mut files = vec![(".gitignore", IGNORE.to_string())];
    files.extend(match lang {
        Lang::Rust => vec![
            ("Cargo.toml", fill(RS_MANIFEST)),
            ("src/lib.rs", RS_LIB.to_string()),
            ("README.md", fill(RS_README)),
            ("modelyard-policy/Cargo.toml", rs_sdk_manifest()),
            ("modelyard-policy/build.rs", RS_SDK_BUILD.to_string()),
            ("modelyard-policy/src/lib.rs", RS_SDK_LIB.to_string()),
            (
                "modelyard-policy/src/helpers.rs",
                RS_SDK_HELPERS.to_string(),
            ),
            ("modelyard-policy/src/v0_2/mod.rs", RS_SDK_V0_2.to_string()),
            (
                "modelyard-policy/src/v0_2/helpers.rs",
                RS_SDK_V0_2_HELPERS.to_string(),
            ),
            ("modelyard-policy/wit/policy.wit", CONTRACT.to_string()),
            (
                "modelyard-policy/wit/v0.2/policy.wit",
                CONTRACT_V0_2.to_string(),
            ),
        ],
        Lang::Python => vec![
            ("app.py", PY_APP.to_string()),
            ("modelyard_policy.py", PY_HELPERS.to_string()),
            ("wit/policy.wit", WORLD_V0_2.to_string()),
            ("wit/deps/policy/policy.wit", CONTRACT_V0_2.to_string()),
            ("README.md", fill(PY_README)),
        ],
        Lang::Js => vec![
            ("app.js", JS_APP.to_string()),
            ("modelyard_policy.js", JS_HELPERS.to_string()),
            ("package.json", fill(JS_PACKAGE)),
            ("jsconfig.json", JS_CONFIG.to_string()),
            ("wit/policy.wit", WORLD_V0_2.to_string()),
            ("wit/deps/policy/policy.wit", CONTRACT_V0_2.to_string()),
            ("README.md", fill(JS_README)),
        ],
        Lang::C => vec![
            ("app.c", C_APP.to_string()),
            ("modelyard_policy.h", C_HEADER.to_string()),
            ("modelyard_policy.c", C_HELPERS.to_string()),
            ("Makefile", fill(C_MAKEFILE)),
            ("wit/policy.wit", WORLD_V0_2.to_string()),
            ("wit/deps/policy/policy.wit", CONTRACT_V0_2.to_string()),
            ("README.md", fill(C_README)),
        ],
    });
    files
}

/// Writes the `lang` template as project `name` into `dir/name` and returns that folder.
pub fn write_project(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<PathBuf> {
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!(
            "{name:?}: a policy name starts with a letter and holds letters, digits, `-` and `_`"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        anyhow::bail!("{} exists already", root.display());
    }
    for (path, text) in template(lang, name) {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(root)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_sdk_manifest_takes_its_versions_from_the_workspace() {
        let manifest: toml::Table = toml::from_str(&rs_sdk_manifest()).expect("valid TOML");
        let root: toml::Table = toml::from_str(WORKSPACE_MANIFEST).expect("valid TOML");
        let ws = &root["workspace"];
        assert_eq!(manifest["package"]["version"], ws["package"]["version"]);
        assert_eq!(manifest["package"]["edition"], ws["package"]["edition"]);
        assert_eq!(
            manifest["dependencies"]["wit-bindgen"],
            ws["dependencies"]["wit-bindgen"]
        );
    }

    #[test]
    fn policy_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "1st", "a b", "../up", "x/y"] {
            assert!(write_project(bad, Lang::C, dir.path()).is_err(), "{bad:?}");
        }
        let made = write_project("ok_name-2", Lang::C, dir.path()).unwrap();
        assert!(made.join("Makefile").is_file());
        let again = write_project("ok_name-2", Lang::C, dir.path()).unwrap_err();
        assert!(again.to_string().contains("exists already"), "{again}");
    }
}
