//! A guest built against an edited contract: same package name, different signature.
#![allow(unsafe_code)] // the generated export glue

#[allow(clippy::all, unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "foreign" });
}

struct Foreign;

impl bindings::exports::modelyard::policy::eviction::Guest for Foreign {
    fn choose_eviction(_needed_bytes: u64) -> Vec<String> {
        Vec::new()
    }
}

bindings::export!(Foreign with_types_in bindings);
