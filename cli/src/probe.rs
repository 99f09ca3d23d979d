//! `martix probe`: one HTTP/1.1 GET to a running engine's health port, for container health
//! checks where the image has no shell and no curl (deploy/Dockerfile). Ready is a 200 within
//! two seconds; anything else is a one-line error and exit 1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Asks `http_addr` for `path`; Ok if it answered 200.
pub(crate) async fn probe(http_addr: SocketAddr, path: &str) -> Result<()> {
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        bail!("--path must be an absolute path such as /readyz, not {path:?}");
    }
    let target = dialable(http_addr);
    let status = tokio::time::timeout(Duration::from_secs(2), get(target, path))
        .await
        .with_context(|| format!("http://{target}{path} did not answer within 2 s"))?
        .with_context(|| format!("cannot ask http://{target}{path}"))?;
    if status != 200 {
        bail!("http://{target}{path} answered {status}: not ready (the engine's log says why)");
    }
    Ok(())
}

/// The address to connect to: a listener on every address (`0.0.0.0`, `::`) is asked on
/// loopback.
fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The status code of `GET path` (the body is not read past the status line).
async fn get(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head).context("the answer is not HTTP")
}

/// The code of an HTTP/1.x status line (`HTTP/1.1 200 OK`).
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_gives_its_code_and_anything_else_none() {
        assert_eq!(
            status_code(b"HTTP/1.1 200 OK\r\ncontent-length: 3"),
            Some(200)
        );
        assert_eq!(
            status_code(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn a_listener_on_every_address_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8233".parse().unwrap();
        assert_eq!(dialable(any), "127.0.0.1:8233".parse().unwrap());
        let any6: SocketAddr = "[::]:8233".parse().unwrap();
        assert_eq!(dialable(any6), "[::1]:8233".parse().unwrap());
        let named: SocketAddr = "10.0.0.7:8233".parse().unwrap();
        assert_eq!(dialable(named), named);
    }
}
