//! What a policy component may import: the contract's own interfaces, and the WASI plumbing
//! that Rust's standard library links into every wasm32-wasip2 component (streams, exit,
//! environment and terminal handles), which the sandbox answers with nothing: no variables, no
//! arguments, an empty stdin, discarded output. Anything else (files, sockets, HTTP, a clock,
//! randomness, an interface the host has never heard of) is refused at load, naming each such
//! import, before the component is instantiated. The C, Python and JavaScript SDK builds import
//! the contract alone.

/// Interface families a policy may import, without their `@version` (the linker checks that).
const ALLOWED: [&str; 13] = [
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// The contract's package; its versions are the linker's to match.
const CONTRACT: &str = "modelyard:policy/";

/// An import a policy may not have, and what it would have reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub import: String,
    pub reaches: &'static str,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` ({})", self.import, self.reaches)
    }
}

/// The imports in `imports` that a policy may not have, in the order given.
pub fn forbidden<'a>(imports: impl IntoIterator<Item = &'a str>) -> Vec<Forbidden> {
    imports
        .into_iter()
        .filter(|name| !allowed(name))
        .map(|name| Forbidden {
            import: name.to_string(),
            reaches: reaches(name),
        })
        .collect()
}

fn allowed(name: &str) -> bool {
    let family = name.split_once('@').map_or(name, |(f, _)| f);
    family.starts_with(CONTRACT) || ALLOWED.contains(&family)
}

fn reaches(name: &str) -> &'static str {
    let package = name.split_once('/').map_or(name, |(p, _)| p);
    match package {
        "wasi:filesystem" => "the host's files",
        "wasi:sockets" | "wasi:http" => "the network",
        "wasi:clocks" => "a clock; a policy reads the time from telemetry's now-ms",
        "wasi:random" => {
            "randomness; a policy's answer must follow from its input, so seed a generator from it"
        }
        _ => "an interface outside the contract",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_std_guest_and_the_contract_pass() {
        let imports = [
            "modelyard:policy/types@0.2.0",
            "modelyard:policy/host@0.1.0",
            "wasi:io/streams@0.2.6",
            "wasi:cli/environment@0.2.6",
            "wasi:cli/terminal-stderr@0.2.0",
            "wasi:cli/exit@0.2.3",
        ];
        assert_eq!(forbidden(imports), vec![]);
    }

    #[test]
    fn files_sockets_http_clocks_random_and_strangers_are_named() {
        let imports = [
            "wasi:io/streams@0.2.6",
            "wasi:filesystem/preopens@0.2.6",
            "wasi:sockets/tcp@0.2.6",
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:clocks/wall-clock@0.2.6",
            "wasi:random/random@0.2.6",
            "acme:spy/exfiltrate",
            // A look-alike of an allowed family is not that family.
            "wasi:io/streams-extra@0.2.6",
            "wasi:cli",
        ];
        let found = forbidden(imports);
        let names: Vec<&str> = found.iter().map(|f| f.import.as_str()).collect();
        assert_eq!(names, imports[1..]);
        assert_eq!(found[0].reaches, "the host's files");
        assert_eq!(found[1].reaches, "the network");
        assert_eq!(found[2].reaches, "the network");
        assert!(found[3].reaches.starts_with("a clock"));
        assert!(found[4].reaches.starts_with("randomness"));
        assert_eq!(found[5].reaches, "an interface outside the contract");
        assert_eq!(
            found[0].to_string(),
            "`wasi:filesystem/preopens@0.2.6` (the host's files)"
        );
    }
}
