//! A 0.2 guest that keeps state across calls, to prove the host keeps an instance alive, feeds
//! it and resets it.
//!
//! It wants `select-model` only for `auto` and unknown names (so exact ids and aliases must make
//! no call), and reads a command from the request's text, `stateful:MODE [ARG]`:
//!
//! | mode          | does, then answers with its state                              |
//! |---------------|----------------------------------------------------------------|
//! | (none)        | nothing                                                        |
//! | `trap`        | panics, which traps (the host must discard the instance)      |
//! | `keep MIB`    | allocates and touches MIB MiB, and keeps them                  |
//! | `churn MIB`   | allocates and touches MIB MiB, and frees them                  |
//! | `wait MS`     | makes its LRU ask again in MS when it must wait for a load     |
//! | `wait never`  | makes it wait with `wait(none)` (its default)                 |
//! | `drain`       | makes it drain every busy unpinned model instead               |
//! | `garbage`     | makes it evict a model index no catalogue has                 |
//!
//! The state is its answer: `reject("calls=C configured=K models=M events=E disorder=D
//! last-event=KIND:MODEL kept=MIB reason=R")`: events told, how many came out of time order,
//! the last one, memory kept, and the last eviction's reason. `choose-eviction` otherwise
//! evicts least recently used first.

use modelyard_policy::v0_2::helpers::{evict_until_fits, is_evictable, last_active_ms};
use modelyard_policy::v0_2::types::{
    Catalogue, Event, EventKind, EvictionDecision, EvictionReason, EvictionRequest, Interests,
    Model, ModelState, Request, Selection, SelectionInterest, Telemetry,
};
use modelyard_policy::v0_2::{EvictionPolicy, Policy, SelectionPolicy};

#[derive(Default)]
pub struct Stateful {
    calls: u64,
    configured: u64,
    models: usize,
    events: u64,
    /// Events seen with an earlier time than the one before them.
    disorder: u64,
    last_at: u64,
    /// The last load event's model and time, and the last request's latency.
    last_event: String,
    kept: Vec<Vec<u8>>,
    next_eviction: Next,
    last_reason: &'static str,
}

#[derive(Default, Clone, Copy)]
enum Next {
    #[default]
    Lru,
    Wait(Option<u32>),
    Drain,
    Garbage,
}

const MIB: usize = 1 << 20;

/// A block of `mib` MiB, every page written so that it is really used.
fn touched(mib: usize) -> Vec<u8> {
    let block = std::hint::black_box(vec![1u8; mib * MIB]);
    assert_eq!(
        block
            .iter()
            .step_by(4096)
            .map(|b| usize::from(*b))
            .sum::<usize>(),
        mib * MIB / 4096
    );
    block
}

impl Policy for Stateful {
    fn configure(&mut self, catalogue: Catalogue) -> Interests {
        self.configured += 1;
        self.models = catalogue.models.len();
        Interests {
            selection: SelectionInterest::AUTO | SelectionInterest::UNKNOWN,
            text: true,
        }
    }

    fn observe(&mut self, events: Vec<Event>) {
        for e in events {
            self.events += 1;
            if e.at_ms < self.last_at {
                self.disorder += 1;
            }
            self.last_at = e.at_ms;
            self.last_event = match e.kind {
                EventKind::Arrived(a) => format!("arrived:{}", a.model),
                EventKind::Finished(f) => format!("finished:{}:{}", f.model, f.ok),
                EventKind::LoadStarted(m) => format!("load-started:{m}"),
                EventKind::Loaded(l) => format!("loaded:{}", l.model),
                EventKind::LoadFailed(m) => format!("load-failed:{m}"),
                EventKind::Evicted(v) => format!("evicted:{}", v.model),
            };
        }
    }
}

impl SelectionPolicy for Stateful {
    fn select_model(&mut self, req: Request, _: Vec<Model>, _: Telemetry) -> Selection {
        self.calls += 1;
        let text = req.text.unwrap_or_default();
        let mut words = text
            .split_once("stateful:")
            .map(|(_, c)| c.split_whitespace())
            .into_iter()
            .flatten();
        let mode = words.next().unwrap_or("");
        let word = words.next();
        let arg: u32 = word.and_then(|a| a.parse().ok()).unwrap_or(0);
        match mode {
            "trap" => panic!("stateful guest asked to trap"),
            "keep" => self.kept.push(touched(arg as usize)),
            "churn" => drop(touched(arg as usize)),
            "wait" => self.next_eviction = Next::Wait((word != Some("never")).then_some(arg)),
            "drain" => self.next_eviction = Next::Drain,
            "garbage" => self.next_eviction = Next::Garbage,
            _ => {}
        }
        let kept: usize = self.kept.iter().map(|b| b.len() / MIB).sum();
        Selection::Reject(format!(
            "calls={} configured={} models={} events={} disorder={} last-event={} kept={kept} \
             reason={}",
            self.calls,
            self.configured,
            self.models,
            self.events,
            self.disorder,
            self.last_event,
            self.last_reason
        ))
    }
}

impl EvictionPolicy for Stateful {
    fn choose_eviction(&mut self, req: EvictionRequest) -> EvictionDecision {
        self.last_reason = match req.reason {
            EvictionReason::Load(_) => "load",
            EvictionReason::IdleTtl => "idle-ttl",
            EvictionReason::Pressure => "pressure",
        };
        let for_load = matches!(req.reason, EvictionReason::Load(_));
        match self.next_eviction {
            Next::Drain if for_load => {
                let busy = req
                    .loaded
                    .iter()
                    .filter(|m| !m.pinned && m.state == ModelState::Ready && !is_evictable(m));
                return EvictionDecision::Drain(busy.map(|m| m.index).collect());
            }
            Next::Garbage => return EvictionDecision::Evict(vec![u32::MAX]),
            _ => {}
        }
        let mut ranked: Vec<&Model> = req.loaded.iter().collect();
        ranked.sort_by_key(|m| (last_active_ms(m), m.index));
        match (evict_until_fits(&req, ranked), self.next_eviction) {
            (EvictionDecision::Wait(_), Next::Wait(after)) if for_load => {
                EvictionDecision::Wait(after)
            }
            (decision, _) => decision,
        }
    }
}

modelyard_policy::export_v0_2!(Stateful: events, eviction, selection);
