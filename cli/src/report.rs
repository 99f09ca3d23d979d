//! How a failed command is told: one line on stderr, `martix: <what failed>`, that a person
//! can act on (STYLE.md, "Errors people read"). The SDK's errors read as the SDK words them,
//! with what to do where the cli knows better (start the engine, pass a token); any other
//! error as its causes joined by `: `, each said once. No gRPC code in its Rust form, no
//! backtrace: `--debug` adds the causes one per line (and the backtrace, with RUST_BACKTRACE=1)
//! after the line. The exit code is the caller's (1).

use martix_sdk::ClientError;

/// Prints `e` on stderr: one line, then with `debug` its causes and backtrace.
pub(crate) fn failure(e: &anyhow::Error, debug: bool) {
    eprintln!("martix: {}", one_line(e));
    if debug {
        eprintln!("{e:?}");
    }
}

/// `e` and its causes in one line.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        // The SDK's errors say all there is in their own line; their sources (a gRPC status,
        // a transport error) would only say it again, worse.
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            say_once(&mut parts, client_line(c));
            break;
        }
        // The order domain's client answers with bare statuses: the SDK words them the same.
        if let Some(s) = cause.downcast_ref::<tonic::Status>() {
            say_once(&mut parts, client_line(&ClientError::Status(s.clone())));
            break;
        }
        say_once(&mut parts, cause.to_string());
    }
    parts.join(": ")
}

/// Adds a cause, on one line, unless the cause before it already said it (an error that
/// wraps another as `"{0}"` or `"...: {0}"`).
fn say_once(parts: &mut Vec<String>, text: String) {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() || parts.last().is_some_and(|p| p.contains(&text)) {
        return;
    }
    parts.push(text);
}

/// An SDK error's line, with the cli's advice where it has some.
fn client_line(e: &ClientError) -> String {
    let line = e.to_string();
    match e {
        ClientError::Unreachable { address, source } if refused(source) => {
            if is_loopback(address) {
                format!("{line} (start it with 'martix dev')")
            } else {
                format!(
                    "{line} (is it running? the address comes from --address or MARTIX_ADDRESS)"
                )
            }
        }
        ClientError::Status(s) if s.code() == tonic::Code::Unauthenticated => format!(
            "{line} (pass a token with --token or MARTIX_TOKEN; 'martix token issue' makes one)"
        ),
        _ => line,
    }
}

/// Whether nothing listened: the connection was refused.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether `address` (`http://127.0.0.1:7233`) names this machine.
fn is_loopback(address: &str) -> bool {
    let host = address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn an_unknown_workflow_is_one_line_naming_it_and_its_namespace() {
        let e = anyhow::Error::from(ClientError::WorkflowNotFound {
            namespace: "default".into(),
            workflow_id: "o-17".into(),
            run_id: String::new(),
        });
        assert_eq!(
            one_line(&e),
            "workflow 'o-17' not found in namespace 'default'"
        );
    }

    #[test]
    fn statuses_read_as_the_engine_words_them_with_advice() {
        let e = anyhow::Error::from(tonic::Status::unauthenticated(
            "missing credentials: send 'authorization: Bearer <token>'",
        ));
        let line = one_line(&e);
        assert!(
            line.starts_with("missing credentials: send 'authorization: Bearer <token>' (pass a token with --token"),
            "{line}"
        );
        let e = anyhow::Error::from(ClientError::Status(tonic::Status::permission_denied(
            "permission denied: the token does not grant namespace 'shop'",
        )));
        assert_eq!(
            one_line(&e),
            "permission denied: the token does not grant namespace 'shop'"
        );
        assert!(!one_line(&e).contains("code:"));
    }

    #[test]
    fn causes_are_joined_on_one_line_each_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file\nat all");
        let e = Err::<(), _>(io)
            .context("reading the CA certificate ca.pem")
            .unwrap_err();
        assert_eq!(
            one_line(&e),
            "reading the CA certificate ca.pem: no such file at all"
        );

        /// An error that says its source in its own message, as `#[error("...: {0}")]` does.
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "opening the store: {}", self.0)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::from(Wrapper(std::io::Error::other("disk on fire")));
        assert_eq!(one_line(&e), "opening the store: disk on fire");
    }

    #[test]
    fn loopback_addresses_are_this_machine() {
        for a in [
            "http://127.0.0.1:7233",
            "https://localhost:7233",
            "http://[::1]:7233",
            "http://127.0.0.1",
        ] {
            assert!(is_loopback(a), "{a}");
        }
        for a in ["http://10.0.0.5:7233", "https://engine.example.com:443"] {
            assert!(!is_loopback(a), "{a}");
        }
    }
}
