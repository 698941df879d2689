//! The page, built into the binary: no network, no build step. `page/` holds
//! its HTML, script and style, and `page/vendor/` uPlot 1.6.32 (MIT, see
//! `uPlot-LICENSE`; `scripts/vendor-uplot.sh` fetches and checks it).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("page/style.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("page/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("page/vendor/uPlot.min.css"),
    ),
];

const INDEX: &[u8] = include_bytes!("page/index.html");

pub fn index() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub fn asset(name: &str) -> Option<Response> {
    let (_, content_type, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    Some(
        (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
    )
}

/// Every byte the page loads.
#[cfg(test)]
pub fn total_bytes() -> usize {
    INDEX.len() + ASSETS.iter().map(|(_, _, bytes)| bytes.len()).sum::<usize>()
}
