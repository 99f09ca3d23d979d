//! How the SDK reaches an engine: the address, a bearer token, and the CA to trust for TLS.

use crate::ClientError;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Credentials and trust for a connection. The default: no token, plaintext (`http://`) or
/// TLS with the system's roots (`https://`).
#[derive(Clone, Default)]
pub struct ConnectOptions {
    token: Option<String>,
    ca_certificate: Option<Vec<u8>>,
    tls_domain: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
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
        let value = match &self.token {
            None => None,
            Some(t) => {
                let mut v: MetadataValue<Ascii> = format!("Bearer {t}").parse().map_err(|_| {
                    ClientError::Config("the token holds characters a header cannot".into())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(Credentials(value))
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

/// Adds `authorization` to every call (nothing without a token).
#[derive(Clone, Debug, Default)]
pub struct Credentials(Option<MetadataValue<Ascii>>);

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
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
}
