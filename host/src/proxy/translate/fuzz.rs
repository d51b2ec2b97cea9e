//! Fuzz entry points for the front doors' request rewrite and the relay's stream framing
//! (see [`crate::fuzzing`]). Each takes arbitrary bytes; none may panic.

use tokio::time::Instant;

use serde_json::{Value, json};

use super::{Front, Translation, ollama, sse};

/// Every front the host translates.
const FRONTS: [Front; 6] = [
    Front::Responses,
    Front::Messages,
    Front::OllamaChat,
    Front::OllamaGenerate,
    Front::OllamaEmbed,
    Front::OllamaEmbeddings,
];

/// A chat-completions stream as llama-server sends it, for the translators a request makes.
const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
data: [DONE]\n\n";

/// A client's body (as JSON, when it is) through each front's checks and rewrite, and the
/// rewritten request's answer translated back.
pub fn request(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = super::super::parse::last_user_message(&body);
    let _ = ollama::keep_alive(&body);
    for front in FRONTS {
        let mut b = body.clone();
        if let Ok(t) = Translation::new(front, &mut b, "m".into(), Instant::now()) {
            let mut tr = t.translator(None);
            let _ = tr.push(STREAM);
            let _ = tr.end();
        }
    }
}

/// A server's event stream cut at the places the first bytes of `data` pick, and byte by
/// byte: the payloads read must not depend on where it was cut (a panic says where they
/// did); each front's translator takes it in two pieces.
pub fn stream(data: &[u8]) {
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let read = |pieces: &[&[u8]]| {
        let mut lines = sse::Lines::default();
        let mut out: Vec<Value> = pieces.iter().flat_map(|p| lines.push(p)).collect();
        out.extend(lines.finish());
        out
    };
    let whole = read(&[stream]);
    let cut = if stream.is_empty() {
        0
    } else {
        usize::from(pick) % (stream.len() + 1)
    };
    let (a, b) = stream.split_at(cut);
    assert_eq!(
        read(&[a, b]),
        whole,
        "the stream cut at byte {cut} reads otherwise"
    );
    if stream.len() <= 4096 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            read(&bytes),
            whole,
            "the stream byte by byte reads otherwise"
        );
    }
    for front in FRONTS {
        let mut body = json!({
            "model": "m", "stream": true, "input": "hi", "prompt": "hi", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}],
        });
        if let Ok(t) = Translation::new(front, &mut body, "m".into(), Instant::now()) {
            let mut tr = t.translator(None);
            let _ = tr.push(a);
            let _ = tr.push(b);
            let _ = tr.end();
        }
    }
}
