//! Reads an OpenAI-style event stream (`data: {json}` lines, `data: [DONE]` at the end) from
//! chunks split anywhere, and writes events of the two shapes the host answers in: SSE with
//! event names, and newline-delimited JSON.

use serde_json::Value;

/// The longest line kept while waiting for its end; a server that sends more without a newline
/// is broken, and the rest of that line is dropped.
const MAX_LINE: usize = 8 << 20;

/// Collects `data:` payloads from a stream cut at arbitrary bytes.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
    overlong: bool,
}

impl Lines {
    /// The JSON payloads completed by `bytes`; `[DONE]` and other lines are left out.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let ends = piece.last() == Some(&b'\n');
            if !self.overlong {
                self.partial.extend_from_slice(piece);
                if self.partial.len() > MAX_LINE {
                    self.partial.clear();
                    self.overlong = true;
                }
            }
            if ends {
                if !self.overlong
                    && let Some(v) = payload(&self.partial)
                {
                    out.push(v);
                }
                self.partial.clear();
                self.overlong = false;
            }
        }
        out
    }

    /// A last line without its newline.
    pub fn finish(&mut self) -> Option<Value> {
        let line = std::mem::take(&mut self.partial);
        (!self.overlong).then(|| payload(&line)).flatten()
    }
}

fn payload(line: &[u8]) -> Option<Value> {
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let data = line.strip_prefix("data:")?.trim_start();
    serde_json::from_str(data).ok()
}

/// One server-sent event with its name, as Anthropic's and the Responses API's streams have.
pub fn event(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

/// One line of newline-delimited JSON, as Ollama streams.
pub fn ndjson(data: &Value) -> Vec<u8> {
    let mut line = data.to_string().into_bytes();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_survive_every_split() {
        let stream = b"data: {\"a\":1}\n\n: a comment\ndata: {\"b\":\"x\\ny\"}\n\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut lines = Lines::default();
            let mut got = lines.push(&stream[..cut]);
            got.extend(lines.push(&stream[cut..]));
            got.extend(lines.finish());
            assert_eq!(got, [json!({"a": 1}), json!({"b": "x\ny"})], "cut at {cut}");
        }
    }

    #[test]
    fn an_overlong_line_is_dropped_and_the_next_read() {
        let mut lines = Lines::default();
        let huge = vec![b'x'; MAX_LINE + 10];
        assert!(lines.push(b"data: ").is_empty());
        assert!(lines.push(&huge).is_empty());
        assert_eq!(
            lines.push(b"\ndata: {\"ok\":true}\n"),
            [json!({"ok": true})]
        );
    }

    #[test]
    fn a_last_line_without_newline_is_read() {
        let mut lines = Lines::default();
        assert!(lines.push(b"data: {\"z\":0}").is_empty());
        assert_eq!(lines.finish(), Some(json!({"z": 0})));
    }
}
