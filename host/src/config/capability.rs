//! What a model serves (`capabilities`) and which front-door APIs its server lacks and the host
//! translates (`translate`), with their defaults from the model's command line.

use std::fmt;

/// An endpoint family a model can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Chat completions, and the APIs built on them (Responses, Messages, Ollama's chat).
    Chat,
    /// Bare-prompt completions (and Ollama's raw generate).
    Completions,
    Embeddings,
    Rerank,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::Chat,
        Capability::Completions,
        Capability::Embeddings,
        Capability::Rerank,
    ];

    /// Its name in the config, in errors and in `/v1/models`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Chat => "chat",
            Capability::Completions => "completions",
            Capability::Embeddings => "embeddings",
            Capability::Rerank => "rerank",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(u8);

impl Capabilities {
    pub fn of(caps: impl IntoIterator<Item = Capability>) -> Self {
        Self(caps.into_iter().fold(0, |bits, c| bits | c.bit()))
    }

    pub fn has(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.has(*c))
    }

    /// What a started server serves, read from its command line: llama-server always serves
    /// chat and completions; `--embedding(s)` adds embeddings, `--rerank(ing)` rerank.
    pub fn from_command(argv: &[String]) -> Self {
        let flag = |names: &[&str]| argv.iter().any(|a| names.contains(&a.as_str()));
        let mut caps = vec![Capability::Chat, Capability::Completions];
        if flag(&["--embedding", "--embeddings"]) {
            caps.push(Capability::Embeddings);
        }
        if flag(&["--rerank", "--reranking"]) {
            caps.push(Capability::Rerank);
        }
        Self::of(caps)
    }

    /// What a server that already runs is assumed to serve: what the OpenAI API has (chat,
    /// completions, embeddings); rerank only when the config says so.
    pub fn openai_default() -> Self {
        Self::of([
            Capability::Chat,
            Capability::Completions,
            Capability::Embeddings,
        ])
    }
}

/// A front-door API that a model's server may serve itself or the host translates to chat
/// completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// OpenAI's Responses API, `/v1/responses`.
    Responses,
    /// Anthropic's Messages API, `/v1/messages` (and `/v1/messages/count_tokens`).
    Messages,
}

impl Api {
    pub const ALL: [Api; 2] = [Api::Responses, Api::Messages];

    pub fn name(self) -> &'static str {
        match self {
            Api::Responses => "responses",
            Api::Messages => "messages",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &str) -> Vec<String> {
        cmd.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn capabilities_follow_llama_servers_flags() {
        let chat = Capabilities::from_command(&argv("llama-server -m x --port ${PORT}"));
        assert_eq!(
            chat.iter().collect::<Vec<_>>(),
            [Capability::Chat, Capability::Completions]
        );
        let embed = Capabilities::from_command(&argv("llama-server --embeddings --pooling mean"));
        assert!(embed.has(Capability::Embeddings) && embed.has(Capability::Chat));
        assert!(!embed.has(Capability::Rerank));
        let rerank = Capabilities::from_command(&argv("llama-server --reranking"));
        assert!(rerank.has(Capability::Rerank) && !rerank.has(Capability::Embeddings));
        // A value that merely contains the word is not the flag.
        let named = Capabilities::from_command(&argv("llama-server --alias my-embeddings"));
        assert!(!named.has(Capability::Embeddings));
    }

    #[test]
    fn names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(Capability::parse(c.name()), Some(c));
        }
        for a in Api::ALL {
            assert_eq!(Api::parse(a.name()), Some(a));
        }
        assert_eq!(Capability::parse("vision"), None);
    }
}
