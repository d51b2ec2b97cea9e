//! `modelyard key hash`: the SHA-256 of a key, for `key_sha256` / `admin_key_sha256`, so that a
//! config need not hold the key itself. The key is read from standard input (a line; nothing
//! lands in the shell's history) unless given as an argument.

use std::io::BufRead as _;

use anyhow::Context as _;

use crate::config::Sha256Digest;

/// Prints the digest of `key`, or of the first line of standard input.
pub fn hash(key: Option<&str>) -> anyhow::Result<()> {
    let key = match key {
        Some(k) => k.to_string(),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the key from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if key.trim().is_empty() {
        anyhow::bail!("the key is empty");
    }
    println!("{}", Sha256Digest::of(&key).hex());
    Ok(())
}
