//! The operators' console: one page at `/ui` that finds, explains and fixes stuck runs and
//! orders. Its three files are compiled into the binary and served without authentication
//! (the page asks for a token before it reads anything); everything it shows comes from the
//! APIs behind the edge: the engine's `WorkflowService` as JSON (`/api/martix.v1.…`), the
//! order domain's REST (`/v1/orders…`), `/metrics`, and [`whoami`] here, which tells the page
//! who is signed in and which actions to offer. The page sends the token as a bearer header,
//! never as a cookie, so there is no cross-site request to forge.

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use martix_engine::edge::{Edge, Op, Principal};
use serde::Serialize;
use std::sync::Arc;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

/// The page: scripts and styles from this origin only, no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; require-trusted-types-for 'script'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the console works with.
#[derive(Clone, Debug, Default)]
pub struct ConsoleConfig {
    /// The namespace its pages show (empty: `default`).
    pub namespace: String,
    /// A tracing UI's page of one trace, `{trace_id}` where the id goes: orders link to it.
    pub trace_url: Option<String>,
}

/// Serves the console on `server`'s HTTP port.
pub fn install(server: martix_engine::Server, config: ConsoleConfig) -> martix_engine::Server {
    let edge = server.edge().clone();
    server
        .public_route(public_routes())
        .route(routes(edge, config))
}

/// The page's files, open to all; merge with `Server::public_route`.
pub fn public_routes() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // The files change with the binary: a browser asks again (cheap: a few KiB).
        (header::CACHE_CONTROL, "no-cache"),
        (HeaderName::from_static("x-frame-options"), "DENY"),
    ];
    let mut resp = body.into_response();
    for (name, value) in headers {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// What the signed-in caller is and may do in the console's namespace.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    pub subject: String,
    /// The roles the caller holds in `namespace`.
    pub roles: Vec<&'static str>,
    /// Whether the engine authenticates callers (`martix dev`: no).
    pub auth: bool,
    pub namespace: String,
    /// The actions the page offers: only those the engine would allow.
    pub can: Can,
    /// The tracing UI's page of a trace (`{trace_id}` in it), if one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
}

/// One flag per kind of action or page of the console.
#[derive(Debug, Serialize)]
pub struct Can {
    pub list: bool,
    pub history: bool,
    pub cancel: bool,
    pub terminate: bool,
    pub reset: bool,
    pub pause: bool,
    pub retry: bool,
    pub signal: bool,
    pub breakers: bool,
    pub metrics: bool,
}

struct Console {
    edge: Arc<Edge>,
    config: ConsoleConfig,
}

/// The console's own API, behind authentication (merge with `Server::route`): `GET
/// /api/console/whoami`.
pub fn routes(edge: Arc<Edge>, mut config: ConsoleConfig) -> Router {
    if config.namespace.is_empty() {
        config.namespace = "default".into();
    }
    Router::new()
        .route("/api/console/whoami", get(whoami))
        .with_state(Arc::new(Console { edge, config }))
}

async fn whoami(
    State(c): State<Arc<Console>>,
    Extension(principal): Extension<Principal>,
) -> axum::Json<WhoAmI> {
    let mut me = who(&c.edge, &principal, &c.config.namespace);
    me.trace_url = c.config.trace_url.clone();
    axum::Json(me)
}

/// [`WhoAmI`] of `principal` in `namespace`.
pub fn who(edge: &Edge, principal: &Principal, namespace: &str) -> WhoAmI {
    let may = |op: Op, ns: &str| principal.authorize(op, ns).is_ok();
    let roles = principal
        .roles_in(namespace)
        .into_iter()
        .map(|r| r.as_str())
        .collect();
    WhoAmI {
        subject: principal.subject.clone(),
        roles,
        auth: edge.requires_auth(),
        namespace: namespace.to_owned(),
        can: Can {
            list: may(Op::ListWorkflows, namespace),
            history: may(Op::GetWorkflowHistory, namespace),
            cancel: may(Op::CancelWorkflow, namespace),
            terminate: may(Op::TerminateWorkflow, namespace),
            reset: may(Op::ResetWorkflow, namespace),
            pause: may(Op::PauseWorkflow, namespace),
            retry: may(Op::RetryActivity, namespace),
            signal: may(Op::SignalWorkflow, namespace),
            breakers: may(Op::ListBreakers, namespace),
            metrics: may(Op::ReadMetrics, "*"),
        },
        trace_url: None,
    }
}
