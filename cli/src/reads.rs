//! `martix bench --order-reads`: `GET /v1/orders/{id}` under load, closed loop over keep-alive
//! HTTP/1.1 connections, each caller asking for the orders of the warm-up in turn. The figure
//! that decides whether a read cache in front of the order view pays (docs/performance.md,
//! "Order reads").

use crate::bench::Latencies;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One level of reads.
#[derive(Debug, serde::Serialize)]
pub(crate) struct ReadLevel {
    pub concurrency: usize,
    pub reads: u64,
    pub errors: u64,
    pub reads_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub process_cpu_ms_per_read: f64,
    pub postgres_cpu_ms_per_read: f64,
}

/// Reads `ids` at each of `levels` callers for `duration` each.
pub(crate) async fn run(
    http: SocketAddr,
    ids: &[String],
    levels: &[usize],
    duration: Duration,
) -> Result<Vec<ReadLevel>> {
    if ids.is_empty() {
        bail!("no orders to read");
    }
    let mut out = Vec::new();
    for &c in levels {
        let cpu = crate::bench::cpu_now();
        let started = Instant::now();
        let callers: Vec<_> = (0..c)
            .map(|k| {
                let ids: Vec<String> = ids.to_vec();
                tokio::spawn(async move { caller(http, &ids, k, started + duration).await })
            })
            .collect();
        let mut all = Latencies::new();
        let (mut reads, mut errors) = (0, 0);
        for caller in callers {
            let (latencies, n, e) = caller.await??;
            all.merge(&latencies);
            reads += n;
            errors += e;
        }
        let seconds = started.elapsed().as_secs_f64();
        let (process_ms, postgres_ms) = crate::bench::cpu_since(&cpu);
        out.push(ReadLevel {
            concurrency: c,
            reads,
            errors,
            reads_per_second: reads as f64 / seconds,
            p50_ms: all.ms(0.5),
            p99_ms: all.ms(0.99),
            max_ms: all.max_ms(),
            process_cpu_ms_per_read: process_ms / reads.max(1) as f64,
            postgres_cpu_ms_per_read: postgres_ms / reads.max(1) as f64,
        });
    }
    Ok(out)
}

/// One caller: its own connection, the ids in turn from its own offset, until `until`.
async fn caller(
    http: SocketAddr,
    ids: &[String],
    offset: usize,
    until: Instant,
) -> Result<(Latencies, u64, u64)> {
    let stream = TcpStream::connect(http).await.context("connect")?;
    stream.set_nodelay(true)?;
    let mut conn = BufReader::new(stream);
    let mut latencies = Latencies::new();
    let (mut n, mut errors) = (0u64, 0u64);
    let mut i = offset * 7919;
    let mut body = Vec::new();
    while Instant::now() < until {
        let id = &ids[i % ids.len()];
        i += 1;
        let t = Instant::now();
        conn.get_mut()
            .write_all(format!("GET /v1/orders/{id} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
            .await?;
        let status = read_response(&mut conn, &mut body).await?;
        latencies.record(t.elapsed());
        if status == 200 {
            n += 1;
        } else {
            errors += 1;
        }
    }
    Ok((latencies, n, errors))
}

/// Reads one response (status line, headers, a `Content-Length` body) and returns its status.
async fn read_response(conn: &mut BufReader<TcpStream>, body: &mut Vec<u8>) -> Result<u16> {
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    body.resize(length, 0);
    conn.read_exact(body).await?;
    Ok(status)
}

/// The table of the levels.
pub(crate) fn print(backend: &str, levels: &[ReadLevel]) {
    println!("GET /v1/orders/{{id}} on {backend}; engine in this process, keep-alive HTTP/1.1");
    println!(
        "{:>4} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>12} {:>12}",
        "C",
        "reads",
        "errors",
        "reads/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu ms/read",
        "pg ms/read"
    );
    for l in levels {
        println!(
            "{:>4} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>12.3} {:>12.3}",
            l.concurrency,
            l.reads,
            l.errors,
            l.reads_per_second,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            l.process_cpu_ms_per_read,
            l.postgres_cpu_ms_per_read
        );
    }
}
