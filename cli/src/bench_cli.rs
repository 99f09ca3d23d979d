//! `martix bench`: its arguments, and the store, engine and workers it runs the reference
//! workload on (the workload and its report are `bench`'s).

use crate::{bench, orders, redact, scale, soak};
use anyhow::{Context, Result};
use clap::Args;
use martix_engine::{Engine, EngineConfig, Server, ServerConfig};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// The store: `sqlite` (a temporary file) or a postgres:// URL.
    #[arg(long, default_value = "sqlite")]
    embedded: String,
    /// Closed-loop concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Open-loop rates (sagas started per second) to run instead of the closed loop.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Sagas per level (or until --max-time).
    #[arg(long, default_value_t = 2000)]
    sagas: u64,
    /// Longest time per level.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    max_time: Duration,
    /// Sagas run before measuring.
    #[arg(long, default_value_t = 50)]
    warmup: u64,
    /// Which adapters the activities use.
    #[arg(long, value_enum, default_value = "noop")]
    adapters: orders::Adapters,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    output: String,
    /// Scale checks to run instead of the levels: `history` (a run of about 10,000 events
    /// replayed by a fresh worker), `queues` (10 task queues x 8 workers), `timers` (many
    /// workflows waiting on timers: memory and a new saga's latency).
    #[arg(long, value_delimiter = ',')]
    scale: Vec<String>,
    /// Workflows waiting on timers for `--scale timers`.
    #[arg(long, default_value_t = 100_000)]
    scale_timers: u64,
    /// Activities of the long run of `--scale history` (about 4 events each).
    #[arg(long, default_value_t = 2_500)]
    scale_activities: u32,
    /// Run this many sagas at the first concurrency level instead of the levels, printing the
    /// throughput and the engine's table sizes each minute (with `--soak-retention`).
    #[arg(long, value_name = "SAGAS")]
    soak: Option<u64>,
    /// Place --sagas orders, then read them (`GET /v1/orders/{id}`, the REST gateway) this long
    /// at each concurrency level instead of the saga levels.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    order_reads: Option<Duration>,
    /// With --order-reads: cache the order views in this Redis (`--order-cache-url` of
    /// `martix server`).
    #[arg(long, value_name = "URL", requires = "order_reads")]
    order_cache_url: Option<String>,
    /// How long the soak keeps closed runs and sent events.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    soak_retention: Duration,
}

pub(crate) async fn bench(args: BenchArgs) -> Result<()> {
    let temp = std::env::temp_dir().join(format!("martix-bench-{}.db", std::process::id()));
    let (url, label) = if args.embedded == "sqlite" {
        (
            format!("sqlite://{}", temp.display()),
            "SQLite (WAL, synchronous=FULL)".to_owned(),
        )
    } else {
        (
            args.embedded.clone(),
            "PostgreSQL (synchronous_commit=on)".to_owned(),
        )
    };
    let store = martix_engine::store::connect(&url)
        .await
        .with_context(|| format!("opening {}", redact(&url)))?;
    let mut config = EngineConfig::default();
    let mut events = martix_engine::events::EventsConfig::default();
    if args.soak.is_some() {
        config.retention_interval = Duration::from_secs(5);
        events.retention = args.soak_retention;
    }
    let engine = Engine::new(store, config);
    let server = Server::bind(
        engine.clone(),
        &ServerConfig {
            grpc_addr: "127.0.0.1:0".parse()?,
            http_addr: "127.0.0.1:0".parse()?,
            metrics_addr: None,
            shutdown_grace: Duration::from_secs(2),
            edge: martix_engine::edge::EdgeConfig {
                auth: None,
                limits: martix_engine::edge::LimitsConfig::unlimited(),
            },
            tls: None,
            events,
        },
    )
    .await?;
    // The REST gateway and its read model only where the reads are measured: elsewhere the
    // figures are the engine's alone.
    let server = if args.order_reads.is_some() {
        let cache = match &args.order_cache_url {
            Some(url) => Some(
                martix_orders::OrderCache::connect(url, Duration::from_secs(3600))
                    .await
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        martix_orders::install(
            server,
            martix_orders::GatewayConfig {
                namespace: "default".into(),
                task_queue: "bench".into(),
                cache,
            },
        )
    } else {
        server
    };
    let http = server.http_addr();
    let address = format!("http://{}", server.grpc_addr());
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.serve(shutdown.clone()));
    let queue = "bench";
    let (activities, reference) = orders::activities(args.adapters, Some(&url), None).await?;
    if let Some(r) = &reference {
        for l in 0..3 {
            r.seed_stock(&format!("bench-sku-{l}"), 100_000_000).await?;
        }
    }
    let worker_stop = CancellationToken::new();
    let worker = {
        let (address, stop) = (address.clone(), worker_stop.clone());
        tokio::spawn(async move {
            orders::run_worker(&address, &Default::default(), queue, activities, stop).await
        })
    };
    let client = martix_sdk::Client::connect(address.clone()).await?;
    // The end of either run: the worker, then the engine, then the SQLite file.
    let stop = async {
        worker_stop.cancel();
        worker.await??;
        shutdown.cancel();
        serving.await??;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", temp.display()));
        }
        anyhow::Ok(())
    };
    if !args.scale.is_empty() {
        println!("martix bench --scale on {label}; engine and workers in this process");
        for check in &args.scale {
            match check.as_str() {
                "history" => scale::history(&address, &client, args.scale_activities).await?,
                "queues" => {
                    let (activities, _) =
                        orders::activities(args.adapters, Some(&url), None).await?;
                    scale::queues(&address, &client, activities, 10, 8, args.sagas).await?
                }
                "timers" => scale::timers(&address, &client, queue, args.scale_timers).await?,
                other => anyhow::bail!("unknown scale check '{other}': history, queues or timers"),
            }
        }
        return stop.await;
    }
    let writes = || engine.store().write_transactions();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let progress = args.output == "table" && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let target = bench::Target {
        client: &client,
        queue,
        writes: &writes,
        progress: false,
    };
    bench::closed_loop(&target, &format!("{run}-w"), 16, args.warmup, args.max_time).await?;
    let target = bench::Target { progress, ..target };
    if let Some(sagas) = args.soak {
        engine
            .update_namespace(martix_proto::v1::UpdateNamespaceRequest {
                namespace: "default".into(),
                retention: Some(pbjson_types::Duration {
                    seconds: args.soak_retention.as_secs() as i64,
                    nanos: 0,
                }),
            })
            .await?;
        let c = args.concurrency.first().copied().unwrap_or(64);
        println!("martix bench --soak on {label}; engine and workers in this process");
        soak::run(&engine, &target, &run, c, sagas, args.soak_retention).await?;
        return stop.await;
    }
    if let Some(duration) = args.order_reads {
        bench::closed_loop(&target, &format!("{run}-r"), 16, args.sagas, args.max_time).await?;
        let ids: Vec<String> = (0..args.sagas)
            .map(|i| bench::bench_order(&format!("{run}-r"), i).order_id)
            .collect();
        // The read model follows the histories: let it catch up before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let levels = crate::reads::run(http, &ids, &args.concurrency, duration).await?;
        if args.output == "json" {
            println!("{}", serde_json::to_string_pretty(&levels)?);
        } else {
            crate::reads::print(&label, &levels);
        }
        return stop.await;
    }
    let mut levels = Vec::new();
    // PostgreSQL's own count of transactions; backends report it about a second after they
    // go idle, so it is read after a pause on both sides of a level.
    let db_transactions = || async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        engine.store().database_transactions().await.ok().flatten()
    };
    let plan: Vec<(Option<usize>, Option<f64>)> = if args.rate.is_empty() {
        args.concurrency.iter().map(|c| (Some(*c), None)).collect()
    } else {
        args.rate.iter().map(|r| (None, Some(*r))).collect()
    };
    for (n, (concurrency, rate)) in plan.into_iter().enumerate() {
        let before = db_transactions().await;
        let mut level = match (concurrency, rate) {
            (Some(c), _) => {
                bench::closed_loop(&target, &format!("{run}-{n}"), c, args.sagas, args.max_time)
                    .await?
            }
            (_, Some(r)) => {
                bench::open_loop(
                    &target,
                    &format!("{run}-r{n}"),
                    r,
                    args.sagas,
                    args.max_time,
                )
                .await?
            }
            _ => unreachable!("a level is a concurrency or a rate"),
        };
        if let (Some(b), Some(a)) = (before, db_transactions().await) {
            level.database_transactions_per_saga = Some((a - b) as f64 / level.sagas.max(1) as f64);
        }
        levels.push(level);
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&levels)?);
    } else {
        bench::print_table(&label, &levels);
    }
    stop.await
}
