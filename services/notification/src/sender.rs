//! The e-mail sender: sends the queued e-mail jobs over SMTP.
//!
//! Each pass claims the due jobs (`for update skip locked`, so replicas never take the same
//! one) and holds them for a lease that outlasts one SMTP conversation; a sender that dies
//! mid-send leaves its jobs to be claimed again once the lease runs out. A sent job is marked
//! sent; a failure is recorded (attempts, last error) and the job is due again after an
//! exponential backoff, until the last attempt, when it is given up (FAILED). A permanent
//! refusal (a 5xx answer, an address that does not parse) gives up at once. The in-app
//! notification is never touched. Delivery is at least once: a send cut off after the server
//! accepted it is sent again, with the same Message-ID.
//!
//! The handler wakes the sender after every committed event; it also looks every poll
//! interval, which is how retries fall due.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;
use shopmesh_platform::shutdown::Shutdown;
use tokio::sync::Notify;

use crate::config::{EmailRetry, NotificationConfig};
use crate::repo::{EmailJob, Store};

/// Longest error text kept on a job.
const MAX_ERROR_LEN: usize = 500;

/// Why one send failed.
#[derive(Debug)]
enum SendError {
    /// Worth another attempt (connection refused, timeout, 4xx).
    Transient(String),
    /// Will never succeed (5xx, a malformed address).
    Permanent(String),
}

/// Sends queued e-mails until shutdown.
pub struct Sender {
    store: Store,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    retry: EmailRetry,
    timeout: Duration,
    lease: Duration,
    batch: i64,
    poll: Duration,
    wake: Arc<Notify>,
}

impl Sender {
    pub fn new(store: Store, config: &NotificationConfig, wake: Arc<Notify>) -> Self {
        // Plain SMTP: see the module documentation of `config` for production.
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.smtp.host.as_str())
                .port(config.smtp.port)
                .timeout(Some(config.smtp.timeout))
                .build();
        Self {
            store,
            transport,
            from: config.smtp.from.clone(),
            retry: config.retry,
            timeout: config.smtp.timeout,
            lease: config.claim_lease(),
            batch: i64::from(config.email_batch),
            poll: config.email_poll,
            wake,
        }
    }

    /// Passes until shutdown: at once when woken, otherwise every poll interval. A pass in
    /// progress finishes first.
    pub async fn run(self, stop: Shutdown) {
        let stopped = stop.clone().wait();
        tokio::pin!(stopped);
        while !stop.is_triggered() {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            let claimed = match self.pass().await {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "e-mail pass failed");
                    0
                }
            };
            // A full batch: more may be due.
            if claimed > 0 && claimed as i64 >= self.batch {
                continue;
            }
            tokio::select! {
                () = &mut stopped => return,
                () = &mut woken => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Claims the due e-mails and sends them (concurrently, each within the SMTP timeout, so
    /// every one ends inside its lease); how many were claimed.
    pub async fn pass(&self) -> sqlx::Result<usize> {
        let jobs = self.store.claim_emails(self.batch, self.lease).await?;
        let outcomes = futures::future::join_all(jobs.iter().map(|job| self.deliver(job))).await;
        for result in outcomes {
            result?;
        }
        Ok(jobs.len())
    }

    async fn deliver(&self, job: &EmailJob) -> sqlx::Result<()> {
        let outcome = match tokio::time::timeout(self.timeout, self.send(job)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SendError::Transient(format!(
                "no answer from the SMTP server within {} ms",
                self.timeout.as_millis()
            ))),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(email_id = %job.id, notification_id = %job.notification_id,
                    attempts = job.attempts, "e-mail sent");
                metrics::counter!("shopmesh_notification_emails_total", "outcome" => "sent")
                    .increment(1);
                self.store.email_sent(job.id).await
            }
            Err(SendError::Transient(error))
                if u32::try_from(job.attempts).unwrap_or(u32::MAX) < self.retry.max_attempts =>
            {
                let error = truncate(error);
                let delay = backoff(self.retry, job.attempts);
                tracing::warn!(email_id = %job.id, attempts = job.attempts, %error,
                    retry_in_ms = delay.as_millis() as u64, "sending an e-mail failed; will retry");
                metrics::counter!("shopmesh_notification_emails_total", "outcome" => "retried")
                    .increment(1);
                self.store.email_retry(job.id, delay, &error).await
            }
            Err(SendError::Transient(error) | SendError::Permanent(error)) => {
                let error = truncate(error);
                tracing::error!(email_id = %job.id, attempts = job.attempts, %error,
                    "giving up on an e-mail");
                metrics::counter!("shopmesh_notification_emails_total", "outcome" => "failed")
                    .increment(1);
                self.store.email_failed(job.id, &error).await
            }
        }
    }

    async fn send(&self, job: &EmailJob) -> Result<(), SendError> {
        let address: Address = job.to_address.parse().map_err(|err| {
            SendError::Permanent(format!("the recipient's address does not parse: {err}"))
        })?;
        let name = (!job.to_name.is_empty()).then(|| job.to_name.clone());
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(name, address))
            .subject(job.subject.clone())
            // The same on every attempt, so a duplicate (a send cut off after it was accepted)
            // can be recognised.
            .message_id(Some(format!("<{}@{}>", job.id, self.from.email.domain())))
            .header(ContentType::TEXT_PLAIN)
            .body(job.body.clone())
            .map_err(|err| SendError::Permanent(format!("the e-mail cannot be built: {err}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => Err(SendError::Permanent(err.to_string())),
            Err(err) => Err(SendError::Transient(err.to_string())),
        }
    }
}

fn truncate(mut error: String) -> String {
    if error.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
    }
    error
}

/// The delay after failed attempt `attempts` (1 for the first): `backoff * 2^(attempts - 1)`,
/// at most `backoff_max`, with jitter (between half and all of it) so that many e-mails do not
/// retry in lockstep.
fn backoff(retry: EmailRetry, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let full = retry
        .backoff
        .saturating_mul(1 << exponent)
        .min(retry.backoff_max);
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = EmailRetry {
            max_attempts: 10,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        };
        for (attempts, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let delay = backoff(retry, attempts);
            let full = Duration::from_millis(full);
            assert!(delay <= full && delay >= full / 2, "{attempts}: {delay:?}");
        }
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let error = "é".repeat(400);
        let cut = truncate(error);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
