//! The admin HTTP server (ZooKeeper's AdminServer, `admin.serverPort`): `/commands`,
//! `/commands/<name>`, `/metrics` and `/ready`, and the web console at `/` ([`crate::console`]).
//! Each command takes one status snapshot from the core and renders it here.

use crate::admin::{command_index, AdminQuery, AdminReply};
use crate::console::config::AdminTransport;
use crate::console::https::{AdminPeer, SecureListener};
use crate::console::Console;
use crate::status::StatusSource;
use crate::tls::TlsAcceptor;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stopping admin server waits for its requests in progress.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A running admin server.
pub struct AdminServer {
    pub local_addr: SocketAddr,
    console: Option<Arc<Console>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `addr` and serves until [`AdminServer::stop`]: the admin commands, and the web
    /// console when `console` is given; over TLS when `tls` is.
    pub async fn start(
        addr: SocketAddr,
        source: StatusSource,
        console: Option<Arc<Console>>,
        tls: Option<(Arc<TlsAcceptor>, AdminTransport)>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let commands = Router::new()
            .route("/commands", get(|| async { html(command_index()) }))
            .route("/commands/", get(|| async { html(command_index()) }))
            .route("/commands/{name}", get(command))
            .route("/metrics", get(metrics))
            .route("/ready", get(ready))
            .with_state(source);
        let app = match console.clone() {
            Some(c) => commands.merge(c.routes(local_addr.port())),
            None => commands.merge(crate::console::disabled_routes()),
        };
        let app = app.into_make_service_with_connect_info::<AdminPeer>();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = match tls {
            None => tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                if let Err(e) = serve.await {
                    tracing::warn!(error = %e, "admin server stopped");
                }
            }),
            Some((tls, transport)) => tokio::spawn(async move {
                let listener = SecureListener::new(listener, tls, transport);
                let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                if let Err(e) = serve.await {
                    tracing::warn!(error = %e, "admin server stopped");
                }
            }),
        };
        tracing::info!(%local_addr, scheme, "admin server listening");
        Ok(AdminServer {
            local_addr,
            console,
            stop,
            task,
        })
    }

    /// Stops taking connections and waits (up to [`STOP_WAIT`]) for those open to finish;
    /// the console's live views are ended first, since browsers keep them open.
    pub async fn stop(self) {
        if let Some(c) = &self.console {
            c.stop();
        }
        let _ = self.stop.send(());
        if tokio::time::timeout(STOP_WAIT, self.task).await.is_err() {
            tracing::warn!(
                "admin server: connections still open after {STOP_WAIT:?}; stopping anyway"
            );
        }
    }
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

async fn ask(source: &StatusSource, query: AdminQuery) -> Response {
    let AdminReply {
        status,
        content_type,
        body,
    } = crate::admin::answer(source, query).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn command(State(source): State<StatusSource>, Path(name): Path<String>) -> Response {
    ask(&source, AdminQuery::Command(name)).await
}

async fn metrics(State(source): State<StatusSource>) -> Response {
    ask(&source, AdminQuery::Metrics).await
}

async fn ready(State(source): State<StatusSource>) -> Response {
    ask(&source, AdminQuery::Ready).await
}
