//! Security headers on every HTTP response, API and console alike: [`security_headers`] is a middleware the
//! server applies around the whole router (`.layer(axum::middleware::from_fn(api::headers::security_headers))`),
//! so errors, 404s and static files get them too.
//!
//! - `X-Content-Type-Options: nosniff`: browsers never guess a type (an uploaded file is never run as script).
//! - `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`: the console cannot be framed (clickjacking of
//!   the emergency button).
//! - `Referrer-Policy: same-origin`: bulletin and receiver ids in URLs do not leak to other sites.
//! - `Content-Security-Policy` ([`CONTENT_SECURITY_POLICY`]): scripts, styles and media from the controller
//!   only, no inline script or style (the console uses `/static/console.css` and `/static/console.js`, inline
//!   SVG and no `style=` attributes), images also as `data:` URLs.
//!
//! A handler that sets one of these headers itself keeps its own value.

use axum::extract::Request;
use axum::http::header::{CONTENT_SECURITY_POLICY as CSP, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The Content-Security-Policy sent with every response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; media-src 'self'; \
     style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// Adds the security headers to the response of `next`. See the module documentation.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "same-origin"),
        (CSP, CONTENT_SECURITY_POLICY),
    ] {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body as HttpBody;
    use axum::http::{Method, Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::api::app;
    use crate::api::tests::harness;

    fn check(resp: &Response, what: &str) {
        let h = resp.headers();
        assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff", "{what}");
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{what}");
        assert_eq!(h.get("referrer-policy").unwrap(), "same-origin", "{what}");
        assert_eq!(h.get("content-security-policy").unwrap(), CONTENT_SECURITY_POLICY, "{what}");
    }

    #[tokio::test]
    async fn every_response_carries_the_headers() {
        let h = harness();
        let router = app(h.state.clone()).layer(axum::middleware::from_fn(security_headers));
        let auth = format!("Bearer {}", h.token);
        let cases = [
            (Method::GET, "/api/v1/health", None, "", StatusCode::OK),
            (Method::GET, "/api/v1/areas", None, "", StatusCode::UNAUTHORIZED),
            (Method::GET, "/api/v1/areas", Some(auth.as_str()), "", StatusCode::OK),
            (Method::GET, "/nothing-here", None, "", StatusCode::NOT_FOUND),
            (Method::POST, "/api/v1/areas", Some(auth.as_str()), "{not json", StatusCode::BAD_REQUEST),
            (Method::DELETE, "/api/v1/health", None, "", StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (method, uri, auth, body, status) in cases {
            let mut req = Request::builder().method(method.clone()).uri(uri).header("content-type", "application/json");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = router.clone().oneshot(req.body(HttpBody::from(body)).unwrap()).await.unwrap();
            assert_eq!(resp.status(), status, "{method} {uri}");
            check(&resp, &format!("{method} {uri}"));
        }
    }

    #[tokio::test]
    async fn a_handler_may_set_its_own_policy() {
        let router = axum::Router::new()
            .route("/x", get(|| async { ([("content-security-policy", "default-src 'none'")], "x") }))
            .layer(axum::middleware::from_fn(security_headers));
        let resp = router.oneshot(Request::get("/x").body(HttpBody::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.headers().get("content-security-policy").unwrap(), "default-src 'none'");
        assert_eq!(resp.headers().get("x-frame-options").unwrap(), "DENY");
    }
}
