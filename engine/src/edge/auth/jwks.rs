//! Verification keys from an identity provider's JWKS URL (its `jwks_uri`), cached.
//!
//! Requests verify against the cached set and never wait for the IdP: authentication stays
//! synchronous (it runs in tonic's interceptor, before a body is decoded). A token whose
//! `kid` the set lacks is refused and starts a refetch in the background (key rotation), at
//! most once per [`RemoteJwks::min_refetch_interval`], so a flood of made-up `kid`s costs the
//! IdP one fetch per interval; once the new key is in, the caller's retry verifies. One fetch
//! runs at a time. The set is also refetched once older than [`RemoteJwks::max_age`], so a
//! key the IdP withdrew stops verifying. A failed fetch keeps the keys held (an IdP outage
//! does not lock everyone out) and is logged.
//!
//! The client is hyper's HTTP/1.1 connection over tokio-rustls (ring, the system's CA
//! certificates, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured): both are in the tree already for
//! tonic and axum, so fetching adds no crate.

use super::keys::{KeySet, key_set, pick};
use axum::body::Bytes;
use axum::http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

/// The most a JWKS document may weigh; IdPs publish a few keys, a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where to fetch keys and how often.
#[derive(Clone, Debug)]
pub struct RemoteJwks {
    /// `https://...` (plain `http://` only to a loopback address).
    pub url: String,
    /// The least time between two fetches (a success or not).
    pub min_refetch_interval: Duration,
    /// How long one fetch may take, connection included.
    pub timeout: Duration,
    /// Age after which the set is refetched in the background.
    pub max_age: Duration,
}

impl RemoteJwks {
    /// `url` with the defaults: at most one fetch per 30 s, 5 s each, refreshed hourly.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            min_refetch_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(3600),
        }
    }
}

/// Why a fetch is wanted; decides, under the fetch lock, whether it still is.
enum Want {
    /// A token names this `kid` (`None`: no `kid`) and the set lacks it.
    Kid(Option<String>),
    /// The set is older than `max_age`, or was never fetched.
    Fresh,
}

struct Attempts {
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
}

struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
    tls: Option<TlsConnector>,
}

/// A JWKS URL's keys, cached.
pub(super) struct Remote {
    config: RemoteJwks,
    target: Target,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching, so that concurrent requests share one fetch.
    attempts: tokio::sync::Mutex<Attempts>,
    fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.config.url)
            .field("keys", &self.keys().len())
            .finish()
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn target(url: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("the JWKS URL '{url}' {why}");
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| bad("has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let https = match uri.scheme_str() {
        Some("https") => true,
        // Keys fetched in the clear can be swapped on the way: anyone on the path could
        // then sign tokens. Loopback only, for tests and sidecars.
        Some("http") if is_loopback(&host) => false,
        Some("http") => {
            return Err(bad(
                "is plain http: give an https URL (http is accepted for loopback only)",
            ));
        }
        _ => return Err(bad("must start with https://")),
    };
    let tls = https.then(client_tls).transpose()?;
    Ok(Target {
        port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        authority: uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host.clone()),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        host,
        tls,
    })
}

fn client_tls() -> Result<TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no CA certificate to check the JWKS URL's TLS certificate: install the system's CA \
             certificates or point SSL_CERT_FILE at a PEM bundle{}",
            found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl Remote {
    /// Checks the URL; fetches nothing yet (see [`Remote::prefetch`]).
    pub(super) fn new(config: &RemoteJwks) -> Result<Self, String> {
        Ok(Self {
            target: target(&config.url)?,
            config: config.clone(),
            keys: RwLock::new(Arc::new(KeySet::new())),
            attempts: tokio::sync::Mutex::new(Attempts {
                last_attempt: None,
                last_success: None,
            }),
            fetches: 0.into(),
        })
    }

    /// The keys held now.
    pub(super) fn keys(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole set: it is only ever replaced, never edited.
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many fetches were attempted (for tests and logs).
    pub(super) fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// For a token whose `kid` the set lacks: starts a refetch in the background unless the
    /// last attempt is too recent. Whether a fetch is under way (just started, or running);
    /// never waits.
    pub(super) fn refetch_for(self: &Arc<Self>, kid: &Option<String>) -> bool {
        self.start(Want::Kid(kid.clone()), |_| true)
    }

    /// Starts a background refetch when the set is older than `max_age` (or was never
    /// fetched); never waits.
    pub(super) fn refresh_if_stale(self: &Arc<Self>) {
        let max_age = self.config.max_age;
        self.start(Want::Fresh, |a| {
            a.last_success.is_none_or(|t| t.elapsed() >= max_age)
        });
    }

    fn start(self: &Arc<Self>, want: Want, due: impl FnOnce(&Attempts) -> bool) -> bool {
        let Ok(attempts) = self.attempts.try_lock() else {
            return true; // a fetch is running
        };
        let allowed = attempts
            .last_attempt
            .is_none_or(|t| t.elapsed() >= self.config.min_refetch_interval);
        if !(allowed && due(&attempts)) {
            return false;
        }
        drop(attempts);
        // Without a runtime (a synchronous caller) nothing can fetch; no such caller serves.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let me = self.clone();
        rt.spawn(async move { me.refresh(want).await });
        true
    }

    async fn refresh(&self, want: Want) {
        let mut attempts = self.attempts.lock().await;
        let still_wanted = match &want {
            Want::Kid(kid) => pick(&self.keys(), kid).is_none(),
            Want::Fresh => attempts
                .last_success
                .is_none_or(|t| t.elapsed() >= self.config.max_age),
        };
        let too_soon = attempts
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.config.min_refetch_interval);
        if !still_wanted || too_soon {
            return;
        }
        attempts.last_attempt = Some(Instant::now());
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = &self.config.url;
        let fetched = match tokio::time::timeout(self.config.timeout, get(&self.target)).await {
            Ok(Ok(body)) => key_set(&body, url),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            )),
        };
        match fetched {
            Ok(set) => {
                tracing::info!(url = %url, keys = set.len(), "fetched the JWKS");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                attempts.last_success = Some(Instant::now());
            }
            Err(e) => tracing::warn!(
                url = %url,
                held = self.keys().len(),
                "cannot fetch the JWKS, keeping the keys held: {e}"
            ),
        }
    }
}

/// One GET over a fresh connection; the body of a 2xx answer.
async fn get(t: &Target) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", t.authority))?;
    let request = Request::get(t.path.as_str())
        .header(header::HOST, t.authority.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "martix")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    match &t.tls {
        None => exchange(TokioIo::new(tcp), request).await,
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| format!("'{}' is not a TLS server name: {e}", t.host))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {} failed: {e}", t.authority))?;
            exchange(TokioIo::new(stream), request).await
        }
    }
}

async fn exchange<IO>(io: IO, request: Request<Empty<Bytes>>) -> Result<Vec<u8>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let answer = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the request failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let hint = if status.is_redirection() {
                " (redirects are not followed: give the final URL)"
            } else {
                ""
            };
            return Err(format!("answered {status}{hint}"));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the answer (at most {MAX_JWKS_BYTES} bytes): {e}"))?;
        Ok(body.to_bytes().to_vec())
        // `sender` drops here, which lets `connection` finish.
    };
    // The connection future drives the exchange's I/O; run both to the end.
    let (body, _closed) = tokio::join!(answer, connection);
    body
}
