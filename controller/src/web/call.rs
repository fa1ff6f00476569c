//! One in-process call of the JSON API on behalf of the person at the browser: the request carries their session
//! cookie, the CSRF token their form sent (as `X-CSRF-Token`) and their address, exactly as if the browser had
//! called `/api/v1` itself, so the API's checks of role, scope and CSRF apply unchanged.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;
use tower::ServiceExt;

use super::i18n::Lang;
use super::Console;

/// The largest API answer the console reads (reports and lists; audio is never read through here).
const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;

/// Who is at the browser: their cookies, their address and their language.
#[derive(Debug, Clone)]
pub struct Caller {
    cookie: Option<HeaderValue>,
    addr: Option<ConnectInfo<SocketAddr>>,
    /// The language pages are shown in.
    pub lang: Lang,
}

impl FromRequestParts<Console> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &Console) -> Result<Self, Self::Rejection> {
        let cookie = parts.headers.get(header::COOKIE).cloned();
        let lang = cookie.as_ref().and_then(|c| c.to_str().ok()).and_then(|c| cookie_value(c, "loa_lang"));
        Ok(Caller {
            cookie,
            addr: parts.extensions.get::<ConnectInfo<SocketAddr>>().copied(),
            lang: Lang::from_code(lang.as_deref().unwrap_or("vi")),
        })
    }
}

/// The person at the browser as the API knows them (`GET /api/v1/me`: name, role, area, rights). A page handler
/// that takes it is only reached by someone logged in; anyone else is sent to the login page.
#[derive(Debug, Clone)]
pub struct Me(pub Value);

impl FromRequestParts<Console> for Me {
    type Rejection = Bounce;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Self::Rejection> {
        let Ok(who) = Caller::from_request_parts(parts, console).await;
        console.get(&who, "/api/v1/me").await.page_data().map(Me)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value(header: &str, name: &str) -> Option<String> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

/// What the API answered.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body (`Null` if it was not JSON).
    pub body: Value,
    /// Cookies it set (login, logout), passed on to the browser.
    pub set_cookie: Vec<HeaderValue>,
}

impl Reply {
    /// Whether the call succeeded (2xx).
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's message for a failed call (its `error` field), or the status.
    pub fn error(&self) -> String {
        self.body["error"].as_str().map(str::to_string).unwrap_or_else(|| self.status.to_string())
    }

    /// For a page: the body, or the response to send instead (log in again on 401, an error page otherwise).
    pub fn page_data(self) -> Result<Value, Bounce> {
        match self.status {
            s if s.is_success() => Ok(self.body),
            StatusCode::UNAUTHORIZED => Err(Bounce(Box::new(Redirect::to("/login").into_response()))),
            s => Err(Bounce(Box::new((s, self.error()).into_response()))),
        }
    }
}

/// The response a page sends instead of itself (to the login page, or the API's refusal).
#[derive(Debug)]
pub struct Bounce(Box<Response>);

impl IntoResponse for Bounce {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl Console {
    /// `GET path` (path starts with `/api/v1`).
    pub async fn get(&self, who: &Caller, path: &str) -> Reply {
        self.call(who, Method::GET, path, None, "", Bytes::new()).await
    }

    /// `method path` with a JSON body and the form's CSRF token.
    pub async fn send(&self, who: &Caller, method: Method, path: &str, body: &Value, csrf: &str) -> Reply {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.call(who, method, path, Some("application/json"), csrf, bytes).await
    }

    /// `POST path` with a body of the given content type (a multipart upload).
    pub async fn send_raw(&self, who: &Caller, path: &str, content_type: &str, body: Bytes, csrf: &str) -> Reply {
        self.call(who, Method::POST, path, Some(content_type), csrf, body).await
    }

    async fn call(
        &self,
        who: &Caller,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        csrf: &str,
        body: Bytes,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(c) = &who.cookie {
            req = req.header(header::COOKIE, c.clone());
        }
        if let Some(t) = content_type {
            req = req.header(header::CONTENT_TYPE, t);
        }
        if !csrf.is_empty() {
            req = req.header("x-csrf-token", csrf);
        }
        let mut req = match req.body(Body::from(body)) {
            Ok(r) => r,
            Err(e) => return failed(StatusCode::BAD_REQUEST, &format!("bad request: {e}")),
        };
        if let Some(addr) = who.addr {
            req.extensions_mut().insert(addr);
        }
        let response = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let set_cookie = response.headers().get_all(header::SET_COOKIE).iter().cloned().collect();
        let body = match axum::body::to_bytes(response.into_body(), MAX_REPLY_BYTES).await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return failed(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot read the answer: {e}")),
        };
        Reply { status, body, set_cookie }
    }
}

fn failed(status: StatusCode, message: &str) -> Reply {
    Reply { status, body: serde_json::json!({ "error": message }), set_cookie: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cookie_among_others() {
        assert_eq!(cookie_value("a=1; loa_lang=en; b=2", "loa_lang").as_deref(), Some("en"));
        assert_eq!(cookie_value("a=1", "loa_lang"), None);
        assert_eq!(cookie_value("", "loa_lang"), None);
    }
}
