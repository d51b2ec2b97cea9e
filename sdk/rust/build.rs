//! Writes the `export!` macro, one arm per subset of hooks, each naming this crate's own copy
//! of the contract by absolute path so a policy crate needs no WIT files of its own.

use std::fmt::Write as _;
use std::path::PathBuf;

const HOOKS: [(&str, &str); 3] = [
    ("eviction", "EvictionPolicy"),
    ("selection", "SelectionPolicy"),
    ("compression", "CompressionPolicy"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit = manifest.join("wit");
    let wit = wit.canonicalize().unwrap_or(wit);
    println!("cargo:rerun-if-changed={}", wit.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut arms = String::new();
    for mask in 1u8..8 {
        let chosen: Vec<_> = HOOKS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, h)| *h)
            .collect();
        let pattern = chosen
            .iter()
            .map(|(h, _)| *h)
            .collect::<Vec<_>>()
            .join(", ");
        let mut world = String::from(
            "package modelyard:guest; world guest { import modelyard:policy/host@0.1.0; ",
        );
        for (hook, _) in &chosen {
            write!(world, "export modelyard:policy/{hook}@0.1.0; ").expect("string");
        }
        world.push('}');
        let mut impls = String::new();
        for (hook, policy_trait) in &chosen {
            impls.push_str(&glue(hook, policy_trait));
        }
        write!(
            arms,
            r#"
    ($ty:ident : {pattern}) => {{
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(clippy::all, unsafe_code)]
        mod __modelyard_policy_export {{
            use super::$ty;
            ::modelyard_policy::__private::wit_bindgen::generate!({{
                inline: {world:?},
                path: {wit:?},
                world: "modelyard:guest/guest",
                with: {{
                    "modelyard:policy/types@0.1.0": ::modelyard_policy::types,
                    "modelyard:policy/host@0.1.0": ::modelyard_policy::host,
                }},
                runtime_path: "::modelyard_policy::__private::wit_bindgen::rt",
            }});
            {impls}
            export!($ty);
        }}
    }};"#,
            wit = wit.display().to_string(),
        )
        .expect("string");
    }
    let source = format!(
        "/// Exports a policy type for the hooks it implements, in contract order:\n\
         /// `export!(MyPolicy: eviction, selection, compression)` or any subset of them.\n\
         #[macro_export]\nmacro_rules! export {{{arms}\n}}\n"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("export.rs");
    std::fs::write(out, source).expect("write export.rs");
}

fn glue(hook: &str, policy_trait: &str) -> String {
    let (func, sig, args) = match hook {
        "eviction" => (
            "choose_eviction",
            "(req: ::modelyard_policy::types::EvictionRequest) -> ::modelyard_policy::types::EvictionDecision",
            "req",
        ),
        "selection" => (
            "select_model",
            "(req: ::modelyard_policy::types::Request, candidates: ::std::vec::Vec<::modelyard_policy::types::Model>, telemetry: ::modelyard_policy::types::Telemetry) -> ::modelyard_policy::types::Selection",
            "req, candidates, telemetry",
        ),
        _ => (
            "compress_context",
            "(req: ::modelyard_policy::types::CompressionRequest) -> ::std::result::Result<::std::vec::Vec<::modelyard_policy::types::Message>, ::std::string::String>",
            "req",
        ),
    };
    format!(
        "impl exports::modelyard::policy::{hook}::Guest for $ty {{
                fn {func}{sig} {{
                    <$ty as ::modelyard_policy::{policy_trait}>::{func}({args})
                }}
            }}\n"
    )
}
