//! A guest that misbehaves on command, to prove the host contains it.
//!
//! The command is read from the input: the incoming model's id (`choose-eviction`), the
//! requested model (`select-model`) or the newest message (`compress-context`). A value of the
//! form `evil:MODE` selects the mode; anything else behaves like a correct LRU policy.
//!
//! | mode      | does                                                     |
//! |-----------|----------------------------------------------------------|
//! | `loop`    | spins forever (the deadline must stop it)               |
//! | `oom`     | grows memory without bound (the memory cap must stop it) |
//! | `trap`    | panics, which traps                                      |
//! | `garbage` | answers with a model id that does not exist              |
//! | `pinned`  | evicts a pinned model                                    |
//! | `busy`    | evicts a model with requests in flight                   |
//! | `short`   | evicts too little                                        |
//! | `bloat`   | returns messages over the budget                         |
//! | `alloc`   | touches 16 MiB of memory, then answers correctly          |
//! | `work`    | spins a bounded 30 M iterations, then answers correctly   |
//! | `empty`   | returns no messages                                      |

use modelyard_policy::helpers::{
    evict_until_fits, keep_newest_that_fit, last_active_ms, named_model,
};
use modelyard_policy::types::{
    CompressionRequest, EvictionDecision, EvictionRequest, Message, Model, Request, Selection,
    Telemetry,
};
use modelyard_policy::{CompressionPolicy, EvictionPolicy, SelectionPolicy};

pub struct Evil;

/// Memory the `alloc` mode touches.
const ALLOC_BYTES: usize = 16 << 20;
/// Iterations the `work` mode spins.
const WORK_ITERATIONS: u64 = 30_000_000;

fn mode(text: &str) -> Option<&str> {
    text.split_once("evil:")
        .map(|(_, m)| m.split_whitespace().next().unwrap_or(""))
}

/// Misbehaves in the ways every hook shares; returns for the hook-specific modes.
fn misbehave(mode: &str) {
    match mode {
        "loop" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            // Reserve without touching: the cap must stop the growth, not the deadline.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(Vec::with_capacity(1 << 20)));
            }
        }
        "trap" => panic!("evil guest asked to trap"),
        "alloc" => {
            let block = std::hint::black_box(vec![1u8; ALLOC_BYTES]);
            assert_eq!(
                block.iter().map(|b| usize::from(*b)).sum::<usize>(),
                ALLOC_BYTES
            );
        }
        "work" => {
            let mut n = 0u64;
            for i in 0..WORK_ITERATIONS {
                n = std::hint::black_box(n ^ i);
            }
            std::hint::black_box(n);
        }
        _ => {}
    }
}

fn first_id(loaded: &[Model], pred: impl Fn(&Model) -> bool) -> Vec<String> {
    loaded
        .iter()
        .filter(|m| pred(m))
        .map(|m| m.id.clone())
        .take(1)
        .collect()
}

impl EvictionPolicy for Evil {
    fn choose_eviction(req: EvictionRequest) -> EvictionDecision {
        let mode = mode(&req.incoming.id).unwrap_or("");
        misbehave(mode);
        match mode {
            "garbage" => EvictionDecision::Evict(vec!["no-such-model".into()]),
            "pinned" => EvictionDecision::Evict(first_id(&req.loaded, |m| m.pinned)),
            "busy" => EvictionDecision::Evict(first_id(&req.loaded, |m| m.in_flight > 0)),
            "short" => EvictionDecision::Evict(vec![]),
            _ => {
                let mut ranked: Vec<&Model> = req.loaded.iter().collect();
                ranked.sort_by_key(|m| last_active_ms(m));
                evict_until_fits(&req, ranked)
            }
        }
    }
}

impl SelectionPolicy for Evil {
    fn select_model(req: Request, candidates: Vec<Model>, _telemetry: Telemetry) -> Selection {
        let mode = mode(&req.model).unwrap_or("");
        misbehave(mode);
        if mode == "garbage" {
            return Selection::Model("no-such-model".into());
        }
        match named_model(&req, &candidates).or(candidates.first()) {
            Some(m) => Selection::Model(m.id.clone()),
            None => Selection::Reject("no model is configured".into()),
        }
    }
}

impl CompressionPolicy for Evil {
    fn compress_context(req: CompressionRequest) -> Result<Vec<Message>, String> {
        let newest = req
            .messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let mode = mode(newest).unwrap_or("");
        misbehave(mode);
        match mode {
            "empty" => Ok(vec![]),
            "bloat" => Ok(req.messages),
            "garbage" => Ok(vec![Message {
                role: "wizard".into(),
                content: "hi".into(),
                tokens: 1,
            }]),
            _ => keep_newest_that_fit(&req),
        }
    }
}

modelyard_policy::export!(Evil: eviction, selection, compression);
