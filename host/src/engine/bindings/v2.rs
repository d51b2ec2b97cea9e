//! Bindings to `modelyard:policy@0.2.0` (`wit/v0.2/policy.wit`), and the one place the host's
//! records become 0.2's lean ones and 0.2's answers become the host's: names become indices into
//! the policy's [`Catalogue`] on the way in, and back on the way out.

wasmtime::component::bindgen!({
    path: "../wit/v0.2",
    world: "modelyard:policy/policy",
    additional_derives: [PartialEq],
});

pub use self::exports::modelyard::policy::{compression, events, lifecycle};

/// The exported interfaces whose functions [`super::lowered`] calls.
pub const EVICTION: &str = "modelyard:policy/eviction@0.2.0";
pub const SELECTION: &str = "modelyard:policy/selection@0.2.0";
pub use self::modelyard::policy::types;

use self::modelyard::policy::host::Level;
use super::super::Catalogue;
use super::super::types as host;
use super::{GuestState, lowered};

impl self::modelyard::policy::types::Host for GuestState {}

impl self::modelyard::policy::host::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        super::log(&self.policy, level, &message);
    }

    fn count_tokens(&mut self, _model: u32, text: String) -> u32 {
        super::super::tokens::estimate(&text)
    }
}

/// The catalogue as 0.2 hands it to `configure`.
pub fn catalogue(c: &Catalogue) -> types::Catalogue {
    types::Catalogue {
        models: c
            .models()
            .iter()
            .map(|m| types::ModelInfo {
                id: m.id.clone(),
                aliases: m.aliases.clone(),
                tags: m.tags.iter().filter_map(|t| c.task(t)).collect(),
                context_tokens: m.context_tokens,
                parallel: m.parallel,
            })
            .collect(),
        devices: c.devices().to_vec(),
        tasks: c.tasks().to_vec(),
    }
}

fn unknown(id: &str) -> String {
    format!("model {id:?} is not in the catalogue")
}

/// A model's record: its index and numbers.
pub fn model(m: &host::Model, c: &Catalogue) -> Result<types::Model, String> {
    lean(m, c).map(Into::into)
}

/// A model's record as lists of them are lowered ([`lowered::Model`]).
fn lean(m: &host::Model, c: &Catalogue) -> Result<lowered::Model, String> {
    lean_on(m, c, c.device(&m.device).unwrap_or(u32::MAX))
}

/// [`lean`], its device's index already looked up.
fn lean_on(m: &host::Model, c: &Catalogue, device: u32) -> Result<lowered::Model, String> {
    Ok(lowered::Model {
        index: c.model(&m.id).ok_or_else(|| unknown(&m.id))?,
        state: state(m.state),
        device,
        size_bytes: m.size_bytes,
        size_measured: m.size_measured,
        priority: m.priority,
        pinned: m.pinned,
        last_used_ms: m.last_used_ms,
        loaded_at_ms: m.loaded_at_ms,
        use_count: m.use_count,
        load_count: m.load_count,
        in_flight: m.in_flight,
        queued: m.queued,
        errors: m.errors,
        mean_load_ms: m.mean_load_ms,
        mean_latency_ms: m.mean_latency_ms,
    })
}

/// Models' records (the selection candidates, the loaded models).
///
/// Made for every model of every call: the list is sized once, and a device is looked up once
/// for the run of models on it (a list is mostly one or two devices).
pub fn models(ms: &[host::Model], c: &Catalogue) -> Result<Vec<lowered::Model>, String> {
    let mut out = Vec::with_capacity(ms.len());
    let mut device: Option<(&str, u32)> = None;
    for m in ms {
        let d = match device {
            Some((name, d)) if name == m.device => d,
            _ => {
                let d = c.device(&m.device).unwrap_or(u32::MAX);
                device = Some((&m.device, d));
                d
            }
        };
        out.push(lean_on(m, c, d)?);
    }
    Ok(out)
}

fn state(s: host::ModelState) -> types::ModelState {
    match s {
        host::ModelState::Unloaded => types::ModelState::Unloaded,
        host::ModelState::Loading => types::ModelState::Loading,
        host::ModelState::Ready => types::ModelState::Ready,
        host::ModelState::Unloading => types::ModelState::Unloading,
        host::ModelState::Failed => types::ModelState::Failed,
    }
}

/// Every catalogue device, in its order (one telemetry does not list reads as empty).
pub fn telemetry(t: &host::Telemetry, c: &Catalogue) -> types::Telemetry {
    types::Telemetry {
        now_ms: t.now_ms,
        devices: c
            .devices()
            .iter()
            .map(|name| match t.devices.iter().find(|d| &d.name == name) {
                Some(d) => types::Device {
                    total_bytes: d.total_bytes,
                    free_bytes: d.free_bytes,
                    utilization_percent: d.utilization_percent,
                },
                None => types::Device {
                    total_bytes: 0,
                    free_bytes: 0,
                    utilization_percent: None,
                },
            })
            .collect(),
        cpu_percent: t.cpu_percent,
    }
}

pub fn eviction_request(
    req: &host::EvictionRequest,
    c: &Catalogue,
) -> Result<lowered::EvictionRequest, String> {
    let reason = match req.reason {
        host::EvictionReason::Load => types::EvictionReason::Load(model(&req.incoming, c)?),
        host::EvictionReason::IdleTtl => types::EvictionReason::IdleTtl,
        host::EvictionReason::Pressure => types::EvictionReason::Pressure,
    };
    let mut demand = vec![0u32; c.tasks().len()];
    for d in &req.demand {
        if let Some(i) = c.task(&d.task) {
            demand[i as usize] = d.requests;
        }
    }
    Ok(lowered::EvictionRequest {
        reason,
        needed_bytes: req.needed_bytes,
        device: c.device(&req.device).unwrap_or(u32::MAX),
        priority: req.priority,
        loaded: models(&req.loaded, c)?,
        demand,
        telemetry: telemetry(&req.telemetry, c),
    })
}

fn id(i: u32, c: &Catalogue) -> Result<String, String> {
    c.info(i).map(|m| m.id.clone()).ok_or_else(|| {
        format!(
            "names model index {i}; the catalogue has {}",
            c.models().len()
        )
    })
}

fn ids(is: &[u32], c: &Catalogue) -> Result<Vec<String>, String> {
    is.iter().map(|&i| id(i, c)).collect()
}

/// A 0.2 decision in the host's terms; an index outside the catalogue makes it invalid.
pub fn eviction_decision(
    d: types::EvictionDecision,
    c: &Catalogue,
) -> Result<host::EvictionDecision, String> {
    Ok(match d {
        types::EvictionDecision::Evict(is) => host::EvictionDecision::Evict(ids(&is, c)?),
        types::EvictionDecision::Drain(is) => host::EvictionDecision::Drain(ids(&is, c)?),
        types::EvictionDecision::Wait(after) => host::EvictionDecision::Wait(
            after.map(|ms| std::time::Duration::from_millis(ms.into())),
        ),
        types::EvictionDecision::Reject(why) => host::EvictionDecision::Reject(why),
    })
}

/// What a request naming `name` (its `model`) asked for, by index.
pub fn asked(name: &str, c: &Catalogue) -> types::Asked {
    if let Some(i) = c.model(name) {
        types::Asked::Model(i)
    } else if let Some(i) = c.alias(name) {
        types::Asked::Alias(i)
    } else if name == "auto" {
        types::Asked::Auto
    } else {
        types::Asked::Unknown(name.to_string())
    }
}

/// The interest flag a request falls under.
pub fn interest(asked: &types::Asked) -> types::SelectionInterest {
    match asked {
        types::Asked::Model(_) => types::SelectionInterest::MODEL,
        types::Asked::Alias(_) => types::SelectionInterest::ALIAS,
        types::Asked::Auto => types::SelectionInterest::AUTO,
        types::Asked::Unknown(_) => types::SelectionInterest::UNKNOWN,
    }
}

/// The request record; its text only when the policy wants it.
pub fn request(
    req: &host::Request,
    asked: types::Asked,
    c: &Catalogue,
    text: bool,
) -> types::Request {
    types::Request {
        asked,
        task: req
            .task
            .as_deref()
            .map(|t| c.task(t).map_or(types::Task::Other, types::Task::Tag)),
        priority: req.priority,
        client: req
            .client
            .as_deref()
            .and_then(|h| u64::from_str_radix(h, 16).ok()),
        prompt_tokens: req.prompt_tokens,
        max_tokens: req.max_tokens,
        text: text.then(|| req.last_user_message.clone()),
    }
}

pub fn selection(s: types::Selection, c: &Catalogue) -> Result<host::Selection, String> {
    Ok(match s {
        types::Selection::Model(i) => host::Selection::Model(id(i, c)?),
        types::Selection::Reject(why) => host::Selection::Reject(why),
    })
}

pub fn compression_request(
    req: &host::CompressionRequest,
    c: &Catalogue,
) -> Result<types::CompressionRequest, String> {
    Ok(types::CompressionRequest {
        messages: req.messages.iter().map(message).collect(),
        budget_tokens: req.budget_tokens,
        model: model(&req.model, c)?,
    })
}

fn message(m: &host::Message) -> types::Message {
    types::Message {
        role: m.role.clone(),
        content: m.content.clone(),
        tokens: m.tokens,
    }
}

pub fn messages(ms: Vec<types::Message>) -> Vec<host::Message> {
    ms.into_iter()
        .map(|m| host::Message {
            role: m.role,
            content: m.content,
            tokens: m.tokens,
        })
        .collect()
}

/// An event as 0.2 tells `policy`; `None` when it names a model the catalogue lacks.
pub fn event(e: &host::Event, c: &Catalogue, policy: &str) -> Option<types::Event> {
    use host::EventKind as K;
    let index = |id: &str| c.model(id);
    let kind = match &e.kind {
        K::Arrived {
            model,
            task,
            priority,
            prompt_tokens,
        } => types::EventKind::Arrived(types::Arrival {
            model: index(model)?,
            task: task.as_deref().and_then(|t| c.task(t)),
            priority: *priority,
            prompt_tokens: *prompt_tokens,
        }),
        K::Finished {
            model,
            latency_ms,
            ttft_ms,
            ok,
        } => types::EventKind::Finished(types::Finish {
            model: index(model)?,
            latency_ms: *latency_ms,
            ttft_ms: *ttft_ms,
            ok: *ok,
        }),
        K::LoadStarted { model } => types::EventKind::LoadStarted(index(model)?),
        K::Loaded {
            model,
            took_ms,
            bytes,
        } => types::EventKind::Loaded(types::Load {
            model: index(model)?,
            took_ms: *took_ms,
            bytes: *bytes,
        }),
        K::LoadFailed { model } => types::EventKind::LoadFailed(index(model)?),
        K::Evicted { model, by, cause } => types::EventKind::Evicted(types::Eviction {
            model: index(model)?,
            by: match by {
                host::EvictedBy::Policy(name) if name == policy => types::Decider::ThisPolicy,
                host::EvictedBy::Policy(_) => types::Decider::OtherPolicy,
                host::EvictedBy::Fallback => types::Decider::Fallback,
                host::EvictedBy::Host => types::Decider::Host,
            },
            cause: match cause {
                host::EvictionCause::Load(id) => types::EvictionCause::Load(index(id)?),
                host::EvictionCause::IdleTtl => types::EvictionCause::IdleTtl,
                host::EvictionCause::Pressure => types::EvictionCause::Pressure,
                host::EvictionCause::Requested => types::EvictionCause::Requested,
                host::EvictionCause::Crashed => types::EvictionCause::Crashed,
            },
        }),
    };
    Some(types::Event {
        at_ms: e.at_ms,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ModelInfo, sample};

    fn info(id: &str) -> ModelInfo {
        ModelInfo {
            id: id.into(),
            aliases: vec![],
            tags: vec![],
            context_tokens: 8192,
            parallel: 1,
        }
    }

    #[test]
    fn a_list_of_models_names_each_ones_own_device_as_the_devices_alternate() {
        let c = Catalogue::new(
            vec![info("a"), info("b"), info("c"), info("d")],
            vec!["cpu".into(), "cuda:0".into()],
        );
        let on = |id: &str, device: &str| host::Model {
            device: device.into(),
            ..sample::model(id, 1, &[])
        };
        let list = [
            on("c", "cuda:0"),
            on("a", "cpu"),
            on("b", "cpu"),
            on("d", "cuda:0"),
            on("a", "gone"),
        ];
        let lean = models(&list, &c).expect("all in the catalogue");
        let got: Vec<(u32, u32)> = lean.iter().map(|m| (m.index, m.device)).collect();
        assert_eq!(got, [(2, 1), (0, 0), (1, 0), (3, 1), (0, u32::MAX)]);
        // One by one, the same.
        for (m, l) in list.iter().zip(&lean) {
            assert_eq!(lean_one(m, &c), (l.index, l.device));
        }
        let err = models(&[on("a", "cpu"), on("zz", "cpu")], &c).expect_err("zz is unknown");
        assert!(err.contains("\"zz\""), "{err}");
    }

    fn lean_one(m: &host::Model, c: &Catalogue) -> (u32, u32) {
        let l = lean(m, c).expect("in the catalogue");
        (l.index, l.device)
    }
}
