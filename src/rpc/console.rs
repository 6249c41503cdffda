//! The web console: the page, its script and style, served on the JSON-RPC listener (same port,
//! same TLS) by `GET /` and the asset paths, in front of the API-key check.
//!
//! The assets (`src/rpc/console/`, plain HTML, CSS and JavaScript modules, no build step) are
//! compiled into the binary, so the console works on a plant network without internet. They hold
//! no data: everything the page shows it asks for with the user's key (HTTP JSON-RPC with
//! `Authorization: Bearer`, the live readings over a WebSocket opened with a `session.ticket`),
//! so they are served without a key. A `GET` that upgrades to a WebSocket, every `POST` and
//! every other path pass on to the key check and jsonrpsee unchanged.
//!
//! Every answer carries a Content-Security-Policy that allows the gateway's own origin only (no
//! inline script, no frames), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and no
//! referrer; an `ETag` (a hash of the asset) lets the browser revalidate with a 304.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;

/// The policy sent with every asset: only the gateway's own origin, for scripts, styles,
/// images and connections (HTTP and its WebSocket); the page may not be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// [`CONTENT_SECURITY_POLICY`] with the request's own host named for WebSocket connections
/// too (`connect-src 'self' ws://host wss://host`): browsers before CSP level 3 do not count
/// `ws:` to the same host as `'self'`. A `Host` that is not a plain host and port is left out.
fn policy_for(host: Option<&HeaderValue>) -> HeaderValue {
    let host = host.and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    match host {
        Some(h) => HeaderValue::from_str(&CONTENT_SECURITY_POLICY.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' ws://{h} wss://{h}"),
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        None => HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    }
}

/// One compiled-in file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console, by the path it is served at (`/` is the page).
/// One of the page's scripts, served at `/<name>.js`.
macro_rules! script {
    ($name:literal) => {
        Asset {
            path: concat!("/", $name, ".js"),
            content_type: JS,
            body: include_str!(concat!("console/", $name, ".js")),
        }
    };
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_str!("console/index.html"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("console/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("console/favicon.svg"),
    },
    script!("app"),
    script!("ui"),
    script!("rpc"),
    script!("live"),
    script!("overview"),
    script!("devices"),
    script!("device"),
    script!("config"),
    script!("tools"),
];

/// The asset a request asks for: a `GET` or `HEAD` of one of the paths that is not a WebSocket
/// upgrade (`/index.html` is the page too).
fn asset_for<B>(req: &Request<B>) -> Option<(usize, &'static Asset)> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    if req.headers().contains_key(header::UPGRADE) {
        return None;
    }
    let path = match req.uri().path() {
        "/index.html" => "/",
        p => p,
    };
    ASSETS.iter().enumerate().find(|(_, a)| a.path == path)
}

/// Total size of the compiled-in assets (what the console adds to the binary, besides code).
pub fn assets_size() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// The `ETag` of each asset: FNV-1a of its bytes, computed once.
fn etags() -> &'static [HeaderValue] {
    static TAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in a.body.bytes() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                HeaderValue::from_str(&format!("\"{h:016x}\"")).expect("hex is a valid header")
            })
            .collect()
    })
}

/// The answer for asset `i` (`body`: false for `HEAD` and for a matching `If-None-Match`).
fn respond<B>(req: &Request<B>, i: usize, asset: &Asset) -> Response<HttpBody> {
    let etag = &etags()[i];
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().trim_start_matches("W/") == etag.to_str().unwrap_or_default());
    let body = if fresh || req.method() == Method::HEAD {
        HttpBody::empty()
    } else {
        HttpBody::from(asset.body)
    };
    let mut r = Response::new(body);
    *r.status_mut() = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        policy_for(req.headers().get(header::HOST)),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The tower layer of [`Console`]; it goes in front of the API-key check.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleLayer;

impl<S> tower::Layer<S> for ConsoleLayer {
    type Service = Console<S>;
    fn layer(&self, inner: S) -> Console<S> {
        Console { inner }
    }
}

/// Answers the console's paths; passes everything else on.
#[derive(Clone, Debug)]
pub struct Console<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Console<S>
where
    S: tower::Service<Request<B>, Response = Response<HttpBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match asset_for(&req) {
            Some((i, asset)) => {
                let r = respond(&req, i, asset);
                Box::pin(async move { Ok(r) })
            }
            None => Box::pin(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn the_page_and_its_assets_are_found_and_nothing_else() {
        assert_eq!(asset_for(&get("/")).unwrap().1.content_type, HTML);
        assert_eq!(asset_for(&get("/index.html")).unwrap().1.path, "/");
        assert_eq!(asset_for(&get("/app.js")).unwrap().1.content_type, JS);
        assert!(asset_for(&get("/metrics")).is_none());
        assert!(asset_for(&get("/nope.js")).is_none());
        let post = Request::post("/").body(()).unwrap();
        assert!(asset_for(&post).is_none());
        let ws = Request::get("/?ticket=x")
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(
            asset_for(&ws).is_none(),
            "a WebSocket handshake is the RPC's"
        );
    }

    #[test]
    fn every_module_the_scripts_import_is_served() {
        for a in ASSETS {
            for line in a.body.lines() {
                let Some(rest) = line.split(" from './").nth(1) else {
                    continue;
                };
                let file = rest.split('\'').next().unwrap();
                let path = format!("/{file}");
                assert!(
                    ASSETS.iter().any(|b| b.path == path),
                    "{} imports {path}, which is not served",
                    a.path
                );
            }
        }
    }

    #[test]
    fn answers_carry_the_policy_and_revalidate() {
        let (i, a) = asset_for(&get("/")).unwrap();
        let r = respond(&get("/"), i, a);
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        let tag = h[header::ETAG].clone();
        let again = Request::get("/")
            .header(header::IF_NONE_MATCH, tag)
            .body(())
            .unwrap();
        assert_eq!(respond(&again, i, a).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn the_policy_names_the_hosts_websocket_and_nothing_odd() {
        let p = policy_for(Some(&HeaderValue::from_static("10.0.0.5:8580")));
        assert!(p
            .to_str()
            .unwrap()
            .contains("connect-src 'self' ws://10.0.0.5:8580 wss://10.0.0.5:8580;"));
        let odd = HeaderValue::from_static("evil; script-src *");
        assert_eq!(policy_for(Some(&odd)), CONTENT_SECURITY_POLICY);
        assert_eq!(policy_for(None), CONTENT_SECURITY_POLICY);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = ASSETS[0].body;
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("style="), "inline style");
        assert!(!page.contains("onclick"), "inline handler");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
