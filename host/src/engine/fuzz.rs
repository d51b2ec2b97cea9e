//! Fuzz entry points for the decision validators and component loading (see
//! [`crate::fuzzing`]). Each takes arbitrary bytes; none may panic, and a decision the
//! validator accepts must keep the rules it promises.

use std::sync::OnceLock;

use super::hooks::{compression, eviction, selection};
use super::types::{EvictionDecision, EvictionReason, ModelState, Selection};
use super::{EngineSettings, PolicyEngine, PolicySource, sample};

/// Reads numbers off the input, zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |n, _| (n << 8) | u64::from(self.u8()))
    }
}

const STATES: [ModelState; 5] = [
    ModelState::Unloaded,
    ModelState::Loading,
    ModelState::Ready,
    ModelState::Unloading,
    ModelState::Failed,
];

/// An arbitrary eviction question and answer (and a selection and a compression) through the
/// validators; an eviction they accept names distinct, loaded, ready, unpinned models, idle
/// unless drained for a load, that free what is needed.
pub fn decision(data: &[u8]) {
    let mut b = Bytes(data);
    let mut req = sample::eviction_request(usize::from(b.u8() % 6));
    req.reason = match b.u8() % 3 {
        0 => EvictionReason::Load,
        1 => EvictionReason::IdleTtl,
        _ => EvictionReason::Pressure,
    };
    req.record.needed_bytes = b.u64() >> (b.u8() % 64);
    for m in &mut req.record.loaded {
        m.pinned = b.u8() % 4 == 0;
        m.in_flight = u32::from(b.u8() % 3);
        m.state = STATES[usize::from(b.u8()) % STATES.len()];
        m.size_bytes = b.u64() >> (b.u8() % 64);
    }
    let pool: Vec<String> = (req.loaded.iter().map(|m| m.id.clone()))
        .chain(["ghost".to_string(), String::new(), "incoming".to_string()])
        .collect();
    let ids: Vec<String> = (0..b.u8() % 6)
        .map(|_| pool[usize::from(b.u8()) % pool.len()].clone())
        .collect();
    let answer = match b.u8() % 4 {
        0 => EvictionDecision::Evict(ids),
        1 => EvictionDecision::Drain(ids),
        2 => EvictionDecision::Wait(None),
        _ => EvictionDecision::Reject("no".into()),
    };
    if let Ok(d @ (EvictionDecision::Evict(_) | EvictionDecision::Drain(_))) =
        eviction::validate(&req, answer)
    {
        let (EvictionDecision::Evict(named) | EvictionDecision::Drain(named)) = &d else {
            unreachable!("matched above")
        };
        let drain = matches!(d, EvictionDecision::Drain(_));
        let mut freed = 0u64;
        for (i, id) in named.iter().enumerate() {
            assert!(!named[..i].contains(id), "{id} named twice: {d:?}");
            let m = (req.loaded.iter().find(|m| &m.id == id))
                .unwrap_or_else(|| panic!("{id} is not loaded: {d:?}"));
            assert!(!m.pinned && m.state == ModelState::Ready, "{m:?} in {d:?}");
            assert!(drain || m.in_flight == 0, "busy {id} evicted: {d:?}");
            freed = freed.saturating_add(m.size_bytes);
        }
        if drain {
            assert_eq!(req.reason, EvictionReason::Load, "a drain without a load");
            freed = (req.loaded.iter())
                .filter(|m| {
                    !m.pinned
                        && m.in_flight == 0
                        && m.state == ModelState::Ready
                        && !named.contains(&m.id)
                })
                .fold(freed, |sum, m| sum.saturating_add(m.size_bytes));
        }
        assert!(
            freed >= req.needed_bytes,
            "{freed} < {}: {d:?}",
            req.needed_bytes
        );
    }
    let chosen = pool[usize::from(b.u8()) % pool.len()].clone();
    if let Ok(Selection::Model(id)) = selection::validate(&req.loaded, Selection::Model(chosen)) {
        assert!(req.loaded.iter().any(|m| m.id == id), "selected {id}");
    }
    let creq = sample::compression_request(usize::from(b.u8() % 8), u32::from(b.u8()) * 8);
    let roles = ["system", "user", "assistant", "tool", "", "admin"];
    let messages = (0..b.u8() % 5)
        .map(|i| {
            let role = roles[usize::from(b.u8()) % roles.len()];
            let text = "x".repeat(usize::from(b.u8()) * usize::from(i + 1));
            sample::message(role, &text)
        })
        .collect();
    if let Ok(kept) = compression::validate(&creq, messages) {
        let total: u64 = kept.iter().map(|m| u64::from(m.tokens)).sum();
        assert!(
            total <= u64::from(creq.budget_tokens),
            "{total} tokens kept"
        );
    }
}

/// Arbitrary bytes loaded as a policy component: refused with an error, never a panic.
pub fn component(data: &[u8]) {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    let engine = ENGINE
        .get_or_init(|| PolicyEngine::new(EngineSettings::default()).expect("a policy engine"));
    let _ = engine.load("fuzz", PolicySource::File("fuzz.wasm".into()), data);
}
