//! The data plane's threads. Each worker is a thread with a
//! single-threaded runtime. A listener accepts on one worker and hands
//! each new connection to the worker with the fewest open ones, as
//! HAProxy's threads share their listeners; from then on the client
//! connection, and the connections to targets it opens, live on that one
//! thread: no work stealing, no wake-up sent to another core for each
//! request. On two cores this served 0.8x HAProxy's requests/s where one
//! work-stealing runtime served 0.6x (the balancer bench; docs/balancer.md
//! has the figures). Sockets shared with `SO_REUSEPORT` were tried too:
//! the kernel's hash left one worker with 56-61% of the load.
//!
//! Health checks and status writes stay on the caller's runtime; the
//! [`Pool`] is shared by all of them.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    num::NonZeroUsize,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crds::v1alpha1::ListenerProtocol;
use tokio::{net::TcpStream, runtime::Handle, sync::oneshot, task::AbortHandle};

use crate::{
    pool::Pool,
    proxy::{self, Counters, Idle},
};

/// The worker threads; dropping them stops their runtimes, and every
/// connection and listener on them.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    /// Client connections open on this worker.
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One worker per core: the default.
#[must_use]
pub fn per_core() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

impl Workers {
    /// Start `count` workers.
    ///
    /// # Errors
    /// When a thread or its runtime cannot be started.
    pub fn start(count: NonZeroUsize) -> io::Result<Self> {
        let mut workers = Vec::with_capacity(count.get());
        for i in 0..count.get() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("balancer-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self { workers })
    }

    /// Listen on `address`, serving `protocol` from `pool`. The socket is
    /// bound here, so an address in use is reported at once.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub fn listen(
        &self,
        address: SocketAddr,
        protocol: ListenerProtocol,
        pool: &Arc<Pool>,
        counters: &Counters,
    ) -> io::Result<Listener> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let served = Served {
            protocol,
            pool: Arc::clone(pool),
            counters: counters.clone(),
            workers: self
                .workers
                .iter()
                .map(|w| Place {
                    handle: w.handle.clone(),
                    open: Arc::clone(&w.open),
                    idle: Arc::new(Idle::default()),
                })
                .collect(),
        };
        let accepting = self.workers[0].handle.spawn(accept(listener, served));
        Ok(Listener(accepting.abort_handle()))
    }
}

/// What a listener serves, and where.
struct Served {
    protocol: ListenerProtocol,
    pool: Arc<Pool>,
    counters: Counters,
    workers: Vec<Place>,
}

/// A worker as one listener sees it: the listener's idle connections to
/// targets there are its own, so that a client connection only reuses
/// connections of its thread.
struct Place {
    handle: Handle,
    open: Arc<AtomicUsize>,
    idle: Arc<Idle>,
}

/// Accept until aborted (on the first worker), each connection onto the
/// least busy worker.
async fn accept(listener: TcpListener, served: Served) {
    // Registered with this worker's reactor, so it is made here.
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => served.hand_over(stream, peer),
            // Out of file descriptors, or the like: let some close.
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Served {
    /// Serve `stream`, accepted on the first worker, on the least busy.
    fn hand_over(&self, stream: TcpStream, peer: SocketAddr) {
        let Some((at, place)) = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.open.load(Ordering::Relaxed))
        else {
            return;
        };
        // The stream is registered with the first worker's reactor; on
        // another it is registered again there.
        let stream = if at == 0 {
            Ok(Moved::Here(stream))
        } else {
            stream.into_std().map(Moved::Away)
        };
        let open = Counted::new(&place.open);
        let (protocol, pool, counters, idle) = (
            self.protocol,
            Arc::clone(&self.pool),
            self.counters.clone(),
            Arc::clone(&place.idle),
        );
        place.handle.spawn(async move {
            let _open = open;
            let stream = match stream.and_then(|s| match s {
                Moved::Here(s) => Ok(s),
                Moved::Away(s) => TcpStream::from_std(s),
            }) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot serve a connection");
                    return;
                }
            };
            match protocol {
                ListenerProtocol::Tcp => proxy::relay(stream, &pool, &counters).await,
                ListenerProtocol::Http => {
                    proxy::http(stream, peer, &pool, &counters, idle).await;
                }
            }
        });
    }
}

/// An accepted connection on its way to a worker.
enum Moved {
    /// Served where it was accepted.
    Here(TcpStream),
    /// Taken off the first worker's reactor, for another's.
    Away(std::net::TcpStream),
}

/// A connection counted on its worker while it lasts.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(open))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.stop.take();
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// A listener's accepting task. Dropping it closes the socket; connections
/// already open carry on.
#[derive(Debug)]
pub struct Listener(AbortHandle);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}
