//! The payment provider port and the built-in test provider.
//!
//! Every call that moves money carries an idempotency key (the payment id for a capture, the
//! payment id and the refund's idempotency key for a refund), as real providers take one: a
//! repeated call with the same key answers what the first answered and never moves money twice.
//! That is what lets the service retry a provider call after a timeout or a crash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rand::distributions::Alphanumeric;

use crate::domain::{Card, Failure, FailureReason, Money, Scenario};

/// A tokenized card as the service stored it; what a charge is made against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentMethod {
    pub token: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: i32,
    pub scenario: Scenario,
}

/// What the provider answered to a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeResult {
    /// The money was captured; the provider's reference of the charge.
    Captured { reference: String },
    /// The issuer or the provider refused the charge for good.
    Declined(Failure),
}

/// A provider call that did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying with the same idempotency key (timeouts, 5xx, rate limits).
    #[error("the payment provider failed transiently: {0}")]
    Transient(String),
}

/// The payment provider: tokenization, captures and refunds.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// An opaque token for one charge of `card`.
    async fn tokenize(&self, card: &Card) -> Result<String, ProviderError>;
    /// Captures `amount` from `method`, once per `key`.
    async fn charge(
        &self,
        key: &str,
        method: &PaymentMethod,
        amount: &Money,
    ) -> Result<ChargeResult, ProviderError>;
    /// Gives `amount` of the charge `reference` back, once per `key`; the refund's reference.
    async fn refund(
        &self,
        key: &str,
        reference: &str,
        amount: &Money,
    ) -> Result<String, ProviderError>;
}

/// One idempotency key's slot: its final answer once there is one. The async mutex makes a
/// concurrent call with the same key wait for the first one instead of charging in parallel.
type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// A random opaque identifier with a prefix (`pm_…`, `ch_…`, `re_…`).
fn opaque(prefix: &str) -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}_{body}")
}

/// The built-in provider: outcomes follow the card's test scenario (see
/// [`crate::domain::Scenario`]), answers can be slowed down (`PAYMENT_PROVIDER_DELAY_MS`) to
/// make the payment service slow on purpose, and answers are remembered per idempotency key in
/// memory, as a real provider remembers them on its side.
pub struct TestProvider {
    delay: Duration,
    charges: Mutex<HashMap<String, Slot<ChargeResult>>>,
    refunds: Mutex<HashMap<String, Slot<String>>>,
    captures: std::sync::atomic::AtomicU64,
}

impl TestProvider {
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            charges: Mutex::new(HashMap::new()),
            refunds: Mutex::new(HashMap::new()),
            captures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many captures moved money (repeats with a known key do not count).
    pub fn captures(&self) -> u64 {
        self.captures.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn slot<T>(map: &Mutex<HashMap<String, Slot<T>>>, key: &str) -> Slot<T> {
        // A poisoned map only means another call panicked while inserting; its contents are
        // still whole slots, so carry on with them.
        let mut map = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key.to_owned()).or_default().clone()
    }

    async fn latency(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait]
impl PaymentProvider for TestProvider {
    async fn tokenize(&self, _card: &Card) -> Result<String, ProviderError> {
        self.latency().await;
        Ok(opaque("pm"))
    }

    async fn charge(
        &self,
        key: &str,
        method: &PaymentMethod,
        _amount: &Money,
    ) -> Result<ChargeResult, ProviderError> {
        let slot = Self::slot(&self.charges, key);
        let mut answer = slot.lock().await;
        if let Some(first) = answer.as_ref() {
            return Ok(first.clone());
        }
        self.latency().await;
        let today = chrono::Utc::now().date_naive();
        let result = if Card::expired(method.exp_month, method.exp_year, today) {
            ChargeResult::Declined(Failure::new(
                FailureReason::ExpiredCard,
                "expired_card",
                "the card has expired",
            ))
        } else {
            match method.scenario {
                Scenario::Succeed => {
                    self.captures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ChargeResult::Captured {
                        reference: opaque("ch"),
                    }
                }
                Scenario::Decline => ChargeResult::Declined(Failure::new(
                    FailureReason::CardDeclined,
                    "card_declined",
                    "the card was declined",
                )),
                Scenario::InsufficientFunds => ChargeResult::Declined(Failure::new(
                    FailureReason::InsufficientFunds,
                    "insufficient_funds",
                    "the card has insufficient funds",
                )),
                // Not remembered: a retry with the same key tries again, as with a real 5xx.
                Scenario::Transient => {
                    return Err(ProviderError::Transient("processor unavailable".into()));
                }
            }
        };
        *answer = Some(result.clone());
        Ok(result)
    }

    async fn refund(
        &self,
        key: &str,
        _reference: &str,
        _amount: &Money,
    ) -> Result<String, ProviderError> {
        let slot = Self::slot(&self.refunds, key);
        let mut answer = slot.lock().await;
        if let Some(first) = answer.as_ref() {
            return Ok(first.clone());
        }
        self.latency().await;
        let reference = opaque("re");
        *answer = Some(reference.clone());
        Ok(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Currency;

    fn method(scenario: Scenario) -> PaymentMethod {
        PaymentMethod {
            token: "pm_test".into(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2999,
            scenario,
        }
    }

    fn usd(amount_minor: i64) -> Money {
        Money {
            amount_minor,
            currency: Currency::parse("c", "USD").unwrap(),
        }
    }

    #[tokio::test]
    async fn a_key_captures_once_however_often_it_is_sent() {
        let provider = Arc::new(TestProvider::new(Duration::from_millis(20)));
        let calls = (0..10).map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move {
                provider
                    .charge("pay-1", &method(Scenario::Succeed), &usd(100))
                    .await
                    .unwrap()
            })
        });
        let answers = futures::future::join_all(calls).await;
        let first = answers[0].as_ref().unwrap().clone();
        assert!(matches!(first, ChargeResult::Captured { .. }));
        assert!(answers.iter().all(|a| a.as_ref().unwrap() == &first));
        assert_eq!(provider.captures(), 1);
        provider
            .charge("pay-2", &method(Scenario::Succeed), &usd(100))
            .await
            .unwrap();
        assert_eq!(provider.captures(), 2);
    }

    #[tokio::test]
    async fn scenarios_decide_the_outcome() {
        let provider = TestProvider::new(Duration::ZERO);
        let declined = provider
            .charge("a", &method(Scenario::InsufficientFunds), &usd(1))
            .await
            .unwrap();
        let ChargeResult::Declined(failure) = declined else {
            panic!("expected a decline")
        };
        assert_eq!(failure.reason, FailureReason::InsufficientFunds);
        assert_eq!(failure.decline_code, "insufficient_funds");
        assert!(
            provider
                .charge("b", &method(Scenario::Transient), &usd(1))
                .await
                .is_err()
        );
        let mut expired = method(Scenario::Succeed);
        expired.exp_year = 2001;
        let ChargeResult::Declined(failure) =
            provider.charge("c", &expired, &usd(1)).await.unwrap()
        else {
            panic!("expected a decline")
        };
        assert_eq!(failure.reason, FailureReason::ExpiredCard);
        assert_eq!(provider.captures(), 0);
    }
}
