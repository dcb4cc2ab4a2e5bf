//! Tunables of the notification service, read from the environment once at start; tests build
//! the struct directly.
//!
//! E-mail goes out over plain SMTP (no TLS, no authentication): in production point
//! `NOTIFICATION_SMTP_HOST` at a relay on the private network (a local MTA or a sidecar that
//! relays onwards with TLS and credentials), or build lettre with a TLS feature. No setting here
//! is a secret.

use std::time::Duration;

use lettre::message::Mailbox;
use shopmesh_platform::Env;
use shopmesh_platform::pg::PoolSettings;
use shopmesh_platform::settings::SettingsError;

/// The settings key of the database URL.
pub const DATABASE_URL: &str = "NOTIFICATION_DATABASE_URL";
/// The database URL in the dev profile.
pub const DEV_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/shopmesh_notification";

/// Where and how e-mail is sent.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// The `From:` of every e-mail.
    pub from: Mailbox,
    /// Longest one SMTP conversation (connect, send) may take.
    pub timeout: Duration,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 2525,
            from: Mailbox::new(
                Some("shopmesh".to_owned()),
                lettre::Address::new_dangerous("no-reply", "shopmesh.local"),
            ),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How e-mail jobs are retried.
#[derive(Clone, Copy, Debug)]
pub struct EmailRetry {
    /// Sending attempts of one e-mail, the first included, before it is given up (FAILED).
    pub max_attempts: u32,
    /// Delay after the first failure; it doubles with every further failure (with jitter).
    pub backoff: Duration,
    /// The longest delay between two attempts.
    pub backoff_max: Duration,
}

#[derive(Clone, Debug)]
pub struct NotificationConfig {
    pub smtp: SmtpSettings,
    pub retry: EmailRetry,
    /// How often the sender looks for due e-mails when nothing woke it (retries fall due this
    /// way; new e-mails wake it at once).
    pub email_poll: Duration,
    /// E-mails claimed per pass.
    pub email_batch: u32,
    pub pool: PoolSettings,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            smtp: SmtpSettings::default(),
            retry: EmailRetry {
                max_attempts: 8,
                backoff: Duration::from_secs(1),
                backoff_max: Duration::from_secs(300),
            },
            email_poll: Duration::from_secs(1),
            email_batch: 20,
            pool: PoolSettings::default(),
        }
    }
}

/// A mailbox as in `shopmesh <no-reply@shopmesh.local>` or `no-reply@shopmesh.local`.
fn mailbox(key: &str, value: &str) -> Result<Mailbox, SettingsError> {
    value
        .parse::<Mailbox>()
        .map_err(|err| SettingsError::new(key, format!("not an e-mail address: {err}")))
}

impl NotificationConfig {
    /// The defaults with what the environment sets.
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let defaults = Self::default();
        let statement_timeout = env.millis("NOTIFICATION_STATEMENT_TIMEOUT_MS", "5000")?;
        if statement_timeout.is_zero() {
            anyhow::bail!("invalid setting NOTIFICATION_STATEMENT_TIMEOUT_MS: must be at least 1");
        }
        let port: u16 = env.parse("NOTIFICATION_SMTP_PORT", "2525")?;
        if port == 0 {
            anyhow::bail!("invalid setting NOTIFICATION_SMTP_PORT: must be a port (1 to 65535)");
        }
        let timeout = env.millis("NOTIFICATION_SMTP_TIMEOUT_MS", "10000")?;
        if timeout.is_zero() {
            anyhow::bail!("invalid setting NOTIFICATION_SMTP_TIMEOUT_MS: must be at least 1");
        }
        let backoff = env.millis("NOTIFICATION_EMAIL_BACKOFF_MS", "1000")?;
        let backoff_max = env.millis("NOTIFICATION_EMAIL_BACKOFF_MAX_MS", "300000")?;
        if backoff_max < backoff {
            anyhow::bail!(
                "invalid setting NOTIFICATION_EMAIL_BACKOFF_MAX_MS: must be at least \
                 NOTIFICATION_EMAIL_BACKOFF_MS"
            );
        }
        let email_poll = env.millis("NOTIFICATION_EMAIL_POLL_MS", "1000")?;
        if email_poll.is_zero() {
            anyhow::bail!("invalid setting NOTIFICATION_EMAIL_POLL_MS: must be at least 1");
        }
        let host = env.string("NOTIFICATION_SMTP_HOST", "127.0.0.1");
        Ok(Self {
            smtp: SmtpSettings {
                host: host.trim().to_owned(),
                port,
                from: mailbox(
                    "NOTIFICATION_SMTP_FROM",
                    &env.string(
                        "NOTIFICATION_SMTP_FROM",
                        "shopmesh <no-reply@shopmesh.local>",
                    ),
                )?,
                timeout,
            },
            retry: EmailRetry {
                max_attempts: env.positive("NOTIFICATION_EMAIL_MAX_ATTEMPTS", "8")?,
                backoff,
                backoff_max,
            },
            email_poll,
            email_batch: env.positive("NOTIFICATION_EMAIL_BATCH", "20")?,
            pool: PoolSettings {
                max_connections: env.positive("NOTIFICATION_DB_MAX_CONNECTIONS", "10")?,
                statement_timeout,
                ..defaults.pool
            },
        })
    }

    /// How long a claimed e-mail is held by its sender: longer than one SMTP conversation, so
    /// that a live sender never has its job taken over, and a dead one's is retried soon.
    pub fn claim_lease(&self) -> Duration {
        self.smtp.timeout + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::from_map(map).unwrap()
    }

    #[test]
    fn the_defaults_send_to_a_local_relay() {
        let config = NotificationConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.smtp.host, "127.0.0.1");
        assert_eq!(config.smtp.port, 2525);
        assert_eq!(
            config.smtp.from.to_string(),
            "shopmesh <no-reply@shopmesh.local>"
        );
        assert_eq!(config.retry.max_attempts, 8);
        assert_eq!(config.retry.backoff, Duration::from_secs(1));
    }

    #[test]
    fn the_environment_sets_the_tunables() {
        let config = NotificationConfig::from_env(&env(&[
            ("NOTIFICATION_SMTP_HOST", "mail.internal"),
            ("NOTIFICATION_SMTP_PORT", "25"),
            ("NOTIFICATION_SMTP_FROM", "Shop <shop@example.com>"),
            ("NOTIFICATION_EMAIL_MAX_ATTEMPTS", "3"),
            ("NOTIFICATION_EMAIL_BACKOFF_MS", "20"),
            ("NOTIFICATION_EMAIL_BACKOFF_MAX_MS", "100"),
            ("NOTIFICATION_DB_MAX_CONNECTIONS", "4"),
        ]))
        .unwrap();
        assert_eq!(config.smtp.host, "mail.internal");
        assert_eq!(config.smtp.port, 25);
        assert_eq!(config.smtp.from.email.to_string(), "shop@example.com");
        assert_eq!(config.retry.max_attempts, 3);
        assert_eq!(config.retry.backoff, Duration::from_millis(20));
        assert_eq!(config.retry.backoff_max, Duration::from_millis(100));
        assert_eq!(config.pool.max_connections, 4);
    }

    #[test]
    fn nonsense_is_refused_with_its_key() {
        for (key, value) in [
            ("NOTIFICATION_SMTP_PORT", "0"),
            ("NOTIFICATION_SMTP_PORT", "70000"),
            ("NOTIFICATION_SMTP_FROM", "not an address"),
            ("NOTIFICATION_EMAIL_MAX_ATTEMPTS", "0"),
            ("NOTIFICATION_EMAIL_BACKOFF_MS", "soon"),
            ("NOTIFICATION_EMAIL_POLL_MS", "0"),
        ] {
            let err = NotificationConfig::from_env(&env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }
}
