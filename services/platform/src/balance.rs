//! Client-side load balancing over the instances of one upstream.
//!
//! An upstream's address may list several instances (`PRODUCT_GRPC_URL=http://a:50052,http://b:50052`).
//! Each gets its own lazily connecting channel; calls take turns over the instances that are
//! *in*. An instance is ejected the moment a call to it fails at the transport level
//! (connection refused or reset: the process is gone) and when its gRPC health check stops
//! answering SERVING (it is draining or wedged); a background task checks every instance of the
//! pool each [`HEALTH_INTERVAL`] and readmits one as soon as it answers SERVING again. When no
//! instance is in, calls go to all of them in turn rather than failing without trying.
//!
//! With one address nothing of this runs: the pool is that one channel.
//!
//! The gauge `grpc_client_endpoint_up{upstream, endpoint}` is 1 for an instance that is in.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics::SharedString;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How often every instance of a multi-instance upstream is health-checked.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// How long one health check may take before the instance counts as down.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(800);

/// One instance of an upstream.
struct Instance {
    url: SharedString,
    channel: Channel,
    up: AtomicBool,
}

/// The instances of one upstream; cheap to share.
pub(crate) struct Pool {
    upstream: SharedString,
    instances: Vec<Instance>,
    next: AtomicUsize,
}

impl Pool {
    /// A pool over `channels` (`(url, channel)`), every instance in to begin with. With more
    /// than one instance, a health-check task runs on the current Tokio runtime (if any) for
    /// as long as the pool lives.
    pub(crate) fn new(upstream: &str, channels: Vec<(String, Channel)>) -> Arc<Self> {
        let upstream = SharedString::from(upstream.to_owned());
        let pool = Arc::new(Self {
            instances: channels
                .into_iter()
                .map(|(url, channel)| Instance {
                    url: SharedString::from(url),
                    channel,
                    up: AtomicBool::new(true),
                })
                .collect(),
            upstream,
            next: AtomicUsize::new(0),
        });
        if pool.instances.len() > 1 {
            for instance in &pool.instances {
                pool.record(instance, true);
            }
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(watch(Arc::downgrade(&pool)));
            }
        }
        pool
    }

    /// The next instance to call: round robin over the instances that are in, or over all of
    /// them when none is.
    pub(crate) fn pick(&self) -> (usize, Channel) {
        let count = self.instances.len();
        let start = if count == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        let chosen = (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| self.instances[index].up.load(Ordering::Relaxed))
            .unwrap_or(start % count);
        (chosen, self.instances[chosen].channel.clone())
    }

    /// Takes the instance out of the rotation after a transport failure (no-op for a pool of
    /// one: there is nowhere else to go).
    pub(crate) fn eject(&self, index: usize) {
        if self.instances.len() < 2 {
            return;
        }
        let instance = &self.instances[index];
        if instance.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(upstream = %self.upstream, endpoint = %instance.url,
                "instance ejected after a transport failure");
            self.record(instance, false);
        }
    }

    /// How many instances are in.
    #[cfg(test)]
    fn instances_up(&self) -> usize {
        self.instances
            .iter()
            .filter(|instance| instance.up.load(Ordering::Relaxed))
            .count()
    }

    fn record(&self, instance: &Instance, up: bool) {
        metrics::gauge!(
            "grpc_client_endpoint_up",
            "upstream" => self.upstream.clone(),
            "endpoint" => instance.url.clone(),
        )
        .set(if up { 1.0 } else { 0.0 });
    }

    async fn check(&self, index: usize) {
        let instance = &self.instances[index];
        let mut health = HealthClient::new(instance.channel.clone());
        let answer = tokio::time::timeout(
            HEALTH_TIMEOUT,
            health.check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await;
        let serving = matches!(answer, Ok(Ok(response))
            if response.get_ref().status() == ServingStatus::Serving);
        let was = instance.up.swap(serving, Ordering::Relaxed);
        if was != serving {
            if serving {
                tracing::info!(upstream = %self.upstream, endpoint = %instance.url,
                    "instance readmitted: its health check answers SERVING");
            } else {
                tracing::warn!(upstream = %self.upstream, endpoint = %instance.url,
                    "instance ejected: its health check does not answer SERVING");
            }
            self.record(instance, serving);
        }
    }
}

/// Health-checks every instance each interval until the pool is dropped.
async fn watch(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        futures::future::join_all((0..pool.instances.len()).map(|index| pool.check(index))).await;
    }
}

#[cfg(test)]
mod tests {
    use tonic::transport::Endpoint;

    use super::*;

    fn lazy(url: &str) -> (String, Channel) {
        (
            url.to_owned(),
            Endpoint::from_shared(url.to_owned())
                .unwrap()
                .connect_lazy(),
        )
    }

    #[tokio::test]
    async fn calls_take_turns_and_skip_an_ejected_instance() {
        let pool = Pool::new(
            "product",
            vec![
                lazy("http://127.0.0.1:1"),
                lazy("http://127.0.0.1:2"),
                lazy("http://127.0.0.1:3"),
            ],
        );
        let picks: Vec<usize> = (0..6).map(|_| pool.pick().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        pool.eject(1);
        assert_eq!(pool.instances_up(), 2);
        let picks: Vec<usize> = (0..4).map(|_| pool.pick().0).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2), "{picks:?}");
    }

    #[tokio::test]
    async fn with_every_instance_out_calls_still_go_somewhere() {
        let pool = Pool::new(
            "product",
            vec![lazy("http://127.0.0.1:1"), lazy("http://127.0.0.1:2")],
        );
        pool.eject(0);
        pool.eject(1);
        assert_eq!(pool.instances_up(), 0);
        let picks: Vec<usize> = (0..4).map(|_| pool.pick().0).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
    }

    #[tokio::test]
    async fn a_single_instance_is_never_ejected() {
        let pool = Pool::new("product", vec![lazy("http://127.0.0.1:1")]);
        pool.eject(0);
        assert_eq!(pool.instances_up(), 1);
    }

    #[tokio::test]
    async fn the_health_check_ejects_an_instance_that_does_not_answer() {
        // Nothing listens on port 1: the check fails and the instance goes out.
        let pool = Pool::new(
            "product",
            vec![lazy("http://127.0.0.1:1"), lazy("http://127.0.0.1:2")],
        );
        pool.check(0).await;
        assert!(!pool.instances[0].up.load(Ordering::Relaxed));
        assert!(pool.instances[1].up.load(Ordering::Relaxed));
    }
}
