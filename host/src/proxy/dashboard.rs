//! The dashboard: `/ui` serves a page compiled into the binary (plain HTML, CSS and
//! JavaScript in `ui/`, no build step), and `/admin/events` feeds it, behind the admin key,
//! one server-sent-event stream per open page instead of a page polling every route.
//!
//! The stream sends `models` (what `/admin/models` says), `policies` and `experiments` once
//! at connect, then again whenever they change: the host looks every
//! [`EVENTS_CHECK_EVERY`], sends nothing while nothing changed, and at least every
//! [`EVENTS_REFRESH_EVERY`] (the page advances idle times itself in between). It ends when
//! the host begins to shut down, which would otherwise wait on it forever.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::Value;

use super::AppState;
use super::admin::{experiments_report, policies_report};

/// How often the event stream looks for a change.
pub const EVENTS_CHECK_EVERY: Duration = Duration::from_millis(250);
/// The longest the stream goes without sending the models, changed or not.
pub const EVENTS_REFRESH_EVERY: Duration = Duration::from_secs(5);

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// `GET /ui`: the page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            // The page loads nothing from elsewhere and is framed by nobody.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

/// What the stream last sent of one kind, to send it again only when it changed.
struct Sent {
    key: String,
    at: tokio::time::Instant,
}

/// `GET /admin/events`: the dashboard's live feed.
pub async fn events(
    State(app): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let stream = changes(app);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn changes(app: Arc<AppState>) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    let ticker = tokio::time::interval(EVENTS_CHECK_EVERY);
    let sent: [Option<Sent>; 3] = [None, None, None];
    let closing = app.closing.subscribe();
    futures_util::stream::unfold(
        (app, ticker, sent, Vec::<Event>::new(), closing),
        |(app, mut ticker, mut sent, mut pending, mut closing)| async move {
            while pending.is_empty() {
                if *closing.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = closing.changed() => return None,
                }
                let models = serde_json::to_value(app.scheduler.status()).unwrap_or_default();
                let now = tokio::time::Instant::now();
                for (i, (name, value)) in [
                    ("models", models),
                    ("policies", policies_report(&app)),
                    ("experiments", experiments_report(&app)),
                ]
                .into_iter()
                .enumerate()
                {
                    let key = stable(&value);
                    let due = match &sent[i] {
                        None => true,
                        Some(s) => s.key != key || (i == 0 && now - s.at >= EVENTS_REFRESH_EVERY),
                    };
                    if due {
                        pending.push(Event::default().event(name).data(value.to_string()));
                        sent[i] = Some(Sent { key, at: now });
                    }
                }
            }
            let next = pending.remove(0);
            Some((Ok(next), (app, ticker, sent, pending, closing)))
        },
    )
}

/// The JSON without what changes by itself as time passes (uptime, idle times), so that only
/// a real change is sent.
fn stable(value: &Value) -> String {
    let mut v = value.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("uptime_ms");
        if let Some(models) = o.get_mut("models").and_then(Value::as_array_mut) {
            for m in models.iter_mut().filter_map(Value::as_object_mut) {
                m.remove("idle_ms");
            }
        }
    }
    v.to_string()
}
