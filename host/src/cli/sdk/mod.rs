//! The policy SDKs the binary knows: the languages, the project template `policy new` writes
//! for each (`template.rs`), and the tools that build one (`install.rs`, `setup --sdk`).

mod install;
mod template;

pub use install::{Tools, install};
pub use template::write_project;

/// The languages `policy new` writes projects for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

    /// The name `--lang` takes.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }
}
