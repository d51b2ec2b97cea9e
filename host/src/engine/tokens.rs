//! The host's local token estimate, used where no tokenizer answer is at hand.
//!
//! English text averages about four bytes per token on the tokenizers of today's small models;
//! rounding up keeps the estimate on the safe side of a context window.

/// Bytes per token assumed by [`estimate`].
pub const BYTES_PER_TOKEN: usize = 4;

/// Tokens a chat message costs beyond its content (role markers, separators).
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// Estimated tokens in `text`.
pub fn estimate(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(BYTES_PER_TOKEN)).unwrap_or(u32::MAX)
}

/// Tokens `text` can take at most on any tokenizer the host meets: one per byte (byte-level
/// and byte-fallback vocabularies never need more) and one for a leading word marker. The
/// count to use when no tokenizer answers and the count must never fall short.
pub fn upper_bound(text: &str) -> u32 {
    u32::try_from(text.len() + 1).unwrap_or(u32::MAX)
}

/// Estimated tokens of a chat message with this content.
pub fn estimate_message(content: &str) -> u32 {
    estimate(content).saturating_add(MESSAGE_OVERHEAD_TOKENS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_rounds_up() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("abc"), 1);
        assert_eq!(estimate("abcd"), 1);
        assert_eq!(estimate("abcde"), 2);
        assert_eq!(estimate_message("abcd"), 1 + MESSAGE_OVERHEAD_TOKENS);
    }
}
