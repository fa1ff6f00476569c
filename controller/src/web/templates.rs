//! The console's templates (minijinja, HTML auto-escaped), embedded in the binary, and how a page is rendered:
//! every page gets the words of its language (`tr`), the person (`me`), the CSRF token for its forms, the path
//! (for the language switch) and any flash message. The `local` filter shows a UTC RFC 3339 time as local time.

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{context, Environment, Value};

use super::i18n::{self, Lang};

/// Every template, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("dashboard.html", include_str!("templates/dashboard.html")),
    ("bulletins.html", include_str!("templates/bulletins.html")),
    ("bulletin.html", include_str!("templates/bulletin.html")),
    ("schedules.html", include_str!("templates/schedules.html")),
    ("schedule_new.html", include_str!("templates/schedule_new.html")),
    ("broadcast.html", include_str!("templates/broadcast.html")),
    ("emergency.html", include_str!("templates/emergency.html")),
    ("receivers.html", include_str!("templates/receivers.html")),
    ("receiver.html", include_str!("templates/receiver.html")),
    ("receiver_new.html", include_str!("templates/receiver_new.html")),
    ("alerts.html", include_str!("templates/alerts.html")),
    ("reports.html", include_str!("templates/reports.html")),
    ("users.html", include_str!("templates/users.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// The stylesheet and the one script.
pub const CSS: &str = include_str!("templates/console.css");
/// See [`CSS`].
pub const JS: &str = include_str!("templates/console.js");

/// The common parts of every page.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// Page title (already translated).
    pub title: String,
    /// The person (`GET /api/v1/me`), `Null` on the login page.
    pub me: serde_json::Value,
    /// The request path (the language switch comes back to it).
    pub path: String,
    /// A success message.
    pub ok: Option<String>,
    /// An error message.
    pub err: Option<String>,
    /// Seconds after which the page reloads itself (live views).
    pub refresh: Option<u32>,
}

/// The parsed templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// Parses every template (they are part of the binary: a broken one fails the tests, not a user).
    pub fn new() -> Self {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not parse");
            }
        }
        env.add_filter("local", local_time);
        Templates { env }
    }

    /// Renders page `name` in `lang` with the frame and the page's own values.
    pub fn render(&self, name: &str, lang: Lang, frame: &Frame, page: Value) -> Response {
        let csrf = frame.me["csrf"].as_str().unwrap_or_default().to_string();
        let me = if frame.me.is_null() { Value::from(()) } else { Value::from_serialize(&frame.me) };
        let ctx = context! {
            lang => lang.code(),
            tr => i18n::words(lang),
            title => frame.title,
            me => me,
            csrf => csrf,
            path => frame.path,
            ok => frame.ok,
            err => frame.err,
            refresh => frame.refresh,
            ..page
        };
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => {
                ([(header::CACHE_CONTROL, "no-store"), (header::X_FRAME_OPTIONS, "DENY")], Html(html)).into_response()
            }
            Err(e) => {
                tracing::error!(template = name, error = %e, "console page failed to render");
                (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be shown; see the controller log")
                    .into_response()
            }
        }
    }
}

/// `"2026-11-23T23:00:00Z"` → `"06:00 24/11/2026"` (Vietnam time); anything else is shown as it is.
fn local_time(v: Value) -> String {
    let Some(s) = v.as_str() else { return String::new() };
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&crate::schedule::DEFAULT_TZ).format("%H:%M %d/%m/%Y").to_string(),
        Err(_) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn every_word_a_template_uses_exists_in_both_languages() {
        let words = i18n::words(Lang::Vi);
        for (name, source) in TEMPLATES {
            for part in source.split("tr.").skip(1) {
                let key: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(words.contains_key(key.as_str()), "{name} uses tr.{key}, which has no words");
            }
        }
        assert_eq!(i18n::words(Lang::Vi).len(), i18n::words(Lang::En).len());
    }

    #[test]
    fn times_are_shown_in_vietnam_time() {
        assert_eq!(local_time(Value::from("2026-11-23T23:00:00Z")), "06:00 24/11/2026");
        assert_eq!(local_time(Value::from(())), "");
    }
}
