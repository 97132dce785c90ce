//! The web console, served by the admin HTTP server at `/` when `admin.console.enabled=true`.
//!
//! - [`config`]: its settings, and the admin port's HTTPS.
//! - [`logins`]: who may log in, cookies, CSRF tokens.
//! - [`client`]: each login's ZooKeeper session, over an in-memory connection to this server.
//! - [`tree`]: the tree pages' API (browse, read, create, set, delete, live events).
//! - [`views`]: sessions, ensemble and metrics, from the same snapshots as the admin commands.
//! - [`https`]: TLS on the admin port.
//!
//! The pages themselves (`assets/`) are plain HTML, CSS and JavaScript compiled into the binary:
//! nothing is fetched from elsewhere, and building Corral needs no Node toolchain.

pub mod client;
pub mod config;
pub mod https;
pub mod logins;
pub mod tree;
pub mod views;

use crate::status::StatusSource;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use client::Dialer;
use https::AdminPeer;
use logins::{cookie_value, Login, Logins, Refused};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

/// What every console request shares.
pub struct Console {
    pub dialer: Dialer,
    pub logins: Arc<Logins>,
    pub status: StatusSource,
    /// Whether the admin port speaks TLS: then the console is served over TLS only, and its
    /// cookie is marked `Secure`.
    pub https: bool,
    /// The login cookie's name, which carries the admin port (set when the port is bound).
    cookie: OnceLock<String>,
    /// Fires when the admin server stops: live views end, so its graceful stop is not held up
    /// by browsers that keep them open.
    stopping: watch::Sender<bool>,
}

impl Console {
    pub fn new(dialer: Dialer, status: StatusSource, https: bool) -> Arc<Console> {
        let cfg = &status.cfg;
        let logins = Arc::new(Logins::new(
            &cfg.console.users,
            cfg.super_digest.as_deref(),
            status.limits.clone(),
        ));
        let (stopping, stop) = watch::channel(false);
        logins.reap(stop);
        Arc::new(Console {
            dialer,
            logins,
            status,
            https,
            cookie: OnceLock::new(),
            stopping,
        })
    }

    /// Ends the live views, and with them what keeps the admin server's connections open.
    pub fn stop(&self) {
        let _ = self.stopping.send(true);
    }

    /// Whether the admin server is stopping.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    fn cookie(&self) -> &str {
        self.cookie.get().map_or("corral_console", String::as_str)
    }

    /// The console's routes on the admin port `port`, to merge into the admin server's.
    pub fn routes(self: Arc<Console>, port: u16) -> Router {
        let _ = self.cookie.set(logins::cookie_name(port));
        let api = Router::new()
            .route("/api/me", get(me))
            .route("/api/children", get(tree::children))
            .route(
                "/api/node",
                get(tree::node)
                    .post(tree::create)
                    .put(tree::set)
                    .delete(tree::delete),
            )
            .route("/api/events", get(tree::events))
            .route("/api/sessions", get(views::sessions))
            .route("/api/ensemble", get(views::ensemble))
            .route("/api/metrics", get(views::metrics))
            .route("/logout", post(logout))
            .route_layer(middleware::from_fn_with_state(self.clone(), logged_in));
        Router::new()
            .route("/", get(index))
            .route("/login", get(login_page).post(log_in))
            .route("/console.js", get(|| asset("text/javascript", CONSOLE_JS)))
            .route("/console.css", get(|| asset("text/css", CONSOLE_CSS)))
            .merge(api)
            .layer(middleware::from_fn_with_state(self.clone(), guarded))
            .with_state(self)
    }
}

/// The console when it is off: `/` says how to turn it on.
pub fn disabled_routes() -> Router {
    Router::new().route(
        "/",
        get(|| async {
            (
                StatusCode::NOT_FOUND,
                "The web console is off. Set admin.console.enabled=true (and admin.console.users \
                 or superDigest) in zoo.cfg to turn it on.\n",
            )
        }),
    )
}

/// Around every console request: over TLS when the port has it (a unified port's plain
/// connections are sent to https), edits only from this console's own pages, and no
/// content-type guessing by the browser.
async fn guarded(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<AdminPeer>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if console.https && !peer.tls {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        return match (req.method() == Method::GET, host) {
            (true, Some(host)) => {
                Redirect::to(&format!("https://{host}{}", req.uri())).into_response()
            }
            _ => tree::error(
                StatusCode::FORBIDDEN,
                "HttpsOnly",
                "the console is served over https",
            ),
        };
    }
    if req.method() != Method::GET && !same_origin(req.headers()) {
        tracing::warn!(peer = %peer.addr, path = %req.uri().path(), "console request refused: sent from another site");
        return tree::error(
            StatusCode::FORBIDDEN,
            "CrossOrigin",
            "requests from other sites are refused",
        );
    }
    let mut response = next.run(req).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        "nosniff".parse().expect("a valid header"),
    );
    response
}

/// Whether a request comes from this server's own pages, as far as the browser says: no
/// `Sec-Fetch-Site: cross-site`, and an `Origin`, when sent, naming the host asked.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &header::HeaderValue| v.to_str().ok())
    };
    if text(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return false;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, h)| h == host),
        (Some(_), None) => false,
    }
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

/// Pages carry a policy that lets them load only this server's own scripts and styles.
fn page(body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (headers, body).into_response()
}

fn cookie_of<'a>(console: &Console, headers: &'a HeaderMap) -> Option<&'a str> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookie_value(cookies, console.cookie())
}

fn login_of(console: &Console, headers: &HeaderMap) -> Option<Arc<Login>> {
    console.logins.find(cookie_of(console, headers)?)
}

async fn index(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match login_of(&console, &headers) {
        Some(_) => page(INDEX_HTML.to_owned()),
        None => Redirect::to("/login").into_response(),
    }
}

async fn login_page() -> Response {
    page(LOGIN_HTML.replace("{{message}}", ""))
}

async fn log_in(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<AdminPeer>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    // A browser that logs in again leaves its earlier login, and that login's session, behind.
    if let Some(old) = cookie_of(&console, &headers) {
        console.logins.log_out(old).await;
    }
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let outcome = console
        .logins
        .log_in(&console.dialer, field("user"), field("password"), peer.addr)
        .await;
    match outcome {
        Ok((cookie, _)) => {
            let secure = if console.https { "; Secure" } else { "" };
            let name = console.cookie();
            let set = format!("{name}={cookie}; Path=/; HttpOnly; SameSite=Strict{secure}");
            ([(header::SET_COOKIE, set)], Redirect::to("/")).into_response()
        }
        Err(e) => {
            let status = match e {
                Refused::Credentials => StatusCode::UNAUTHORIZED,
                Refused::TooMany | Refused::Session(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            let message = format!(
                "<p class=\"error\" id=\"error\">{}</p>",
                escape(&e.to_string())
            );
            let mut r = page(LOGIN_HTML.replace("{{message}}", &message));
            *r.status_mut() = status;
            r
        }
    }
}

async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie_of(&console, &headers) {
        console.logins.log_out(c).await;
    }
    let name = console.cookie();
    let clear = format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

async fn me(axum::Extension(login): axum::Extension<Arc<Login>>) -> Response {
    axum::Json(serde_json::json!({ "user": login.user, "csrf": login.csrf })).into_response()
}

/// Every API call needs a login; every call that changes something also needs the login's
/// CSRF token in `X-CSRF-Token`.
async fn logged_in(
    State(console): State<Arc<Console>>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    let Some(login) = login_of(&console, req.headers()) else {
        return tree::error(StatusCode::UNAUTHORIZED, "NotLoggedIn", "log in first");
    };
    if req.method() != Method::GET {
        let token = req
            .headers()
            .get("x-csrf-token")
            .and_then(|t| t.to_str().ok())
            .unwrap_or("");
        if !logins::same(token.as_bytes(), login.csrf.as_bytes()) {
            tracing::warn!(user = %login.user, path = %req.uri().path(), "console edit refused: missing or wrong CSRF token");
            return tree::error(
                StatusCode::FORBIDDEN,
                "BadCsrfToken",
                "the request lacks this login's CSRF token",
            );
        }
    }
    login.touch();
    req.extensions_mut().insert(login);
    next.run(req).await
}

/// Text made safe to put inside HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn edits_come_only_from_the_same_origin() {
        assert!(same_origin(&headers(&[("host", "h:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "h:8080"),
            ("origin", "https://h:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "h:8080"),
            ("origin", "https://evil:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "h:8080"),
            ("origin", "https://h:8081")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "h:8080"),
            ("sec-fetch-site", "cross-site")
        ])));
    }

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
