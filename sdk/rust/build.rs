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
         #[macro_export]\nmacro_rules! export {{{arms}\n}}\n{}",
        export_v0_2(&wit.display().to_string())
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

/// The 0.2 exports a policy may choose, in contract order, with each one's trait and glue.
const V0_2_EXPORTS: [(&str, &str); 4] = [
    ("events", "Policy"),
    ("eviction", "EvictionPolicy"),
    ("selection", "SelectionPolicy"),
    ("compression", "CompressionPolicy"),
];

/// `export_v0_2!`: like `export!`, for 0.2. It always exports `lifecycle` (the catalogue goes
/// to `Policy::configure`) and keeps the policy's value in the instance between calls.
fn export_v0_2(wit: &str) -> String {
    let wit = format!("{wit}/v0.2");
    let mut arms = String::new();
    for mask in 1u8..16 {
        let chosen: Vec<_> = V0_2_EXPORTS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, h)| *h)
            .collect();
        if chosen.iter().all(|(name, _)| *name == "events") {
            continue; // a policy exports at least one hook
        }
        let pattern = chosen
            .iter()
            .map(|(h, _)| *h)
            .collect::<Vec<_>>()
            .join(", ");
        let mut world = String::from(
            "package modelyard:guest; world guest { import modelyard:policy/host@0.2.0; \
             export modelyard:policy/lifecycle@0.2.0; ",
        );
        for (name, _) in &chosen {
            write!(world, "export modelyard:policy/{name}@0.2.0; ").expect("string");
        }
        world.push('}');
        let mut impls = String::from(
            "impl exports::modelyard::policy::lifecycle::Guest for $ty {
                fn configure(catalogue: T::Catalogue) -> T::Interests {
                    with(|p| <$ty as ::modelyard_policy::v0_2::Policy>::configure(p, catalogue))
                }
            }\n",
        );
        for (name, policy_trait) in &chosen {
            impls.push_str(&glue_v0_2(name, policy_trait));
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
            use ::modelyard_policy::v0_2::types as T;
            ::modelyard_policy::__private::wit_bindgen::generate!({{
                inline: {world:?},
                path: {wit:?},
                world: "modelyard:guest/guest",
                with: {{
                    "modelyard:policy/types@0.2.0": ::modelyard_policy::v0_2::types,
                    "modelyard:policy/host@0.2.0": ::modelyard_policy::v0_2::host,
                }},
                runtime_path: "::modelyard_policy::__private::wit_bindgen::rt",
            }});
            ::std::thread_local! {{
                static POLICY: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const {{ ::core::cell::RefCell::new(::core::option::Option::None) }};
            }}
            /// The instance's one value of the policy type, made on first use.
            fn with<R>(f: impl FnOnce(&mut $ty) -> R) -> R {{
                POLICY.with(|p| f(p.borrow_mut().get_or_insert_with(<$ty as ::core::default::Default>::default)))
            }}
            {impls}
            export!($ty);
        }}
    }};"#
        )
        .expect("string");
    }
    format!(
        "/// Exports a 0.2 policy type for the hooks it implements, in contract order, and `events`\n\
         /// first if it wants them: `export_v0_2!(MyPolicy: events, eviction, selection)` or any\n\
         /// subset with a hook. The catalogue always goes to `Policy::configure`.\n\
         #[macro_export]\nmacro_rules! export_v0_2 {{{arms}\n}}\n"
    )
}

fn glue_v0_2(name: &str, policy_trait: &str) -> String {
    let (func, sig, args) = match name {
        "events" => ("observe", "(events: ::std::vec::Vec<T::Event>)", "events"),
        "eviction" => (
            "choose_eviction",
            "(req: T::EvictionRequest) -> T::EvictionDecision",
            "req",
        ),
        "selection" => (
            "select_model",
            "(req: T::Request, candidates: ::std::vec::Vec<T::Model>, telemetry: T::Telemetry) -> T::Selection",
            "req, candidates, telemetry",
        ),
        _ => (
            "compress_context",
            "(req: T::CompressionRequest) -> ::std::result::Result<::std::vec::Vec<T::Message>, ::std::string::String>",
            "req",
        ),
    };
    format!(
        "impl exports::modelyard::policy::{name}::Guest for $ty {{
                fn {func}{sig} {{
                    with(|p| <$ty as ::modelyard_policy::v0_2::{policy_trait}>::{func}(p, {args}))
                }}
            }}\n"
    )
}
