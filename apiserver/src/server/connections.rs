//! Connection hygiene: how many connections the server holds, from whom,
//! and how long a connection that says nothing is kept.
//!
//! A client that opens connections and stays quiet costs a file
//! descriptor each; without limits, enough of them make the server
//! unreachable to the controller and the agents. So:
//! - every client address may hold at most [`Limits::per_address`]
//!   connections, and all addresses together [`Limits::total`], except
//!   the loopback addresses `127.0.0.1` and `::1`, whose connections are
//!   bounded by the per-address cap alone: the components of a local
//!   control plane and its health probes connect from there, and a flood
//!   from elsewhere must not lock them out. The defaults follow from the
//!   process's open-file limit, which [`raise_open_file_limit`] first
//!   lifts to its hard limit (as Go programs, kube-apiserver among them,
//!   do on start);
//! - the TLS handshake must finish within [`Limits::handshake_timeout`];
//! - a connection must send its first request byte, and every HTTP/1
//!   request head, within [`Limits::header_read_timeout`]. hyper's header
//!   timer also runs while a kept-alive HTTP/1 connection waits for its
//!   next request, so an idle connection is closed after the same time.
//!   Bodies being streamed (watches) are not timed out;
//! - HTTP/2 connections get keep-alive pings, which close connections to
//!   peers that have gone away, and at most [`MAX_STREAMS`] streams each.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum_server::{
    accept::{Accept, DefaultAcceptor},
    tls_rustls::RustlsAcceptor,
};
use hyper_util::{rt::TokioTimer, server::conn::auto::Builder};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};

/// File descriptors kept back for everything that is not a client
/// connection: the store, logs, certificates, the listener.
const RESERVED_FILES: usize = 128;

/// HTTP/2 streams a connection may have open at once: Go's default, which
/// the generic API server sets explicitly.
pub const MAX_STREAMS: u32 = 250;

/// How often an HTTP/2 connection is pinged, and how long the answer may
/// take before the connection is closed.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How many connections are held, and how long a quiet one is waited for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once from all addresses other than loopback.
    pub total: usize,
    /// Connections held at once from one client address.
    pub per_address: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for the first request byte, for each HTTP/1 request head, and
    /// for an idle HTTP/1 connection's next request.
    pub header_read_timeout: Duration,
}

impl Limits {
    /// Caps that fit in `open_files` descriptors: a quarter (at least 8)
    /// per address, and the rest, less what loopback may hold, for
    /// everyone. A quarter, because one process may rightly hold many
    /// watches (each is a connection over HTTP/1), while filling the
    /// server takes four addresses.
    #[must_use]
    pub fn for_open_files(open_files: usize) -> Self {
        let usable = open_files.saturating_sub(RESERVED_FILES);
        let per_address = (usable / 4).max(8);
        Self {
            total: usable.saturating_sub(per_address).max(per_address),
            per_address,
            handshake_timeout: Duration::from_secs(10),
            // kube-apiserver's ReadHeaderTimeout.
            header_read_timeout: Duration::from_secs(32),
        }
    }
}

impl Default for Limits {
    /// Caps that fit the process's current open-file limit.
    fn default() -> Self {
        Self::for_open_files(open_file_limit())
    }
}

/// The process's soft limit on open files.
fn open_file_limit() -> usize {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Lift the soft open-file limit to the hard one, so that the caps
/// [`Limits::default`] derives are as high as the system allows.
///
/// # Errors
/// When the limit cannot be set.
pub fn raise_open_file_limit() -> io::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return Ok(());
    }
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).map_err(io::Error::from)
}

/// Timers and HTTP/2 settings for every connection.
pub(crate) fn tune(builder: &mut Builder<hyper_util::rt::TokioExecutor>, limits: &Limits) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
}

/// Accepts a connection when its address and the server have room, then
/// does the TLS handshake.
#[derive(Clone, Debug)]
pub(crate) struct Acceptor {
    tls: RustlsAcceptor<DefaultAcceptor>,
    open: Arc<Mutex<Open>>,
    limits: Limits,
}

impl Acceptor {
    pub(crate) fn new(tls: RustlsAcceptor<DefaultAcceptor>, limits: &Limits) -> Self {
        Self {
            tls: tls.handshake_timeout(limits.handshake_timeout),
            open: Arc::default(),
            limits: limits.clone(),
        }
    }
}

/// A client's TLS stream.
type Tls = tokio_rustls::server::TlsStream<TcpStream>;

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<(Guarded<Tls>, S)>> + Send>>;

impl<S: Send + 'static> Accept<TcpStream, S> for Acceptor {
    type Stream = Guarded<Tls>;
    type Service = S;
    type Future = Handshake<S>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let slot = match stream.peer_addr() {
            Ok(peer) => Slot::take(&self.open, peer.ip(), &self.limits),
            Err(e) => Err(e),
        };
        let Ok(slot) = slot else {
            // Dropping the stream closes it: nothing can be said before
            // TLS, and the client retries as after any refused connection.
            return Box::pin(std::future::ready(Err(slot
                .err()
                .unwrap_or_else(|| io::Error::other("connection refused")))));
        };
        let handshake = self.tls.accept(stream, service);
        let first_byte = self.limits.header_read_timeout;
        Box::pin(async move {
            let (stream, service) = handshake.await?;
            Ok((Guarded::new(stream, slot, first_byte), service))
        })
    }
}

/// Connections held, by client address.
#[derive(Debug, Default)]
struct Open {
    by_address: HashMap<IpAddr, usize>,
    /// Connections from addresses other than loopback.
    total: usize,
    /// When a refusal was last logged: one line per few seconds is enough
    /// to tell an operator, and a flood must not flood the log too.
    last_warning: Option<Instant>,
}

/// One held connection's place in [`Open`], given back when it is dropped.
#[derive(Debug)]
struct Slot {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

fn is_local(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.octets() == [127, 0, 0, 1],
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.octets() == [127, 0, 0, 1])
        }
    }
}

impl Slot {
    fn take(open: &Arc<Mutex<Open>>, address: IpAddr, limits: &Limits) -> io::Result<Self> {
        let mut held = open.lock().unwrap_or_else(PoisonError::into_inner);
        let local = is_local(address);
        let from_address = held.by_address.get(&address).copied().unwrap_or(0);
        let refusal = if from_address >= limits.per_address {
            Some(format!(
                "{address} already holds {from_address} connections"
            ))
        } else if !local && held.total >= limits.total {
            Some(format!("{} connections are open", held.total))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let now = Instant::now();
            if held
                .last_warning
                .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(5))
            {
                held.last_warning = Some(now);
                tracing::warn!(%address, "refusing connections: {refusal}");
            }
            return Err(io::Error::other(refusal));
        }
        *held.by_address.entry(address).or_default() += 1;
        if !local {
            held.total += 1;
        }
        Ok(Self {
            open: Arc::clone(open),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.by_address.remove(&self.address);
            }
        }
        if !is_local(self.address) {
            held.total -= 1;
        }
    }
}

/// A client connection holding its [`Slot`], and closed when its first
/// byte does not come in time: hyper's HTTP/1 header timer starts only
/// once it knows the protocol, and it learns that from the first bytes.
#[derive(Debug)]
pub(crate) struct Guarded<T> {
    inner: T,
    _slot: Slot,
    first_byte: Option<Pin<Box<Sleep>>>,
}

impl<T> Guarded<T> {
    fn new(inner: T, slot: Slot, first_byte: Duration) -> Self {
        Self {
            inner,
            _slot: slot,
            first_byte: Some(Box::pin(tokio::time::sleep(first_byte))),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = &mut this.first_byte {
            match read {
                Poll::Ready(Ok(())) if buf.filled().len() > before => this.first_byte = None,
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request in time",
                    )));
                }
                _ => {}
            }
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> Limits {
        Limits {
            total,
            per_address,
            ..Limits::for_open_files(1024)
        }
    }

    #[test]
    fn caps_fit_in_the_open_file_limit() {
        for files in [256, 512, 1024, 4096, 20_000, 1 << 20] {
            let caps = Limits::for_open_files(files);
            assert!(
                caps.total + caps.per_address + RESERVED_FILES <= files,
                "{files}: {caps:?}"
            );
            assert!(caps.per_address >= 8, "{caps:?}");
            assert!(caps.total >= caps.per_address, "{caps:?}");
        }
        assert_eq!(Limits::for_open_files(20_000).per_address, 4_968);
        assert_eq!(Limits::for_open_files(512).per_address, 96);
    }

    #[test]
    fn each_address_and_all_together_are_capped_and_slots_come_back() {
        let open = Arc::default();
        let caps = limits(5, 3);
        let a: IpAddr = "10.0.0.1".parse().expect("address");
        let b: IpAddr = "10.0.0.2".parse().expect("address");
        let from_a: Vec<Slot> = (0..3)
            .map(|_| Slot::take(&open, a, &caps).expect("room"))
            .collect();
        assert!(Slot::take(&open, a, &caps).is_err(), "a fourth from a");
        let mut from_b: Vec<Slot> = (0..2)
            .map(|_| Slot::take(&open, b, &caps).expect("room"))
            .collect();
        let full = Slot::take(&open, b, &caps).expect_err("five are open");
        assert!(full.to_string().contains("5 connections"), "{full}");
        from_b.pop();
        from_b.push(Slot::take(&open, b, &caps).expect("a slot came back"));
        drop(from_a);
        drop(from_b);
        let held = open.lock().expect("lock");
        assert_eq!((held.total, held.by_address.len()), (0, 0));
    }

    #[test]
    fn loopback_is_capped_per_address_only() {
        let open = Arc::default();
        let caps = limits(1, 2);
        let _outside = Slot::take(&open, "10.0.0.1".parse().expect("ip"), &caps).expect("room");
        let local: Vec<Slot> = ["127.0.0.1", "::1", "127.0.0.1"]
            .iter()
            .map(|ip| Slot::take(&open, ip.parse().expect("ip"), &caps).expect("local"))
            .collect();
        assert!(Slot::take(&open, "127.0.0.1".parse().expect("ip"), &caps).is_err());
        assert!(Slot::take(&open, "127.0.0.2".parse().expect("ip"), &caps).is_err());
        drop(local);
    }
}
