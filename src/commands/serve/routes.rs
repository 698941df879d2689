//! The HTTP side of `fkp serve`: the page and its assets, the JSON API under
//! `/api/` (docs/serve.md), the event stream, and the files of `reports/`.
//! Every request passes [`guard`] first (the token, the Host header).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::curves::{self, Curves};
use super::faces::{self, FaceImages};
use super::files;
use super::hub::{Hub, pipeline_indices};
use super::overview::Overview;
use super::page;
use crate::commands::compare::compare_picked;
use crate::stages::StageKind;

/// Event streams open at once; more are refused (503) so memory stays bounded.
const MAX_STREAMS: usize = 1024;
/// Comparisons kept (each some kB of JSON).
const KEEP_COMPARISONS: usize = 32;

/// What makes two comparisons the same: the status they were read from, the
/// pipelines and the baseline.
pub type CompareKey = (u64, Option<String>, Option<String>);

/// What every handler shares.
pub struct Server {
    pub hub: Arc<Hub>,
    /// Required on every request when set (`?token=`, `Authorization: Bearer`
    /// or the cookie the page gets).
    pub token: Option<String>,
    /// The Host headers a loopback server answers (a page elsewhere that
    /// resolves its own name to 127.0.0.1 gets 403: DNS rebinding).
    pub hosts: Option<Vec<String>>,
    pub faces: FaceImages,
    pub streams: AtomicUsize,
    /// Comparisons already made, by status generation and request: a cache
    /// entry never changes, so one is valid until the status does.
    pub compared: Mutex<Vec<(CompareKey, Bytes)>>,
    /// Becomes true when the server stops: event streams end.
    pub stopping: watch::Receiver<bool>,
}

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .route("/api/status", get(status))
        .route("/api/overview", get(overview))
        .route("/api/compare", get(compare))
        .route("/api/curves", get(curves))
        .route("/api/faces", get(faces))
        .route("/api/face.png", get(face_png))
        .route("/api/reports", get(report_files))
        .route("/api/events", get(events))
        .route("/reports/{*path}", get(report_file))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
        .layer(middleware::from_fn_with_state(server.clone(), guard))
        .with_state(server)
}

const TOKEN_COOKIE: &str = "fkp_token";

/// Refuses requests without the token (when there is one) or for another
/// host, and adds the headers every answer carries.
async fn guard(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Some(hosts) = &server.hosts {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)) {
            return error(StatusCode::FORBIDDEN, "this server answers only its own address");
        }
    }
    let mut set_cookie = None;
    if let Some(token) = &server.token {
        let from_query = query_token(request.uri().query());
        let given = from_query
            .clone()
            .or_else(|| bearer(headers))
            .or_else(|| cookie(headers, TOKEN_COOKIE));
        if !given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
            return error(
                StatusCode::UNAUTHORIZED,
                "this server needs its token: ?token=TOKEN",
            );
        }
        // The page's own requests (pictures, the event stream) then carry it.
        if from_query.is_some() {
            set_cookie = Some(format!(
                "{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            ));
        }
    }
    let mut response = as_json_error(next.run(request).await).await;
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
        );
    }
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// A request the router or an extractor refused (a missing query field, a bad
/// number) answers in plain text: the API answers every error as JSON.
async fn as_json_error(response: Response) -> Response {
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(response.status().is_client_error() && plain) {
        return response;
    }
    let code = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    error(code, String::from_utf8_lossy(&body).trim())
}

fn query_token(query: Option<&str>) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenOnly {
        token: Option<String>,
    }
    let query: Query<TokenOnly> = Query::try_from_uri(&format!("/?{}", query?).parse().ok()?).ok()?;
    query.0.token
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_string)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(code: StatusCode, message: &str) -> Response {
    json_with(code, &ErrorBody { error: message })
}

fn json<T: Serialize>(value: &T) -> Response {
    json_with(StatusCode::OK, value)
}

fn json_with<T: Serialize>(code: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (code, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Runs file-reading work off the async threads.
async fn blocking<F>(work: F) -> Response
where
    F: FnOnce() -> Response + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))
}

async fn index() -> Response {
    page::index()
}

async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    page::asset(&name).unwrap_or_else(|| error(StatusCode::NOT_FOUND, "no such asset"))
}

async fn status(State(server): State<Arc<Server>>) -> Response {
    let view = server.hub.view();
    match &view.status {
        Some(status) => json(status),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no pipeline loads: see /api/overview's problems",
        ),
    }
}

async fn overview(State(server): State<Arc<Server>>) -> Response {
    blocking(move || json(&Overview::of(&server.hub))).await
}

#[derive(Deserialize)]
struct CompareQuery {
    /// Comma-separated pipeline names; absent: every evaluated pipeline.
    pipelines: Option<String>,
    baseline: Option<String>,
}

async fn compare(State(server): State<Arc<Server>>, Query(query): Query<CompareQuery>) -> Response {
    blocking(move || {
        let view = server.hub.view();
        let key: CompareKey = (view.generation, query.pipelines.clone(), query.baseline.clone());
        let known = server.compared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, json)) = known.iter().find(|(k, _)| *k == key) {
            return compare_response(json.clone());
        }
        drop(known);
        let json = match compare_now(&server, &view, query) {
            Ok(json) => Bytes::from(json),
            Err((code, message)) => return error(code, &message),
        };
        let mut known = server.compared.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(0, (key, json.clone()));
        known.truncate(KEEP_COMPARISONS);
        compare_response(json)
    })
    .await
}

fn compare_response(json: Bytes) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// The comparison as `fkp compare --format json` prints it, or the error's status and message.
fn compare_now(
    server: &Server,
    view: &super::hub::View,
    query: CompareQuery,
) -> Result<String, (StatusCode, String)> {
    let (Some(graph), Some(status)) = (view.graph.as_deref(), view.status.as_ref()) else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "no pipeline loads".to_string()));
    };
    let picked = match &query.pipelines {
        Some(list) => {
            let names: BTreeSet<&str> = list.split(',').filter(|n| !n.is_empty()).collect();
            let picked = pipeline_indices(graph, &names);
            if let Some(unknown) = names
                .iter()
                .find(|name| !picked.iter().any(|&p| graph.pipelines[p].name == **name))
            {
                return Err((StatusCode::NOT_FOUND, format!("no pipeline `{unknown}`")));
            }
            picked
        }
        None => (0..graph.pipelines.len())
            .filter(|&p| graph.pipelines[p].stage(StageKind::Evaluate).is_some())
            .collect(),
    };
    if let Some(baseline) = &query.baseline
        && !picked.iter().any(|&p| graph.pipelines[p].name == *baseline)
    {
        return Err((
            StatusCode::NOT_FOUND,
            format!("the baseline `{baseline}` is not among the pipelines compared"),
        ));
    }
    compare_picked(graph, status, &server.hub.workspace, &picked, query.baseline)
        .map(|result| result.to_json())
        .map_err(|e| (StatusCode::BAD_REQUEST, crate::text::error_chain(&e)))
}

#[derive(Deserialize)]
struct PipelineQuery {
    pipeline: String,
}

async fn curves(State(server): State<Arc<Server>>, Query(query): Query<PipelineQuery>) -> Response {
    blocking(move || match Curves::of(&server.hub, &query.pipeline) {
        Some(curves) => json(&curves),
        None => no_pipeline(&query.pipeline),
    })
    .await
}

async fn faces(State(server): State<Arc<Server>>, Query(query): Query<PipelineQuery>) -> Response {
    blocking(move || {
        let view = server.hub.view();
        let Some(status) = &view.status else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "no pipeline loads");
        };
        match faces::faces(status, &query.pipeline) {
            Ok(faces) => json(&faces),
            Err(e) => faces_error(&e),
        }
    })
    .await
}

fn no_pipeline(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, &format!("no pipeline `{name}`"))
}

fn faces_error(e: &faces::FacesError) -> Response {
    let code = match e.is_not_found() {
        true => StatusCode::NOT_FOUND,
        false => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, &crate::text::error_chain(e))
}

#[derive(Deserialize)]
struct FaceQuery {
    pipeline: String,
    row: usize,
}

async fn face_png(State(server): State<Arc<Server>>, Query(query): Query<FaceQuery>) -> Response {
    blocking(move || {
        let view = server.hub.view();
        let Some(status) = &view.status else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "no pipeline loads");
        };
        match server.faces.png(status, &query.pipeline, query.row) {
            Ok(png) => (
                [
                    (header::CONTENT_TYPE, "image/png"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                png,
            )
                .into_response(),
            Err(e) => faces_error(&e),
        }
    })
    .await
}

async fn report_files(State(server): State<Arc<Server>>, Query(query): Query<PipelineQuery>) -> Response {
    blocking(move || match curves::report_files(&server.hub, &query.pipeline) {
        Some(list) => json(&list),
        None => no_pipeline(&query.pipeline),
    })
    .await
}

async fn report_file(State(server): State<Arc<Server>>, UrlPath(path): UrlPath<String>) -> Response {
    blocking(move || {
        let Some(found) = files::resolve(&server.hub.workspace.reports_dir, &path) else {
            return error(StatusCode::NOT_FOUND, "no such file under reports/");
        };
        match std::fs::read(&found) {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, files::content_type(&found)),
                    (header::CACHE_CONTROL, "no-cache"),
                    // A report page runs no script and reaches nothing of the
                    // server's: its own origin, no scripts, its pictures inline.
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'",
                    ),
                ],
                Body::from(bytes),
            )
                .into_response(),
            Err(_) => error(StatusCode::NOT_FOUND, "no such file under reports/"),
        }
    })
    .await
}

/// Releases a stream's place when the stream ends.
struct StreamSlot(Arc<Server>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Stream {
    events: broadcast::Receiver<Arc<super::hub::Event>>,
    stopping: watch::Receiver<bool>,
    hello: Option<SseEvent>,
    _slot: StreamSlot,
}

async fn events(State(server): State<Arc<Server>>) -> Response {
    if server.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        server.streams.fetch_sub(1, Ordering::SeqCst);
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many event streams open");
    }
    let generation = server.hub.view().generation;
    let stream = Stream {
        events: server.hub.events.subscribe(),
        stopping: server.stopping.clone(),
        hello: Some(
            SseEvent::default()
                .event("hello")
                .data(serde_json::json!({ "generation": generation }).to_string()),
        ),
        _slot: StreamSlot(server.clone()),
    };
    let events = futures_util::stream::unfold(stream, |mut stream| async move {
        if let Some(hello) = stream.hello.take() {
            return Some((Ok::<_, Infallible>(hello), stream));
        }
        if *stream.stopping.borrow() {
            return None;
        }
        let event = tokio::select! {
            received = stream.events.recv() => match received {
                Ok(event) => SseEvent::default().event(event.name).data(&event.data),
                // Fell behind: the page reloads what it shows.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    SseEvent::default().event("lagged").data(missed.to_string())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = stream.stopping.changed() => return None,
        };
        Some((Ok(event), stream))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
