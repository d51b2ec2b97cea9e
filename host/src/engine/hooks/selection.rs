//! `select-model`: which model serves a request (ids, aliases, `auto`, task specialisation).
//! Its entry point, the guest call, the host's rule for an answer, the native fallback (the
//! named model, or the first ready one for `auto`) and the smoke sample.

use super::{Decided, DecidedBy, Hooks};
use crate::engine::bindings::v2;
use crate::engine::policy::{Guest, V2Guest};
use crate::engine::types::{Model, ModelState, Request, Selection, Telemetry};
use crate::engine::{Catalogue, Contract, Hook, Policy, PolicyError, sample};

/// Candidates in the smoke sample.
const SMOKE_MODELS: usize = 6;

impl Hooks {
    pub fn select_model(
        &self,
        req: &Request,
        candidates: &[Model],
        telemetry: &Telemetry,
    ) -> Decided<Selection> {
        self.select_model_for("", req, candidates, telemetry)
    }

    /// `select-model` for the request whose sticky key is `key`. A request of a kind no policy
    /// on the hook wants to see (a 0.2 policy's `interests`) is answered by the native default
    /// without a guest call.
    pub fn select_model_for(
        &self,
        key: &str,
        req: &Request,
        candidates: &[Model],
        telemetry: &Telemetry,
    ) -> Decided<Selection> {
        let catalogue = self.catalogue();
        if !self.wanted(&req.model, &catalogue) {
            return Decided {
                value: fallback(req, candidates),
                by: DecidedBy::Fallback(None),
            };
        }
        self.run(
            Hook::SelectModel,
            key,
            |p| p.select_model(req, candidates, telemetry, &catalogue),
            || fallback(req, candidates),
        )
    }

    /// Whether `select-model` may be called on the request's own async thread: every policy
    /// it may ask (the serving one, an experiment's candidate) runs inline
    /// ([`Policy::runs_inline`]), or none is set.
    pub fn selects_inline(&self) -> bool {
        let inline =
            |p: Option<std::sync::Arc<Policy>>| p.is_none_or(|p| p.runs_inline(Hook::SelectModel));
        inline(self.get(Hook::SelectModel))
            && inline(
                self.experiment(Hook::SelectModel)
                    .map(|e| e.candidate.clone()),
            )
    }

    /// Whether a request asking for `asked` (an id, an alias, `auto` or another name) makes a
    /// guest call: false when no policy on the hook (or an experiment's candidate) wants to see
    /// such requests, and then the native default answers.
    pub fn wants_selection(&self, asked: &str) -> bool {
        self.wanted(asked, &self.catalogue())
    }

    /// Whether the serving policy, or an experiment's candidate, wants to be asked about
    /// requests for `asked`.
    fn wanted(&self, asked: &str, catalogue: &Catalogue) -> bool {
        let kind = v2::interest(&v2::asked(asked, catalogue));
        let wants = |p: Option<std::sync::Arc<Policy>>| p.is_some_and(|p| p.wants_selection(kind));
        wants(self.get(Hook::SelectModel))
            || wants(
                self.experiment(Hook::SelectModel)
                    .map(|e| e.candidate.clone()),
            )
    }
}

impl Policy {
    /// Asks the policy which model serves `req`; the answer must name a candidate.
    pub fn select_model(
        &self,
        req: &Request,
        candidates: &[Model],
        telemetry: &Telemetry,
        catalogue: &Catalogue,
    ) -> Result<Selection, PolicyError> {
        let hook = Hook::SelectModel;
        let selection = match self.contract() {
            Contract::V0_1 => self.call(hook, catalogue, |w| match &w.guest {
                Guest::V1 {
                    selection: Some(g), ..
                } => Some(
                    g.call_select_model(&mut w.store, req, candidates, telemetry)
                        .map(Ok),
                ),
                _ => None,
            })?,
            Contract::V0_2 => {
                let lean = v2::models(candidates, catalogue)
                    .map_err(|why| self.undescribable(hook, why))?;
                let asked = v2::asked(&req.model, catalogue);
                let request = v2::request(req, asked, catalogue, self.wants_text());
                let telemetry = v2::telemetry(telemetry, catalogue);
                self.call(hook, catalogue, |w| match &w.guest {
                    Guest::V2(V2Guest {
                        selection: Some(g), ..
                    }) => Some(
                        g.call(&mut w.store, (request, lean, telemetry))
                            .map(|(s,)| v2::selection(s, catalogue)),
                    ),
                    _ => None,
                })?
            }
        };
        self.checked(hook, selection.and_then(|s| validate(candidates, s)))
    }
}

/// A selection must name one of the candidates.
pub fn validate(candidates: &[Model], s: Selection) -> Result<Selection, String> {
    match &s {
        Selection::Model(id) if !candidates.iter().any(|m| &m.id == id) => {
            Err(format!("selects {id:?}, which is not a configured model"))
        }
        _ => Ok(s),
    }
}

/// The native default: the model named by id or alias; for `auto`, the first ready model,
/// else the first one.
pub fn fallback(req: &Request, candidates: &[Model]) -> Selection {
    let named = candidates
        .iter()
        .find(|m| m.id == req.model)
        .or_else(|| candidates.iter().find(|m| m.aliases.contains(&req.model)));
    let chosen = match named {
        Some(m) => Some(m),
        None if req.model == "auto" => candidates
            .iter()
            .find(|m| m.state == ModelState::Ready)
            .or_else(|| candidates.first()),
        None => return Selection::Reject(format!("no model is named {:?}", req.model)),
    };
    match chosen {
        Some(m) => Selection::Model(m.id.clone()),
        None => Selection::Reject("no model is configured".into()),
    }
}

/// The policy's answer on the sample scenario, described.
pub fn smoke(policy: &Policy) -> Result<String, PolicyError> {
    let candidates = sample::loaded(SMOKE_MODELS);
    let telemetry = sample::telemetry(120_000, 8 << 30, 2 << 30);
    let catalogue = sample::catalogue(SMOKE_MODELS);
    Ok(
        match policy.select_model(&sample::request(), &candidates, &telemetry, &catalogue)? {
            Selection::Model(id) => format!("model {id:?}"),
            Selection::Reject(why) => format!("reject: {why}"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_must_name_a_candidate() {
        let candidates = sample::loaded(3);
        assert!(validate(&candidates, Selection::Model("m2".into())).is_ok());
        assert!(validate(&candidates, Selection::Reject("no".into())).is_ok());
        assert!(validate(&candidates, Selection::Model("m9".into())).is_err());
    }

    #[test]
    fn fallback_selection_resolves_names_and_auto() {
        let mut candidates = sample::loaded(3);
        candidates[2].aliases = vec!["small".into()];
        candidates[0].state = ModelState::Unloaded;
        let ask = |model: &str| {
            fallback(
                &Request {
                    model: model.into(),
                    ..sample::request()
                },
                &candidates,
            )
        };
        assert_eq!(ask("m1"), Selection::Model("m1".into()));
        assert_eq!(ask("small"), Selection::Model("m2".into()));
        assert_eq!(
            ask("auto"),
            Selection::Model("m1".into()),
            "first ready model"
        );
        assert!(matches!(ask("nope"), Selection::Reject(_)));
    }
}
