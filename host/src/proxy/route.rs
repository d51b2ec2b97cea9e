//! The route stage: `select-model` chooses the model that serves the request, from every
//! configured model that can (a request for `auto` sees only models with the route's
//! capability), and the exchange carries its id from here on. A model that cannot serve the
//! route is refused with the names of those that can.

use axum::http::StatusCode;

use super::exchange::{Exchange, Route};
use super::parse::last_user_message;
use super::{ApiError, AppState, fit};
use crate::engine::Hook;
use crate::engine::types::{Model, Request, Selection};

/// Asks `select-model` and returns the chosen model as the contract shows it. A policy whose
/// calls are fast is asked on this thread; any other goes to the blocking pool, as a guest may
/// run to its deadline ([`crate::engine::DEFAULT_INLINE_LIMIT`]).
pub async fn select(app: &AppState, ex: &mut Exchange) -> Result<Model, ApiError> {
    // A model asked for by name that no policy wants to see: the name decides, with no guest
    // call, no trip to the blocking pool and no look at the other models.
    if !app.scheduler.hooks().wants_selection(&ex.asked)
        && let Some(model) = app.scheduler.named_view(&ex.asked)
    {
        capable(app, ex.route, &model.id)?;
        ex.model = Some(model.id.clone());
        return Ok(model);
    }
    let (mut candidates, telemetry) = app.scheduler.selection_view();
    let needs = ex.route.capability();
    let settings = app.scheduler.settings();
    // Most hosts' models all serve the route: then there is nothing to filter.
    if ex.asked == "auto" && !settings.models.iter().all(|m| m.capabilities.has(needs)) {
        candidates.retain(|m| {
            settings
                .model(&m.id)
                .is_some_and(|s| s.capabilities.has(needs))
        });
        if candidates.is_empty() {
            return Err(ApiError::bad_request(
                "model_not_capable",
                format!("no configured model serves {needs}"),
            ));
        }
    }
    let hooks = app.scheduler.hooks().clone();
    let request = contract_request(ex);
    let key = ex.key_for(Hook::SelectModel).to_string();
    let inline = hooks.selects_inline();
    let decide = move || {
        let decided = hooks.select_model_for(&key, &request, &candidates, &telemetry);
        (decided, candidates)
    };
    let (decided, mut candidates) = if inline {
        decide()
    } else {
        tokio::task::spawn_blocking(decide)
            .await
            .map_err(|e| ApiError::backend(format!("select-model did not run: {e}")))?
    };
    let chosen = match decided.value {
        Selection::Model(id) => id,
        Selection::Reject(reason) => return Err(rejected(app, &ex.asked, &reason)),
    };
    capable(app, ex.route, &chosen)?;
    let at = candidates.iter().position(|m| m.id == chosen);
    ex.model = Some(chosen);
    at.map(|i| candidates.swap_remove(i))
        .ok_or_else(|| ApiError::backend("select-model chose a model that vanished"))
}

/// The model a prompt too long for the chosen one goes to (its `context_fallback`), when it
/// serves the route.
pub fn fall_back(app: &AppState, ex: &mut Exchange, to: &str) -> Result<Model, ApiError> {
    capable(app, ex.route, to)?;
    let model = app
        .scheduler
        .named_view(to)
        .ok_or_else(|| ApiError::backend(format!("the context_fallback {to} vanished")))?;
    tracing::info!(
        from = ex.model.as_deref().unwrap_or_default(),
        to,
        "the prompt does not fit: its context_fallback serves it"
    );
    ex.model = Some(model.id.clone());
    Ok(model)
}

/// Refuses `route` on model `id` when the model does not serve it, naming those that do.
fn capable(app: &AppState, route: Route, id: &str) -> Result<(), ApiError> {
    let needs = route.capability();
    let settings = app.scheduler.settings();
    if settings.model(id).is_none_or(|m| m.capabilities.has(needs)) {
        return Ok(());
    }
    let able: Vec<&str> = settings
        .models
        .iter()
        .filter(|m| m.capabilities.has(needs))
        .map(|m| m.id.as_str())
        .collect();
    let which = if able.is_empty() {
        "no configured model does".to_string()
    } else {
        format!("models that do: {}", able.join(", "))
    };
    Err(ApiError::bad_request(
        "model_not_capable",
        format!("{id} does not serve {needs} (its `capabilities`); {which}",),
    ))
}

/// The contract's `request` record.
fn contract_request(ex: &Exchange) -> Request {
    Request {
        id: ex.id.clone(),
        model: ex.asked.clone(),
        task: ex.task.clone(),
        priority: ex.priority,
        client: ex.client.clone(),
        prompt_tokens: ex.estimated_tokens,
        max_tokens: fit::requested_output(&ex.body),
        last_user_message: last_user_message(&ex.body),
    }
}

/// A refusal: 404 for a name nobody configured, 400 for a known name no model can serve.
fn rejected(app: &AppState, asked: &str, reason: &str) -> ApiError {
    let known = asked == "auto" || app.scheduler.settings().model(asked).is_some();
    if known {
        ApiError::bad_request(
            "model_rejected",
            format!("no model can serve this request: {reason}"),
        )
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("the model {asked:?} does not exist; GET /v1/models lists them"),
        )
    }
}
