//! The synchronous [`Store`](crate::store::Store) over the asynchronous etcd client.
//!
//! The store trait is synchronous (redb's calls are), and its callers include tokio workers.
//! Calling `block_on` there would panic (or starve the runtime), so the etcd client lives on a
//! runtime of its own, on threads of its own: [`Bridge::call`] spawns the request as a task
//! there and waits for its answer on a plain channel, with a deadline. Many callers can wait at
//! once; their requests share the client's HTTP/2 connections.

use super::super::StoreError;
use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

/// The etcd client's runtime and the client.
pub struct Bridge {
    /// Always `Some` until dropped (taken to shut it down without blocking).
    runtime: Option<tokio::runtime::Runtime>,
    client: etcd_client::Client,
    /// The longest any one call may take before it fails as unavailable.
    timeout: Duration,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A failed etcd call as a store error.
/// Whether `e` is a failure to connect to a member: the request never left this process.
fn never_sent(e: &StoreError) -> bool {
    matches!(e, StoreError::Etcd { source: Some(src), .. }
        if format!("{src}").contains("tcp connect error"))
}

pub fn etcd_err(what: &str, e: etcd_client::Error) -> StoreError {
    StoreError::Etcd {
        what: what.to_string(),
        source: Some(Box::new(e)),
    }
}

impl Bridge {
    /// Start the runtime and connect (lazily: no member needs to answer yet).
    pub fn connect(
        endpoints: &[String],
        options: etcd_client::ConnectOptions,
        timeout: Duration,
    ) -> Result<Bridge, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Etcd {
                what: format!("starting the client runtime: {e}"),
                source: None,
            })?;
        // Not `block_on`: the caller may itself be on a runtime.
        let eps = endpoints.to_vec();
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(etcd_client::Client::connect(eps, Some(options)).await);
        });
        let client = rx
            .recv_timeout(timeout)
            .map_err(|_| StoreError::Etcd {
                what: "connecting: no answer".into(),
                source: None,
            })?
            .map_err(|e| etcd_err("connecting", e))?;
        Ok(Bridge {
            runtime: Some(runtime),
            client,
            timeout,
        })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// A clone of the client (cheap: it shares the connections), for async users such as the
    /// election, which run their own tasks on [`Bridge::handle`].
    pub fn client(&self) -> etcd_client::Client {
        self.client.clone()
    }

    /// The client runtime, for tasks that should live as long as the store.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt().handle().clone()
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Run `f(client)` on the client runtime and wait for its result, at most the call
    /// timeout. Never call it from a task of the client runtime itself.
    ///
    /// A call that could not connect to the member it was routed to (a member down: the
    /// client's balancer still routes to it until it notices) never reached etcd, so it is
    /// sent again, within the same timeout; with quorum kept, a store call succeeds through
    /// the members that are up instead of failing one time in three.
    pub fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(etcd_client::Client) -> Fut + Clone,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.call_retrying(what, f, never_sent)
    }

    /// [`Bridge::call`] for a request that changes nothing (a range, a member list): it is
    /// sent again on any failure within the timeout, not only one that never
    /// left. A connection to a killed member is found dead by HTTP/2 pings only after the
    /// request went out on it (`KeepAliveTimedOut`); a read may simply be repeated.
    pub fn read<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(etcd_client::Client) -> Fut + Clone,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.call_retrying(what, f, StoreError::is_unavailable)
    }

    fn call_retrying<T, F, Fut>(
        &self,
        what: &str,
        f: F,
        again: fn(&StoreError) -> bool,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(etcd_client::Client) -> Fut + Clone,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        const PAUSE: Duration = Duration::from_millis(50);
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.call_once(what, f.clone(), left) {
                Err(e) if again(&e) && left > PAUSE * 2 => {
                    tracing::debug!(error = %e, "etcd call failed before an answer: again");
                    std::thread::sleep(PAUSE);
                }
                r => return r,
            }
        }
    }

    fn call_once<T, F, Fut>(&self, what: &str, f: F, timeout: Duration) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(etcd_client::Client) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let fut = f(self.client.clone());
        let task = self.rt().spawn(async move {
            let r = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Etcd {
                    what: format!(
                        "no answer within {timeout:?} (no quorum, or no member reachable)"
                    ),
                    source: None,
                }),
            };
            // The caller may have given up already.
            let _ = tx.send(r);
        });
        // The task has its own deadline; this one only guards against a runtime that stopped.
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(r) => r.map_err(|e| match e {
                StoreError::Etcd { what: w, source } => StoreError::Etcd {
                    what: format!("{what}: {w}"),
                    source,
                },
                e => e,
            }),
            Err(_) => {
                task.abort();
                Err(StoreError::Etcd {
                    what: format!("{what}: the etcd client runtime did not answer"),
                    source: None,
                })
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics on a runtime thread: let it go in the
        // background instead (its tasks are cancelled).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
