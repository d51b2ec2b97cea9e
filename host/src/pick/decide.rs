//! One request's decision: which hosts, in order, may serve it.
//!
//! The candidates are the (model, host) pairs of the hosts that are up (and in the request's
//! subset, when Envoy sends one), in the order the read ranked them ([`super::fleet::rank`]):
//! the model ready with a free slot, ready, loading, fitting its host's free memory, then the
//! rest; within a class, the shorter queue and the emptier KV cache first. `select-model` is
//! asked over those pairs in that order (a named model is asked as the pair ranked first,
//! `MODEL@HOST`; `auto` as is), so the native default and a policy that takes the first match
//! follow the ranking, and a policy that knows better (tasks, priorities, its own history)
//! names another pair. The chosen pair's host heads
//! the answer; the other hosts with the same model follow as fallbacks, ranked.

use std::borrow::Cow;
use std::net::SocketAddrV4;

use super::fleet::{Pair, Snapshot};
use super::hosts::{HostView, Seen};
use crate::engine::types::{Model, Request, Selection};
use crate::engine::{DecidedBy, Hooks};

/// A host is saturated past this many waiting requests (the EPP's saturation detector's
/// default queue depth threshold).
pub const DEFAULT_SHED_WAITING: f64 = 5.0;
/// A host is saturated past this KV-cache use (the EPP's default, 0 to 1).
pub const DEFAULT_SHED_KV: f64 = 0.8;

/// When a sheddable request (priority below zero, as the EPP's) is refused with 429.
#[derive(Debug, Clone, Copy)]
pub struct Shedding {
    pub waiting: f64,
    pub kv: f64,
}

impl Default for Shedding {
    fn default() -> Self {
        Self {
            waiting: DEFAULT_SHED_WAITING,
            kv: DEFAULT_SHED_KV,
        }
    }
}

/// What the picker knows of a request.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// The body's `model`; `None` for a request without a body, which any host may take.
    pub model: Option<String>,
    pub task: Option<String>,
    pub priority: i32,
    pub client: Option<String>,
    pub prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    pub last_user_message: String,
    /// Envoy's subset hint: only these may be picked.
    pub subset: Option<Vec<SocketAddrV4>>,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The hosts in the order Envoy tries them; never empty.
    pub endpoints: Vec<SocketAddrV4>,
    /// The first one's name in the endpoints file.
    pub host: String,
    /// The chosen pair, `MODEL@HOST` (none for a request without a model).
    pub pair: Option<String>,
    /// The model's id on its host, when the body must name it instead of what was asked
    /// (`auto`, or a pair's id).
    pub rewrite: Option<String>,
    /// Whether the policy chose (false: the native default, or no call was needed).
    pub by_policy: bool,
}

/// Why a request is not routed, as the HTTP answer Envoy gives the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn unavailable(message: String) -> Self {
        Self {
            status: 503,
            code: "no_host_available",
            message,
        }
    }
}

/// Where one request goes, or why it does not.
pub fn decide(
    snapshot: &Snapshot,
    hooks: &Hooks,
    ask: &Ask,
    shedding: Shedding,
) -> Result<Route, Refusal> {
    let eligible = |h: usize| match &snapshot.hosts[h] {
        Seen::Up(v) => ask
            .subset
            .as_ref()
            .is_none_or(|s| s.contains(&v.endpoint.addr)),
        Seen::Down { .. } => false,
    };
    if let Some(subset) = &ask.subset
        && subset.is_empty()
    {
        return Err(Refusal::unavailable(
            "the request's endpoint subset is empty".into(),
        ));
    }
    // The pairs and their records, best first: the read's own, unless a subset leaves some out.
    let (ranked, candidates): (Cow<'_, [usize]>, Cow<'_, [Model]>) = match &ask.subset {
        None => (
            Cow::Borrowed(snapshot.ranked.as_slice()),
            Cow::Borrowed(snapshot.records.as_slice()),
        ),
        Some(_) => {
            let keep: Vec<usize> = (0..snapshot.ranked.len())
                .filter(|&r| eligible(snapshot.pairs[snapshot.ranked[r]].host))
                .collect();
            (
                Cow::Owned(keep.iter().map(|&r| snapshot.ranked[r]).collect()),
                Cow::Owned(keep.iter().map(|&r| snapshot.records[r].clone()).collect()),
            )
        }
    };
    let pair = |i: usize| &snapshot.pairs[i];

    let Some(asked) = &ask.model else {
        return any_host(snapshot, &eligible);
    };
    let matches = |p: &Pair| {
        let (_, m) = snapshot.pair(p);
        p.id == *asked || m.id == *asked || m.aliases.contains(asked)
    };
    let auto = asked == "auto";
    let mut named = ranked
        .iter()
        .map(|&i| pair(i))
        .filter(|p| auto || matches(p));
    let Some(first) = named.next() else {
        return Err(unmatched(snapshot, ask, asked, &matches));
    };
    if ask.priority < 0
        && saturated(snapshot.pair(first).0, shedding)
        && named.all(|p| saturated(snapshot.pair(p).0, shedding))
    {
        return Err(Refusal {
            status: 429,
            code: "shed",
            message: format!(
                "every host that serves {asked:?} is saturated and the request is sheddable \
                 (priority {})",
                ask.priority
            ),
        });
    }

    let request = Request {
        id: String::new(),
        model: if auto {
            asked.clone()
        } else {
            first.id.clone()
        },
        task: ask.task.clone(),
        priority: ask.priority,
        client: ask.client.clone(),
        prompt_tokens: ask.prompt_tokens,
        max_tokens: ask.max_tokens,
        last_user_message: ask.last_user_message.clone(),
    };
    let decided = hooks.select_model_for(
        ask.client.as_deref().unwrap_or(""),
        &request,
        &candidates,
        &snapshot.telemetry,
    );
    let by_policy = matches!(decided.by, DecidedBy::Policy(_));
    let chosen = match decided.value {
        Selection::Model(id) => id,
        Selection::Reject(reason) => {
            return Err(Refusal {
                status: 400,
                code: "model_rejected",
                message: format!("no model can serve this request: {reason}"),
            });
        }
    };
    let Some(chosen) = ranked.iter().map(|&i| pair(i)).find(|p| p.id == chosen) else {
        return Err(Refusal::unavailable(format!(
            "select-model chose {chosen:?}, which no host serves"
        )));
    };
    let (view, model) = snapshot.pair(chosen);
    let mut endpoints = vec![view.endpoint.addr];
    for &i in ranked.iter() {
        let (v, m) = snapshot.pair(pair(i));
        if m.id == model.id && !endpoints.contains(&v.endpoint.addr) {
            endpoints.push(v.endpoint.addr);
        }
    }
    let rewrite = (model.id != *asked && !model.aliases.contains(asked)).then(|| model.id.clone());
    Ok(Route {
        endpoints,
        host: view.endpoint.name.clone(),
        pair: Some(chosen.id.clone()),
        rewrite,
        by_policy,
    })
}

fn saturated(view: &HostView, shedding: Shedding) -> bool {
    view.gauges.waiting > shedding.waiting || view.gauges.kv_cache > shedding.kv
}

/// A request without a model (a `GET`, say) goes to the least busy eligible host.
fn any_host(snapshot: &Snapshot, eligible: &dyn Fn(usize) -> bool) -> Result<Route, Refusal> {
    let mut up: Vec<&HostView> = snapshot
        .hosts
        .iter()
        .enumerate()
        .filter(|(h, _)| eligible(*h))
        .filter_map(|(_, s)| match s {
            Seen::Up(v) => Some(v),
            Seen::Down { .. } => None,
        })
        .collect();
    up.sort_by_key(|v| (v.gauges.waiting as u64, v.gauges.running as u64));
    if up.is_empty() {
        return Err(Refusal::unavailable("no host is up".into()));
    }
    Ok(Route {
        endpoints: up.iter().map(|v| v.endpoint.addr).collect(),
        host: up[0].endpoint.name.clone(),
        pair: None,
        rewrite: None,
        by_policy: false,
    })
}

/// Why no eligible pair matches `asked`: no host in the fleet knows the model (404), or those
/// that do are down or outside the subset (503).
fn unmatched(
    snapshot: &Snapshot,
    ask: &Ask,
    asked: &str,
    matches: &dyn Fn(&Pair) -> bool,
) -> Refusal {
    if snapshot.pairs.iter().any(matches) {
        let why = if ask.subset.is_some() {
            "none of them is in the request's endpoint subset"
        } else {
            "none of them is up"
        };
        return Refusal::unavailable(format!("hosts serve {asked:?}, but {why}"));
    }
    if asked != "auto" && snapshot.hosts.iter().any(|s| matches!(s, Seen::Up(_))) {
        return Refusal {
            status: 404,
            code: "model_not_found",
            message: format!("the model {asked:?} does not exist on any host"),
        };
    }
    Refusal::unavailable(if ask.subset.is_some() {
        "no host in the request's endpoint subset is up".into()
    } else {
        "no host is up".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::types::ModelState;
    use crate::pick::endpoints::Endpoint;
    use crate::pick::hosts::{Gauges, HostDevice, HostModel};

    fn model(id: &str, state: ModelState) -> HostModel {
        HostModel {
            id: id.into(),
            aliases: vec![format!("{id}-alias")],
            state,
            device: "cpu".into(),
            size_bytes: 100,
            tags: Vec::new(),
            parallel: 1,
            in_flight: 0,
            queued: 0,
            priority: 0,
            pinned: false,
            size_measured: false,
            use_count: 0,
            load_count: 0,
            errors: 0,
            mean_load_ms: 0,
            mean_latency_ms: 0,
        }
    }

    fn host(name: &str, port: u16, models: Vec<HostModel>, free: u64) -> Seen {
        Seen::Up(HostView {
            endpoint: Endpoint {
                name: name.into(),
                namespace: "default".into(),
                addr: SocketAddrV4::new([127, 0, 0, 1].into(), port),
                labels: Default::default(),
            },
            models,
            devices: vec![HostDevice {
                name: "cpu".into(),
                total_bytes: 1000,
                free_bytes: free,
                utilization_percent: None,
            }],
            gauges: Gauges::default(),
            read_at: tokio::time::Instant::now(),
        })
    }

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new([127, 0, 0, 1].into(), port)
    }

    fn ask(model: &str) -> Ask {
        Ask {
            model: Some(model.into()),
            ..Ask::default()
        }
    }

    fn pick(hosts: Vec<Seen>, ask: &Ask) -> Result<Route, Refusal> {
        let snapshot = Snapshot::of(hosts);
        let hooks = Hooks::new();
        hooks.set_catalogue(snapshot.catalogue());
        decide(&snapshot, &hooks, ask, Shedding::default())
    }

    #[test]
    fn a_named_model_goes_where_it_is_ready_then_loading_then_where_it_fits() {
        let fleet = || {
            vec![
                host("a", 1, vec![model("m", ModelState::Unloaded)], 0),
                host("b", 2, vec![model("m", ModelState::Unloaded)], 500),
                host("c", 3, vec![model("m", ModelState::Loading)], 0),
                host("d", 4, vec![model("m", ModelState::Ready)], 0),
            ]
        };
        let route = pick(fleet(), &ask("m")).expect("routed");
        assert_eq!(route.endpoints, [addr(4), addr(3), addr(2), addr(1)]);
        assert_eq!(route.pair.as_deref(), Some("m@d"));
        assert_eq!(route.rewrite, None, "the body already names it");
        let by_alias = pick(fleet(), &ask("m-alias")).expect("routed");
        assert_eq!(by_alias.endpoints[0], addr(4));
        let by_pair = pick(fleet(), &ask("m@b")).expect("routed");
        assert_eq!(by_pair.endpoints[0], addr(2), "a pair's id names its host");
        assert_eq!(by_pair.rewrite.as_deref(), Some("m"));
    }

    #[test]
    fn a_busy_ready_model_ranks_below_a_free_one_and_a_queue_below_none() {
        let mut busy = model("m", ModelState::Ready);
        busy.in_flight = 1;
        let mut queued = model("m", ModelState::Ready);
        queued.queued = 3;
        let route = pick(
            vec![
                host("busy", 1, vec![busy], 0),
                host("queued", 2, vec![queued], 0),
                host("free", 3, vec![model("m", ModelState::Ready)], 0),
            ],
            &ask("m"),
        )
        .expect("routed");
        assert_eq!(route.endpoints, [addr(3), addr(2), addr(1)]);
    }

    #[test]
    fn only_hosts_with_the_model_follow_as_fallbacks() {
        let route = pick(
            vec![
                host("a", 1, vec![model("m", ModelState::Ready)], 0),
                host("b", 2, vec![model("other", ModelState::Ready)], 0),
            ],
            &ask("m"),
        )
        .expect("routed");
        assert_eq!(route.endpoints, [addr(1)]);
    }

    #[test]
    fn auto_takes_the_first_ready_pair_and_the_body_names_its_model() {
        let route = pick(
            vec![
                host("a", 1, vec![model("x", ModelState::Unloaded)], 0),
                host("b", 2, vec![model("y", ModelState::Ready)], 0),
            ],
            &ask("auto"),
        )
        .expect("routed");
        assert_eq!(route.endpoints, [addr(2)]);
        assert_eq!(route.rewrite.as_deref(), Some("y"));
    }

    #[test]
    fn the_subset_hint_is_obeyed_and_an_empty_one_refused() {
        let fleet = || {
            vec![
                host("a", 1, vec![model("m", ModelState::Unloaded)], 0),
                host("b", 2, vec![model("m", ModelState::Ready)], 0),
            ]
        };
        let mut only_a = ask("m");
        only_a.subset = Some(vec![addr(1)]);
        assert_eq!(
            pick(fleet(), &only_a).expect("routed").endpoints,
            [addr(1)],
            "B is ready, but not in the subset"
        );
        let mut none = ask("m");
        none.subset = Some(Vec::new());
        assert_eq!(pick(fleet(), &none).map_err(|r| r.status), Err(503));
        let mut elsewhere = ask("m");
        elsewhere.subset = Some(vec![addr(9)]);
        assert_eq!(pick(fleet(), &elsewhere).map_err(|r| r.status), Err(503));
    }

    #[test]
    fn an_unknown_model_is_404_and_a_model_only_on_down_hosts_503() {
        let down = Seen::Down {
            endpoint: Endpoint {
                name: "gone".into(),
                namespace: "default".into(),
                addr: addr(5),
                labels: Default::default(),
            },
            why: "refused".into(),
        };
        let fleet = vec![
            host("a", 1, vec![model("m", ModelState::Ready)], 0),
            down.clone(),
        ];
        assert_eq!(
            pick(fleet.clone(), &ask("nope")).map_err(|r| r.status),
            Err(404)
        );
        assert_eq!(pick(vec![down], &ask("m")).map_err(|r| r.status), Err(503));
        let no_body = Ask::default();
        assert_eq!(
            pick(fleet, &no_body).expect("routed").endpoints,
            [addr(1)],
            "a request without a model goes to a host that is up"
        );
    }

    /// The shedding limit: a sheddable request is refused only when every host that could
    /// serve it is saturated; a request that is not sheddable never is.
    #[test]
    fn shedding_obeyed_and_violated() {
        let fleet = |waiting_b: f64| {
            let mut hosts = vec![
                host("a", 1, vec![model("m", ModelState::Ready)], 0),
                host("b", 2, vec![model("m", ModelState::Ready)], 0),
            ];
            for (h, w) in hosts
                .iter_mut()
                .zip([DEFAULT_SHED_WAITING + 1.0, waiting_b])
            {
                if let Seen::Up(v) = h {
                    v.gauges.waiting = w;
                }
            }
            hosts
        };
        let mut sheddable = ask("m");
        sheddable.priority = -1;
        let route = pick(fleet(DEFAULT_SHED_WAITING), &sheddable).expect("B has room");
        assert_eq!(route.endpoints[0], addr(2));
        let refused = pick(fleet(DEFAULT_SHED_WAITING + 1.0), &sheddable);
        assert_eq!(refused.map_err(|r| r.status), Err(429));
        assert!(pick(fleet(DEFAULT_SHED_WAITING + 1.0), &ask("m")).is_ok());
    }
}
