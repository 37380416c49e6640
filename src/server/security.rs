//! The two request checks mlflow server turns on by default: the `Host` header must name this
//! server by a loopback, private-network or configured name (so a DNS-rebinding page cannot
//! read the store through a name it controls), and a state-changing request whose `Origin` is
//! another site is refused (so any page the user visits cannot send "simple" cross-origin
//! POSTs that need no preflight).
//!
//! Invariants: `/health` and `/version` are answered before these checks; a refusal is 403 in
//! MLflow's JSON error shape with `PERMISSION_DENIED`; a pattern's only wildcard is `*`, which
//! matches any run of characters, and a lone `*` turns its check off.

use std::net::SocketAddr;

use hyper::header::{HOST, ORIGIN};

use crate::mlflow::{ErrorCode, MlflowError, Reply};

/// The names mlflow server accepts in `Host` by default, each with or without a port.
const LOCALHOST_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"];

/// Private-network addresses (RFC 1918 and RFC 4193), as mlflow server's default patterns.
const PRIVATE_HOST_PATTERNS: [&str; 4] = ["192.168.*", "10.*", "fc00:*", "fd00:*"];

/// Origin host names that are this machine.
const LOCALHOST_ORIGIN_HOSTS: [&str; 4] = ["localhost", "127.0.0.1", "[::1]", "::1"];

/// The allowed `Host` patterns and cross-origin origins of one server.
#[derive(Debug)]
pub(super) struct Security {
    host_patterns: Vec<String>,
    origin_patterns: Vec<String>,
    /// The address the server is bound to, whose own origin is never cross-origin.
    bound_host: String,
}

impl Security {
    /// The defaults widened by `allowed_hosts` and `cors_allowed_origins`, for a server bound
    /// to `bound`.
    pub(super) fn new(
        allowed_hosts: &[String],
        cors_allowed_origins: &[String],
        bound: SocketAddr,
    ) -> Security {
        let bound_host = match bound {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        let mut host_patterns: Vec<String> = LOCALHOST_HOSTS
            .iter()
            .chain(std::iter::once(&bound_host.as_str()))
            .flat_map(|host| [host.to_string(), format!("{host}:*")])
            .collect();
        host_patterns.extend(PRIVATE_HOST_PATTERNS.iter().map(|p| p.to_string()));
        host_patterns.extend((16..32).map(|second| format!("172.{second}.*")));
        // A configured name without a port accepts it with any port, as the defaults do.
        for host in allowed_hosts.iter().map(|h| h.trim()) {
            host_patterns.push(host.to_string());
            if !host.contains(':') || host.ends_with(']') {
                host_patterns.push(format!("{host}:*"));
            }
        }
        Security {
            host_patterns,
            origin_patterns: cors_allowed_origins
                .iter()
                .map(|o| o.trim().to_string())
                .collect(),
            bound_host,
        }
    }

    /// `Err` with the 403 to send when `request` fails a check.
    pub(super) fn check<B>(&self, request: &hyper::Request<B>) -> Result<(), Reply> {
        let host = request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !any_matches(&self.host_patterns, &host.to_ascii_lowercase()) {
            return Err(forbidden(
                "Invalid Host header - possible DNS rebinding attack detected",
            ));
        }
        let state_changing = matches!(
            *request.method(),
            hyper::Method::POST | hyper::Method::PUT | hyper::Method::PATCH | hyper::Method::DELETE
        );
        let origin = request.headers().get(ORIGIN);
        match origin {
            Some(origin) if state_changing => {
                let origin = origin.to_str().unwrap_or("");
                if self.origin_allowed(origin) {
                    Ok(())
                } else {
                    Err(forbidden("Cross-origin request blocked"))
                }
            }
            _ => Ok(()),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let host = origin_host(origin).to_ascii_lowercase();
        LOCALHOST_ORIGIN_HOSTS.contains(&host.as_str())
            || host == self.bound_host
            || any_matches(&self.origin_patterns, origin)
    }
}

/// The host name of an origin (`scheme://host[:port]`), IPv6 addresses in brackets.
fn origin_host(origin: &str) -> &str {
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or("");
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or("")
}

fn any_matches(patterns: &[String], value: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| wildcard_match(pattern, value))
}

/// Whether `value` matches `pattern`, where `*` matches any run of characters.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty(); // No `*`: an exact match.
    };
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn forbidden(message: &str) -> Reply {
    MlflowError::new(ErrorCode::PermissionDenied, message).reply()
}

#[cfg(test)]
mod tests {
    use super::{origin_host, wildcard_match};

    #[test]
    fn wildcards_match_any_run_and_nothing_else_is_special() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("10.*", "10.1.2.3:5000"));
        assert!(!wildcard_match("10.*", "100.1.2.3"));
        assert!(wildcard_match("localhost:*", "localhost:5000"));
        assert!(!wildcard_match("localhost", "localhost.evil.example"));
        assert!(wildcard_match(
            "https://*.corp.example",
            "https://a.corp.example"
        ));
        assert!(!wildcard_match("a*a", "a"));
    }

    #[test]
    fn origin_hosts_drop_scheme_port_and_path() {
        assert_eq!(origin_host("http://localhost:3000"), "localhost");
        assert_eq!(origin_host("http://[::1]:3000"), "[::1]");
        assert_eq!(origin_host("https://evil.example/x"), "evil.example");
        assert_eq!(origin_host("null"), "null");
    }
}
