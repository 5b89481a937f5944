//! Target health: ELB's state machine (thresholds of consecutive results,
//! a passive failure taking a target out at once) and the active checks
//! themselves, a TCP connect or an HTTP `GET path` on a fresh connection.

use std::{net::SocketAddr, time::Duration};

use crds::v1alpha1::{ListenerProtocol, TargetHealthCheck, TargetState, reason};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How one check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// ELB's reason code.
    pub reason: &'static str,
    pub description: String,
}

/// A target's health as its checks have found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: TargetState,
    pub reason: Option<&'static str>,
    pub description: Option<String>,
    successes: u32,
    failures: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: TargetState::Initial,
            reason: Some(reason::INITIAL_HEALTH_CHECKING),
            description: Some("Initial health checks in progress".to_owned()),
            successes: 0,
            failures: 0,
        }
    }
}

/// Consecutive results that change a target's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

impl Thresholds {
    #[must_use]
    pub fn of(check: &TargetHealthCheck) -> Self {
        Self {
            healthy: u32::try_from(check.healthy_threshold_count.max(1)).unwrap_or(1),
            unhealthy: u32::try_from(check.unhealthy_threshold_count.max(1)).unwrap_or(1),
        }
    }
}

impl Health {
    /// Take one check's result; whether the state changed.
    pub fn observe(&mut self, result: Result<(), Failure>, t: Thresholds) -> bool {
        let before = self.state;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.state != TargetState::Healthy && self.successes >= t.healthy {
                    self.state = TargetState::Healthy;
                    self.reason = None;
                    self.description = None;
                }
            }
            Err(failure) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.state != TargetState::Unhealthy && self.failures >= t.unhealthy {
                    self.state = TargetState::Unhealthy;
                }
                if self.state == TargetState::Unhealthy {
                    self.reason = Some(failure.reason);
                    self.description = Some(failure.description);
                }
            }
        }
        self.state != before
    }

    /// A connection the proxy could not open: out at once, until active
    /// checks bring it back. Whether the state changed.
    pub fn refused(&mut self, why: &str) -> bool {
        let before = self.state;
        self.successes = 0;
        self.state = TargetState::Unhealthy;
        self.reason = Some(reason::FAILED_HEALTH_CHECKS);
        self.description = Some(format!("connection failed: {why}"));
        self.state != before
    }
}

/// One active check of `address`.
///
/// # Errors
/// How it failed, with ELB's reason code.
pub async fn check(
    address: SocketAddr,
    protocol: ListenerProtocol,
    config: &TargetHealthCheck,
) -> Result<(), Failure> {
    let timeout = Duration::from_secs(u64::try_from(config.timeout_seconds.max(1)).unwrap_or(5));
    let timed_out = || Failure {
        reason: reason::TIMEOUT,
        description: format!("Request timed out after {}s", timeout.as_secs()),
    };
    let attempt = async {
        let mut stream = TcpStream::connect(address).await.map_err(|e| Failure {
            reason: reason::FAILED_HEALTH_CHECKS,
            description: format!("connect: {e}"),
        })?;
        if protocol == ListenerProtocol::Tcp {
            return Ok(());
        }
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: gantry-health-checker\r\nConnection: close\r\n\r\n",
            config.path
        );
        let io = |e: std::io::Error| Failure {
            reason: reason::FAILED_HEALTH_CHECKS,
            description: format!("request: {e}"),
        };
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut head = Vec::with_capacity(64);
        let mut buf = [0_u8; 64];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = stream.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let code = status_code(&head).ok_or_else(|| Failure {
            reason: reason::FAILED_HEALTH_CHECKS,
            description: "no HTTP status line in the response".to_owned(),
        })?;
        if config.accepts(code) {
            Ok(())
        } else {
            Err(Failure {
                reason: reason::RESPONSE_CODE_MISMATCH,
                description: format!("Health checks failed with these codes: [{code}]"),
            })
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// The code of an `HTTP/1.x NNN …` status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Result<(), Failure> {
        Err(Failure {
            reason: reason::TIMEOUT,
            description: "slow".into(),
        })
    }

    #[test]
    fn thresholds_of_consecutive_results_move_the_state() {
        let t = Thresholds {
            healthy: 3,
            unhealthy: 2,
        };
        let mut h = Health::default();
        assert!(!h.observe(Ok(()), t));
        assert!(!h.observe(Ok(()), t));
        assert!(h.observe(Ok(()), t), "third success: healthy");
        assert_eq!(h.state, TargetState::Healthy);
        assert!(!h.observe(fail(), t));
        assert!(!h.observe(Ok(()), t), "a success resets the failures");
        assert!(!h.observe(fail(), t));
        assert!(h.observe(fail(), t), "two in a row: unhealthy");
        assert_eq!(h.state, TargetState::Unhealthy);
        assert_eq!(h.reason, Some(reason::TIMEOUT));
        assert!(!h.observe(Ok(()), t));
        assert!(!h.observe(Ok(()), t));
        assert!(h.observe(Ok(()), t));
        assert_eq!(h.state, TargetState::Healthy);
        assert_eq!(h.reason, None);
    }

    #[test]
    fn a_refused_connection_takes_a_target_out_at_once() {
        let t = Thresholds {
            healthy: 2,
            unhealthy: 5,
        };
        let mut h = Health::default();
        h.observe(Ok(()), t);
        h.observe(Ok(()), t);
        assert_eq!(h.state, TargetState::Healthy);
        assert!(h.refused("connection refused"));
        assert_eq!(h.state, TargetState::Unhealthy);
        assert!(!h.observe(Ok(()), t), "one success is not enough");
        assert!(h.observe(Ok(()), t));
    }

    #[test]
    fn status_lines_are_parsed() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 500 Oops\r\nX: y\r\n"), Some(500));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
    }
}
