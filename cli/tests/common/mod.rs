//! Helpers shared by the tests that run the real `martix` binary.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `martix` process; killed when dropped.
pub(crate) struct Running {
    pub(crate) child: KillOnDrop,
    pub(crate) grpc: String,
    /// The HTTP port's address (`127.0.0.1:PORT`, no scheme).
    pub(crate) http: String,
}

/// A child process killed when dropped, also when the test fails: a process left running
/// holds the test's output open, and whatever reads it waits.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Starts `martix ARGS` on free ports and waits for it to print where it listens.
pub(crate) fn spawn(args: &[&str]) -> Running {
    spawn_at(args, "127.0.0.1:0")
}

/// Starts `martix ARGS` with gRPC on `grpc_addr` and waits for it to print where it listens.
pub(crate) fn spawn_at(args: &[&str], grpc_addr: &str) -> Running {
    spawn_with(args, grpc_addr, &[])
}

/// As `spawn_at`, with extra environment variables.
pub(crate) fn spawn_with(args: &[&str], grpc_addr: &str, envs: &[(&str, &str)]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_martix"))
        .args(args)
        .envs(envs.iter().copied())
        .args(["--grpc-addr", grpc_addr, "--http-addr", "127.0.0.1:0"])
        .args(["--shutdown-grace", "2s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run martix");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut grpc, mut http) = (None, None);
    while http.is_none() {
        let line = lines
            .next()
            .expect("martix printed where it listens before exiting")
            .unwrap();
        if let Some(addr) = line.trim().strip_prefix("gRPC") {
            grpc = Some(addr.trim().to_owned());
        } else if let Some(rest) = line.trim().strip_prefix("HTTP") {
            let url = rest.split_whitespace().next().unwrap_or_default();
            http = Some(url.split_once("://").map_or(url, |(_, a)| a).to_owned());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Running {
        child: KillOnDrop(child),
        grpc: grpc.expect("martix printed its gRPC address before its HTTP address"),
        http: http.unwrap_or_default(),
    }
}

/// Sends SIGTERM and waits (at most 20 s) for the exit status.
pub(crate) fn terminate(r: Running) -> std::process::ExitStatus {
    signal(&r, "-TERM");
    wait_exit(r)
}

/// Sends a signal (`-KILL`, `-STOP`, `-CONT`, ...) to the process.
pub(crate) fn signal(r: &Running, sig: &str) {
    let pid = r.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits (at most 20 s) for the process to exit.
pub(crate) fn wait_exit(mut r: Running) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = r.child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "martix did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port, for a process that must come back on the same address.
pub(crate) fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

pub(crate) mod orders {
    //! A workload of random orders run through crashes: start, wait, count, verify.

    use futures::StreamExt;
    use martix_activities::{ReferenceAdapters, random_order};
    use martix_order_contract::{Order, OrderOutcome};
    use martix_sdk::{Client, StartOptions};
    use rand::SeedableRng;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Orders over freshly seeded SKUs, all under one prefix.
    pub(crate) struct Workload {
        pub(crate) adapters: ReferenceAdapters,
        pub(crate) prefix: String,
        pub(crate) orders: Vec<Order>,
    }

    /// Seeds stock and makes `n` random orders (reproducible from `seed`).
    pub(crate) async fn workload(url: &str, n: usize, seed: u64) -> Workload {
        let adapters = ReferenceAdapters::connect(url).await.unwrap();
        let prefix = martix_tests::unique("crash").replace('-', "");
        for s in 0..4 {
            adapters
                .seed_stock(&format!("{prefix}-sku-{s}"), 100_000)
                .await
                .unwrap();
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let orders = (0..n)
            .map(|i| random_order(&mut rng, &prefix, i, 4))
            .collect();
        Workload {
            adapters,
            prefix,
            orders,
        }
    }

    /// A `martix worker` process on `queue` against the engine at `address`, killed when
    /// dropped.
    pub(crate) fn worker(
        url: &str,
        address: &str,
        queue: &str,
        envs: &[(&str, &str)],
    ) -> super::KillOnDrop {
        super::KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_martix"))
                .args(["worker", "--database-url", url, "--address", address])
                .args(["--task-queue", queue])
                .envs(envs.iter().copied())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Starts (idempotently: the id is the order's) and waits for an order, through engine
    /// and database restarts: calls that fail because they are down are retried.
    async fn place(client: &Client, queue: &str, order: &Order) -> OrderOutcome {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let attempt = async {
                let run = client
                    .start_workflow(StartOptions::new("order", &order.order_id, queue), order)
                    .await?;
                run.result::<OrderOutcome>().await
            }
            .await;
            match attempt {
                Ok(o) => return o,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "order {} never ended: {e}",
                        order.order_id
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// As `place`, but an order runs once: a retry never starts a second run of an order
    /// whose first one already ended (the default id-reuse policy would), it waits for it.
    async fn place_once(client: &Client, queue: &str, order: &Order) -> OrderOutcome {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let attempt = async {
                let options = StartOptions::new("order", &order.order_id, queue)
                    .id_reuse_policy(martix_sdk::IdReusePolicy::RejectDuplicate);
                match client.start_workflow(options, order).await {
                    Ok(run) => run.result::<OrderOutcome>().await,
                    Err(martix_sdk::ClientError::Status(s))
                        if s.code() == tonic::Code::AlreadyExists =>
                    {
                        client
                            .handle(&order.order_id)
                            .result::<OrderOutcome>()
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            .await;
            match attempt {
                Ok(o) => return o,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "order {} never ended: {e}",
                        order.order_id
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Orders being placed in the background.
    pub(crate) struct Placing {
        done: Arc<AtomicUsize>,
        handle: tokio::task::JoinHandle<Vec<OrderOutcome>>,
    }

    impl Placing {
        /// Places every order of `w`, `concurrency` at a time, through `client`.
        pub(crate) fn start(client: Client, queue: &str, w: &Workload, concurrency: usize) -> Self {
            Self::start_with(client, queue, w, concurrency, false)
        }

        /// As `start`, placing each order exactly once (see `place_once`).
        pub(crate) fn start_once(
            client: Client,
            queue: &str,
            w: &Workload,
            concurrency: usize,
        ) -> Self {
            Self::start_with(client, queue, w, concurrency, true)
        }

        fn start_with(
            client: Client,
            queue: &str,
            w: &Workload,
            concurrency: usize,
            once: bool,
        ) -> Self {
            let done = Arc::new(AtomicUsize::new(0));
            let (queue, orders, counter) = (queue.to_owned(), w.orders.clone(), done.clone());
            let work = futures::stream::iter(orders.into_iter().map(move |o| {
                let (client, queue, counter) = (client.clone(), queue.clone(), counter.clone());
                async move {
                    let outcome = if once {
                        place_once(&client, &queue, &o).await
                    } else {
                        place(&client, &queue, &o).await
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    outcome
                }
            }))
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>();
            Self {
                done,
                handle: tokio::spawn(work),
            }
        }

        /// Waits until `n` orders have ended; returns how many have.
        pub(crate) async fn reach(&self, n: usize) -> usize {
            let started = Instant::now();
            while self.done.load(Ordering::SeqCst) < n {
                assert!(started.elapsed() < Duration::from_secs(120), "no progress");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.done.load(Ordering::SeqCst)
        }

        /// Waits for every order to end.
        pub(crate) async fn finish(self) -> Vec<OrderOutcome> {
            self.handle.await.unwrap()
        }
    }

    impl Workload {
        /// Every order ended, none was charged twice, money and stock add up. Prints the
        /// figures of the crash test `label`.
        pub(crate) async fn verify(
            &self,
            label: &str,
            outcomes: &[OrderOutcome],
            recovered: Duration,
        ) {
            let completed: Vec<&Order> = self
                .orders
                .iter()
                .filter(|o| {
                    outcomes
                        .iter()
                        .any(|x| x.order_id == o.order_id && x.status == "completed")
                })
                .collect();
            let ledger = self.adapters.ledger(&self.prefix).await.unwrap();
            let duplicates = ledger.values().filter(|(_, charges)| *charges > 1).count();
            println!(
                "crash test ({label}): {} sagas, all terminal {:.1} s after the disruption, duplicate charges found: {duplicates}",
                outcomes.len(),
                recovered.as_secs_f64()
            );
            assert_eq!(
                outcomes.len(),
                self.orders.len(),
                "every order reached a terminal state"
            );
            for c in self
                .adapters
                .check_ledger(&self.prefix, &completed)
                .await
                .unwrap()
            {
                assert!(c.ok, "{}: {}", c.what, c.figures);
            }
        }
    }
}

/// `GET path` over plain HTTP/1.1 to `addr`: the status code and the body.
#[allow(dead_code)]
pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\n"), "")
}

/// `POST path` with a JSON body and, if given, a bearer token: the status and the body.
pub(crate) fn http_post(addr: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    http(addr, &head, body)
}

/// One HTTP/1.1 request (`head`: its request line and headers), answered in full.
fn http(addr: &str, head: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(s, "{head}Host: {addr}\r\nConnection: close\r\n\r\n{body}").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// A bearer token for `roles` in `namespace`, signed with `secret` by `martix token issue`.
pub(crate) fn issue_token(secret: &str, roles: &[&str], namespace: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_martix"));
    cmd.args(["token", "issue", "--namespace", namespace, "--ttl", "10m"])
        .env("MARTIX_AUTH_SECRET", secret);
    for r in roles {
        cmd.args(["--role", r]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
