//! The web console: server-rendered pages in Vietnamese (English on request) for commune staff, approvers and
//! operators, with templates embedded in the binary and a few lines of JavaScript (upload progress only).
//!
//! The console is a thin face over the JSON API: every page and every form is answered by calling `/api/v1`
//! in-process (the console holds the API router and calls it with `oneshot`, passing on the browser's session
//! cookie, its CSRF token and its address), so the API alone decides who may see and do what — the console can
//! never show or do more than the API allows that person. Layout: [`call`] (the in-process API call),
//! [`i18n`] (every word in both languages), [`pages`] (GET pages), [`actions`] (form posts: Post/Redirect/Get with
//! a flash message), [`speech`] (text-to-speech for typed bulletins, behind a trait), [`templates`] (the
//! embedded minijinja templates and their rendering).

pub mod actions;
pub mod call;
pub mod chart;
pub mod i18n;
pub mod pages;
pub mod speech;
pub mod templates;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

pub use speech::{EspeakNg, Speech, SpeechError};

/// What every console handler gets: the API to call, the templates, the text-to-speech engine.
#[derive(Clone)]
pub struct Console {
    /// The whole API router (paths start with `/api/v1`), state applied.
    pub api: Router,
    /// The templates.
    pub templates: Arc<templates::Templates>,
    /// Speaks typed bulletins.
    pub speech: Arc<dyn Speech>,
    /// "Today" and "now" on the pages (the same clock as the schedules).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The time zone pages show days and times in.
    pub tz: chrono_tz::Tz,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// The whole HTTP service: the console's pages, and everything else (`/api/v1/...`, `/metrics`) passed to `api`,
/// the API router with its state applied.
pub fn routes(api: Router, speech: Arc<dyn Speech>, clock: Arc<dyn crate::clock::Clock>, tz: chrono_tz::Tz) -> Router {
    let console = Console { api, templates: Arc::new(templates::Templates::new()), speech, clock, tz };
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/login", get(pages::login).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/lang/{code}", get(actions::language))
        .route("/bulletins", get(pages::bulletins))
        .route("/bulletins/speak", post(actions::speak))
        .route("/bulletins/{id}", get(pages::bulletin))
        .route("/bulletins/{id}/{step}", post(actions::review))
        .route("/schedules", get(pages::schedules).post(actions::schedule))
        .route("/schedules/new", get(pages::new_schedule))
        .route("/schedules/{id}", get(pages::broadcast))
        .route("/schedules/{id}/cancel", post(actions::cancel_schedule))
        .route("/emergency", get(pages::emergency).post(actions::emergency))
        .route("/receivers", get(pages::receivers).post(actions::register))
        .route("/receivers/{id}", get(pages::receiver))
        .route("/receivers/{id}/command", post(actions::command))
        .route("/alerts", get(pages::alerts))
        .route("/alerts/{id}/ack", post(actions::ack_alert))
        .route("/reports", get(pages::reports))
        .route("/users", get(pages::users).post(actions::create_user))
        .route("/areas", post(actions::create_area))
        .route("/areas/{id}/one-step", post(actions::one_step))
        .route("/audit", get(pages::audit))
        .route("/static/console.css", get(pages::stylesheet))
        .route("/static/console.js", get(pages::script))
        .fallback(pages::fallback)
        .with_state(console)
}

#[cfg(test)]
mod tests;
