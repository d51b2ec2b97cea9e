//! The acquire stage: the scheduler makes the chosen model ready (loading it, and asking
//! `choose-eviction` when memory is short) and leases it to the request.

use super::exchange::Exchange;
use super::{ApiError, AppState};
use crate::engine::Hook;
use crate::engine::types::Model;
use crate::scheduler::{Demand, Lease};

/// Waits for the chosen model and takes a lease on it; the scheduler's refusals become
/// OpenAI-shaped errors (429 for a full queue, 503 while it loads too long, ...).
pub async fn acquire(app: &AppState, ex: &Exchange, target: &Model) -> Result<Lease, ApiError> {
    let demand = Demand {
        priority: ex.priority,
        task: ex.task.clone(),
        key: ex.key_for(Hook::ChooseEviction).to_string(),
        prompt_tokens: ex.estimated_tokens,
    };
    Ok(app.scheduler.acquire(&target.id, &demand).await?)
}
