//! Helpers shared by the tests that run the real `martix` binary.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `martix` process; killed when dropped.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) grpc: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let grpc = loop {
        let line = lines
            .next()
            .expect("martix printed where it listens before exiting")
            .unwrap();
        if let Some(addr) = line.trim().strip_prefix("gRPC") {
            break addr.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Running { child, grpc }
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
