//! What the recorder writes of an exchange: its names, counts, times and outcome, taken from
//! the stages' fields, never from the body. A request that fails is recorded when its error
//! goes out; an answer, by the relay when its stream ends ([`Answer`]).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tokio::time::Instant;

use super::exchange::Exchange;
use super::{ApiError, AppState};
use crate::recorder::{Outcome, Record, Recorder};

/// The record of `ex` as far as it went, ending now with `status` and `outcome`.
fn record(ex: &Exchange, status: u16, outcome: Outcome) -> Record {
    let mut r = Record {
        t_ms: ex
            .arrived
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        id: ex.id.clone(),
        route: ex.route.name().to_string(),
        asked: ex.asked.clone(),
        model: ex.model.clone(),
        task: ex.task.clone(),
        priority: ex.priority,
        client: ex.client.clone(),
        prompt_tokens: match ex.fitted.prompt_tokens {
            0 => ex.estimated_tokens,
            n => n,
        },
        output_tokens: None,
        hit: ex.leased.map(|(_, hit)| hit),
        wait_ms: ex.leased.map(|(at, _)| millis(at - ex.began)),
        ttft_ms: None,
        latency_ms: millis(ex.began.elapsed()),
        service_ms: None,
        status,
        outcome,
        stage: ex.stage,
    };
    r.service_ms = held(&r);
    r
}

/// How long `r`'s model was held for it: from the lease (at `wait_ms`) to its end.
fn held(r: &Record) -> Option<u64> {
    r.wait_ms.map(|w| r.latency_ms.saturating_sub(w))
}

/// Records a request that failed with `err` before any answer went out.
pub fn failed(app: &AppState, ex: &Exchange, err: &ApiError) {
    if let Some(rec) = &app.recorder {
        rec.record(&record(ex, err.status.as_u16(), err.outcome));
    }
}

/// An answer being relayed, recorded by [`Answer::finish`] when its stream ends or is
/// dropped (the relay keeps the times).
#[derive(Debug)]
pub struct Answer {
    recorder: Arc<Recorder>,
    record: Record,
    usage: Usage,
    /// The server broke off the answer.
    broken: bool,
}

impl Answer {
    /// Starts the record of `ex`'s answer, which came with `status`; `None` when the host
    /// records nothing.
    pub fn start(app: &AppState, ex: &Exchange, status: u16) -> Option<Self> {
        Some(Self {
            recorder: app.recorder.clone()?,
            record: record(ex, status, Outcome::Ok),
            usage: Usage::default(),
            broken: false,
        })
    }

    /// A chunk of the answer went out (`None`: the server broke off).
    pub fn chunk(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => self.usage.scan(b),
            None => self.broken = true,
        }
    }

    /// Writes the record of an answer relayed from `began` (the request's arrival): its
    /// first chunk went out at `first_chunk`, and its stream ran to its end if `ended` (else
    /// the client went away).
    pub fn finish(mut self, began: Instant, first_chunk: Option<Instant>, ended: bool) {
        let r = &mut self.record;
        r.ttft_ms = first_chunk.map(|t| millis(t - began));
        r.latency_ms = millis(began.elapsed());
        r.service_ms = held(r);
        r.output_tokens = self.usage.output_tokens();
        if let Some(p) = self.usage.prompt_tokens() {
            r.prompt_tokens = p;
        }
        r.outcome = if r.status >= 500 || self.broken {
            Outcome::Error
        } else if r.status >= 400 {
            Outcome::Rejected
        } else if !ended {
            Outcome::Cancelled
        } else {
            Outcome::Ok
        };
        self.recorder.record(r);
    }
}

/// The token counts of the answer's `usage`, found in the bytes as they pass (the last one
/// seen wins: a stream's final chunk carries the totals), or where a stream has no `usage`
/// (the client did not ask for `stream_options.include_usage`), llama-server's `timings`.
/// The tail of each chunk is kept, so a number split between two chunks is read whole.
#[derive(Debug, Default)]
struct Usage {
    carry: Vec<u8>,
    completion: Option<u32>,
    prompt: Option<u32>,
    predicted: Option<u32>,
    prompt_n: Option<u32>,
}

const COMPLETION: &[u8] = b"\"completion_tokens\":";
const PROMPT: &[u8] = b"\"prompt_tokens\":";
const PREDICTED_N: &[u8] = b"\"predicted_n\":";
const PROMPT_N: &[u8] = b"\"prompt_n\":";
/// Enough for a key, a space and ten digits.
const CARRY: usize = 40;

impl Usage {
    fn output_tokens(&self) -> Option<u32> {
        self.completion.or(self.predicted)
    }

    fn prompt_tokens(&self) -> Option<u32> {
        self.prompt.or(self.prompt_n)
    }

    fn scan(&mut self, chunk: &[u8]) {
        self.carry.extend_from_slice(chunk);
        let text = &self.carry[..];
        if let Some(n) = last_number(text, COMPLETION) {
            self.completion = Some(n);
        }
        if let Some(n) = last_number(text, PROMPT) {
            self.prompt = Some(n);
        }
        if let Some(n) = last_number(text, PREDICTED_N) {
            self.predicted = Some(n);
        }
        if let Some(n) = last_number(text, PROMPT_N) {
            self.prompt_n = Some(n);
        }
        let keep = self.carry.len().saturating_sub(CARRY);
        self.carry.drain(..keep);
    }
}

/// The number after the last `key` in `text`, if digits follow it.
fn last_number(text: &[u8], key: &[u8]) -> Option<u32> {
    let at = text.windows(key.len()).rposition(|w| w == key)? + key.len();
    let rest = &text[at..];
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_across_chunks_and_the_last_wins() {
        let mut u = Usage::default();
        u.scan(br#"data: {"usage":{"completion_tokens":1,"prompt_tokens": 7"#);
        assert_eq!((u.completion, u.prompt), (Some(1), Some(7)));
        u.scan(b"2}}\n\ndata: {\"usage\":{\"completion_to");
        assert_eq!(u.prompt, Some(72), "the number split across chunks");
        u.scan(br#"kens":30}}"#);
        assert_eq!(u.completion, Some(30), "the key split across chunks");
        assert!(u.carry.len() <= CARRY);
    }

    #[test]
    fn without_usage_llama_server_timings_count() {
        let mut u = Usage::default();
        u.scan(br#"data: {"choices":[],"timings":{"prompt_n":14,"predicted_n":6}}"#);
        assert_eq!((u.output_tokens(), u.prompt_tokens()), (Some(6), Some(14)));
        u.scan(br#"data: {"usage":{"completion_tokens":5,"prompt_tokens":13}}"#);
        assert_eq!(
            (u.output_tokens(), u.prompt_tokens()),
            (Some(5), Some(13)),
            "usage first"
        );
    }

    #[test]
    fn content_that_is_not_usage_is_not_counted() {
        let mut u = Usage::default();
        u.scan(br#"{"choices":[{"message":{"content":"completion_tokens: 9"}}]}"#);
        assert_eq!((u.completion, u.prompt), (None, None));
    }
}
