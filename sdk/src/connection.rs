//! How the SDK reaches an engine: the address, a bearer token, and the CA to trust for TLS.

use crate::ClientError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Credentials and trust for a connection. The default: no token, plaintext (`http://`) or
/// TLS with the system's roots (`https://`).
#[derive(Clone, Default)]
pub struct ConnectOptions {
    token: Option<String>,
    minter: Option<Arc<Minter>>,
    ca_certificate: Option<Vec<u8>>,
    tls_domain: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("minted_token", &self.minter.is_some())
            .field("ca_certificate", &self.ca_certificate.is_some())
            .field("tls_domain", &self.tls_domain)
            .finish()
    }
}

impl ConnectOptions {
    /// Sends `token` as `authorization: Bearer <token>` with every call.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Makes the token with `mint` instead of taking a fixed one: on the first call and again
    /// on the first call after it is `renew_every` old, so a process that runs for months
    /// never sends an expired token (`martix worker` signs its own this way when it holds
    /// the engine's HS256 secret). A token set with [`Self::token`] wins. When `mint` fails
    /// the call fails `UNAUTHENTICATED` with its reason, and the next call tries again.
    pub fn token_from(
        mut self,
        mint: impl Fn() -> Result<String, String> + Send + Sync + 'static,
        renew_every: Duration,
    ) -> Self {
        self.minter = Some(Arc::new(Minter {
            mint: Box::new(mint),
            renew_every,
            current: Mutex::new(None),
        }));
        self
    }

    /// Trusts the CA certificate(s) in this PEM for the engine's TLS certificate.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    /// Checks the engine's certificate against this name instead of the address's host.
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.tls_domain = Some(domain.into());
        self
    }

    /// From the environment: `MARTIX_TOKEN` and `MARTIX_CA_CERT` (a PEM file's path).
    pub fn from_env() -> Result<Self, ClientError> {
        let mut o = Self::default();
        if let Ok(t) = std::env::var("MARTIX_TOKEN")
            && !t.is_empty()
        {
            o = o.token(t);
        }
        if let Ok(path) = std::env::var("MARTIX_CA_CERT")
            && !path.is_empty()
        {
            let pem = std::fs::read(&path).map_err(|e| {
                ClientError::Config(format!("cannot read MARTIX_CA_CERT {path}: {e}"))
            })?;
            o = o.ca_certificate_pem(pem);
        }
        Ok(o)
    }

    /// The endpoint for `address`: TLS for `https://` (trusting the given CA, else the
    /// system's roots); a CA or TLS domain with a plaintext address is refused, so a token
    /// meant for TLS is never sent in the clear.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, ClientError> {
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "the engine's address '{address}' must start with http:// or https:// \
                 (like http://127.0.0.1:7233)"
            )));
        }
        let mut endpoint = Endpoint::from_shared(address.to_owned()).map_err(|e| {
            ClientError::Config(format!("the engine's address '{address}' is invalid: {e}"))
        })?;
        let tls_asked = self.ca_certificate.is_some() || self.tls_domain.is_some();
        if tls_asked && !address.starts_with("https://") {
            return Err(ClientError::Config(format!(
                "a CA certificate or TLS domain is given but {address} is not https://"
            )));
        }
        if address.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca_certificate {
                Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                None => tls.with_native_roots(),
            };
            if let Some(d) = &self.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::Config(format!("TLS settings for {address}: {e}")))?;
        }
        Ok(endpoint)
    }

    /// The interceptor that adds the token.
    pub fn credentials(&self) -> Result<Credentials, ClientError> {
        let source = match (&self.token, &self.minter) {
            (Some(t), _) => Source::Fixed(bearer(t).map_err(ClientError::Config)?),
            (None, Some(m)) => Source::Minted(m.clone()),
            (None, None) => Source::None,
        };
        Ok(Credentials(source))
    }

    /// Connects now; [`ClientError::Unreachable`] when nothing answers at `address`.
    pub async fn connect(&self, address: &str) -> Result<Transport, ClientError> {
        let channel =
            self.endpoint(address)?
                .connect()
                .await
                .map_err(|source| ClientError::Unreachable {
                    address: address.to_owned(),
                    source,
                })?;
        Ok(InterceptedService::new(channel, self.credentials()?))
    }

    /// Connects on first use, and reconnects after failures.
    pub fn connect_lazy(&self, address: &str) -> Result<Transport, ClientError> {
        let channel = self.endpoint(address)?.connect_lazy();
        Ok(InterceptedService::new(channel, self.credentials()?))
    }
}

/// `Bearer <token>` as a header value that is never logged.
fn bearer(token: &str) -> Result<MetadataValue<Ascii>, String> {
    let mut v: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token holds characters a header cannot".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
}

/// Tokens made on demand, each used until it is `renew_every` old.
struct Minter {
    mint: Box<dyn Fn() -> Result<String, String> + Send + Sync>,
    renew_every: Duration,
    current: Mutex<Option<(Instant, MetadataValue<Ascii>)>>,
}

impl Minter {
    /// The header value to send now, made anew once the last one is old.
    fn value(&self) -> Result<MetadataValue<Ascii>, String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((made, v)) = current.as_ref()
            && made.elapsed() < self.renew_every
        {
            return Ok(v.clone());
        }
        let v = bearer(&(self.mint)()?)?;
        *current = Some((Instant::now(), v.clone()));
        Ok(v)
    }
}

#[derive(Clone, Default)]
enum Source {
    #[default]
    None,
    Fixed(MetadataValue<Ascii>),
    Minted(Arc<Minter>),
}

/// Adds `authorization` to every call (nothing without a token).
#[derive(Clone, Default)]
pub struct Credentials(Source);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Source::None => "none",
            Source::Fixed(_) => "fixed token",
            Source::Minted(_) => "minted tokens",
        };
        f.debug_tuple("Credentials").field(&kind).finish()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = match &self.0 {
            Source::None => None,
            Source::Fixed(v) => Some(v.clone()),
            Source::Minted(m) => Some(m.value().map_err(|e| {
                tonic::Status::unauthenticated(format!("cannot make a token: {e}"))
            })?),
        };
        if let Some(v) = value {
            req.metadata_mut().insert("authorization", v);
        }
        // The caller's trace continues on the engine (nothing when tracing is off).
        let parent = martix_proto::trace::current();
        if !parent.is_empty()
            && let Ok(v) = parent.parse()
        {
            req.metadata_mut()
                .insert(martix_proto::trace::TRACEPARENT, v);
        }
        Ok(req)
    }
}

/// A channel to the engine with credentials attached.
pub type Transport = InterceptedService<Channel, Credentials>;

/// A channel without credentials (authentication off).
pub fn plain(channel: Channel) -> Transport {
    InterceptedService::new(channel, Credentials::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_with_a_plaintext_address_is_refused() {
        let o =
            ConnectOptions::default().ca_certificate_pem(b"-----BEGIN CERTIFICATE-----".to_vec());
        assert!(matches!(
            o.endpoint("http://127.0.0.1:7233"),
            Err(ClientError::Config(_))
        ));
        assert!(
            ConnectOptions::default()
                .endpoint("http://127.0.0.1:7233")
                .is_ok()
        );
    }

    #[test]
    fn an_address_without_a_scheme_is_refused_naming_it() {
        let e = ConnectOptions::default()
            .endpoint("127.0.0.1:7233")
            .unwrap_err();
        assert!(matches!(e, ClientError::Config(_)));
        assert!(e.to_string().contains("'127.0.0.1:7233'"), "{e}");
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_with_the_address_and_why() {
        // A port just freed: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("http://127.0.0.1:{port}");
        let Err(e) = ConnectOptions::default().connect(&address).await else {
            panic!("connected to a closed port");
        };
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("cannot reach the engine at {address}: connection refused")
        );
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let o = ConnectOptions::default().token("very-secret-token");
        assert!(!format!("{o:?}").contains("very-secret-token"));
    }

    use std::sync::atomic::{AtomicU32, Ordering};

    fn authorization(c: &mut Credentials) -> Result<String, tonic::Status> {
        let req = c.call(tonic::Request::new(()))?;
        Ok(req
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default())
    }

    #[test]
    fn a_minted_token_is_made_once_and_again_once_it_is_old() {
        let made = Arc::new(AtomicU32::new(0));
        let counter = made.clone();
        let options = ConnectOptions::default().token_from(
            move || Ok(format!("t{}", counter.fetch_add(1, Ordering::SeqCst))),
            Duration::from_millis(50),
        );
        let mut c = options.credentials().unwrap();
        assert_eq!(authorization(&mut c).unwrap(), "Bearer t0");
        assert_eq!(authorization(&mut c.clone()).unwrap(), "Bearer t0");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(authorization(&mut c).unwrap(), "Bearer t1");
        assert_eq!(made.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_fixed_token_wins_and_a_failed_mint_fails_the_call_unauthenticated() {
        let fixed = ConnectOptions::default()
            .token_from(|| Ok("minted".into()), Duration::from_secs(60))
            .token("fixed");
        assert_eq!(
            authorization(&mut fixed.credentials().unwrap()).unwrap(),
            "Bearer fixed"
        );
        let failing =
            ConnectOptions::default().token_from(|| Err("no key".into()), Duration::from_secs(60));
        let status = authorization(&mut failing.credentials().unwrap()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "cannot make a token: no key");
        let none = ConnectOptions::default();
        assert_eq!(authorization(&mut none.credentials().unwrap()).unwrap(), "");
    }
}
