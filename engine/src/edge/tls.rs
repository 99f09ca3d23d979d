//! TLS for both ports from one certificate and key (PEM files), with rustls (ring).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server's certificate chain and private key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
}

impl TlsFiles {
    /// The gRPC port's TLS settings.
    pub fn grpc(&self) -> Result<tonic::transport::ServerTlsConfig, String> {
        self.rustls()?; // the same checks, the same messages, for both ports
        Ok(
            tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(
                    read(&self.cert, "certificate")?,
                    read(&self.key, "key")?,
                ),
            ),
        )
    }

    /// The HTTP port's TLS acceptor.
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        let mut config = self.rustls()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn rustls(&self) -> Result<rustls::ServerConfig, String> {
        let pem = read(&self.cert, "certificate")?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "key")?)
            .map_err(|e| format!("{}: not a PEM private key: {e}", self.key.display()))?;
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key do not fit: {e}"))
    }
}

/// A connection of the HTTP port, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The address of an HTTP peer (axum `ConnectInfo`).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// The HTTP port's listener: accepts TCP and, with TLS on, completes handshakes in their
/// own tasks so one slow client cannot hold up the others.
pub struct EdgeListener {
    ready: mpsc::Receiver<(Box<dyn Stream>, SocketAddr)>,
    local: SocketAddr,
    _accept: tokio::task::JoinHandle<()>,
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond are closed at once.
const MAX_HANDSHAKES: usize = 256;

impl EdgeListener {
    /// Accepts on `tcp`, at most as many connections at once as `cap` lets through.
    pub fn new(
        tcp: TcpListener,
        tls: Option<TlsAcceptor>,
        cap: Arc<super::conns::ConnectionCap>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let accept = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some(stream) = cap.admit(stream) else {
                    continue;
                };
                match &tls {
                    None => {
                        if tx
                            .send((Box::new(stream) as Box<dyn Stream>, peer))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, "too many TLS handshakes in progress; closed");
                            continue;
                        };
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            let _permit = permit;
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => {
                                    let _ = tx.send((Box::new(s) as Box<dyn Stream>, peer)).await;
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        Ok(Self {
            ready,
            local,
            _accept: accept,
        })
    }
}

impl Drop for EdgeListener {
    fn drop(&mut self) {
        self._accept.abort();
    }
}

impl axum::serve::Listener for EdgeListener {
    type Io = Box<dyn Stream>;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some((io, peer)) => (io, PeerAddr(peer)),
            // The accept task ended (it only does when this listener drops): wait forever,
            // graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(PeerAddr(self.local))
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, EdgeListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, EdgeListener>) -> Self {
        *stream.remote_addr()
    }
}
