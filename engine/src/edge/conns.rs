//! A cap on the connections a port holds: each accepted connection holds a permit until it
//! closes; one accepted past the cap is closed at once (cheaper than letting it queue
//! requests), counted and reported at most once a minute.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection holding one of its port's permits.
pub struct Counted<T> {
    io: T,
    _permit: Option<OwnedSemaphorePermit>,
}

/// The connection cap of one port.
pub struct ConnectionCap {
    port: &'static str,
    permits: Option<Arc<Semaphore>>,
    refused: AtomicU64,
    last_report: std::sync::Mutex<Option<Instant>>,
}

impl ConnectionCap {
    /// At most `max` connections on `port` (0: no cap).
    pub fn new(port: &'static str, max: usize) -> Self {
        Self {
            port,
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            refused: AtomicU64::new(0),
            last_report: std::sync::Mutex::new(None),
        }
    }

    /// `io` holding a permit, or `None` (and `io` dropped, which closes it) when the port is
    /// full.
    pub fn admit<T>(&self, io: T) -> Option<Counted<T>> {
        let permit = match &self.permits {
            None => None,
            Some(p) => match p.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    self.report(n);
                    return None;
                }
            },
        };
        Some(Counted {
            io,
            _permit: permit,
        })
    }

    /// Connections closed at accept because the port was full, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn report(&self, total: u64) {
        let mut last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
            *last = Some(now);
            tracing::warn!(
                port = self.port,
                refused = total,
                "connection cap reached (--max-connections): new connections are closed"
            );
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Counted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_port_closes_new_connections_until_one_closes() {
        let cap = ConnectionCap::new("test", 2);
        let a = cap.admit(()).unwrap();
        let _b = cap.admit(()).unwrap();
        assert!(cap.admit(()).is_none());
        assert_eq!(cap.refused(), 1);
        drop(a);
        assert!(cap.admit(()).is_some());
        let open = ConnectionCap::new("test", 0);
        let all: Vec<_> = (0..100).map(|_| open.admit(())).collect();
        assert!(all.iter().all(Option::is_some));
    }
}
