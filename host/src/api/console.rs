//! The web console: its page (`/console`) and assets (`/console/assets/…`), embedded
//! in the binary at build time and served with their content types, a strict
//! Content-Security-Policy (scripts and styles only from this origin, no inline
//! script) and cache validators. The console itself is a static app that signs in
//! with an API key (or the operator key) and reads the JSON API like any client.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::flows::Engine;

use super::error::ApiError;

/// What a console page may load: its own scripts, styles, images and API, nothing
/// else; no inline script, no framing, no form posts, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long a browser may keep an asset before asking again.
#[derive(Debug, Clone, Copy)]
enum Caching {
    /// Revalidated every time (the answer is a 304 while unchanged).
    Revalidate,
    /// Versioned in its path: never changes.
    Immutable,
}

/// One embedded file.
#[derive(Debug)]
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    caching: Caching,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/app.js"),
        caching: Caching::Revalidate,
    },
    Asset {
        path: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/console.css"),
        caching: Caching::Revalidate,
    },
    Asset {
        path: "vendor/uPlot-1.6.32.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/vendor/uPlot.iife.min.js"),
        caching: Caching::Immutable,
    },
    Asset {
        path: "vendor/uPlot-1.6.32.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/vendor/uPlot.min.css"),
        caching: Caching::Immutable,
    },
];

const INDEX: Asset = Asset {
    path: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../console/index.html"),
    caching: Caching::Revalidate,
};

/// Each asset's strong validator: a digest of its bytes, computed once.
static ETAGS: LazyLock<Vec<(&'static str, HeaderValue)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .chain(std::iter::once(&INDEX))
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            let tag = format!("\"{}\"", hex::encode(&digest[..12]));
            (
                asset.path,
                HeaderValue::from_str(&tag).expect("hex is a valid header value"),
            )
        })
        .collect()
});

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.path == path) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::not_found("console asset").into_response(),
    }
}

/// The asset, or 304 when the browser's copy (`If-None-Match`) is current.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = ETAGS
        .iter()
        .find(|(path, _)| *path == asset.path)
        .map(|(_, tag)| tag.clone())
        .expect("every asset has a tag");
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .any(|tag| tag.trim() == "*" || tag.trim().as_bytes() == etag.as_bytes())
        });
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(match asset.caching {
            Caching::Revalidate => "no-cache",
            Caching::Immutable => "public, max-age=31536000, immutable",
        }),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version of the vendored chart library (uPlot, MIT), part of its asset paths
    /// so browsers may keep them for good.
    const UPLOT_VERSION: &str = "1.6.32";

    #[test]
    fn the_page_names_the_assets_it_loads() {
        let page = std::str::from_utf8(INDEX.body).expect("the page is UTF-8");
        for asset in ASSETS {
            assert!(
                page.contains(&format!("/console/assets/{}", asset.path)),
                "index.html does not load {}",
                asset.path
            );
            assert!(
                !asset.path.starts_with("vendor/uPlot") || asset.path.contains(UPLOT_VERSION),
                "{} is not versioned",
                asset.path
            );
        }
        // No inline script: every <script> has a src.
        for (at, _) in page.match_indices("<script") {
            let tag = &page[at..page[at..].find('>').map_or(page.len(), |end| at + end)];
            assert!(tag.contains(" src="), "an inline script: {tag}");
        }
    }
}
