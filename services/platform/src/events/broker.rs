//! One AMQP connection per process, re-established on demand after the broker restarts or the
//! network drops; channels are cheap and made per user (relay, consumer, admin).

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::EventSettings;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to the broker. The text never carries the URL (it holds a password).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the message broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("message broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused message {0}")]
    Nacked(String),
    #[error("the broker closed the channel")]
    Closed,
}

/// The process's connection to RabbitMQ.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: EventSettings,
    name: String,
    connection: Mutex<Option<Connection>>,
}

impl Broker {
    /// A broker handle that connects on first use; `name` shows in RabbitMQ's connection list.
    pub fn new(settings: EventSettings, name: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                name: format!("shopmesh-{name}"),
                connection: Mutex::new(None),
            }),
        }
    }

    pub fn settings(&self) -> &EventSettings {
        &self.inner.settings
    }

    /// A new channel on a live connection, connecting first when there is none.
    pub async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut connection = self.inner.connection.lock().await;
        if let Some(live) = connection.as_ref().filter(|c| c.status().connected()) {
            // A connection whose peer vanished may still look connected until its heartbeat
            // fails; a channel that does not open in time means a new connection.
            match tokio::time::timeout(CONNECT_TIMEOUT, live.create_channel()).await {
                Ok(Ok(channel)) => return Ok(channel),
                Ok(Err(err)) => tracing::warn!(error = %err, "AMQP channel failed; reconnecting"),
                Err(_) => tracing::warn!("AMQP channel did not open in time; reconnecting"),
            }
        }
        let properties =
            ConnectionProperties::default().with_connection_name(self.inner.name.clone().into());
        let fresh = tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(self.inner.settings.amqp_url.expose(), properties),
        )
        .await
        .map_err(|_| BrokerError::Timeout(CONNECT_TIMEOUT))??;
        let channel = tokio::time::timeout(CONNECT_TIMEOUT, fresh.create_channel())
            .await
            .map_err(|_| BrokerError::Timeout(CONNECT_TIMEOUT))??;
        *connection = Some(fresh);
        Ok(channel)
    }

    /// A channel in confirm mode with the events exchange declared: what publishers use.
    pub async fn publisher(&self) -> Result<Channel, BrokerError> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.declare_exchange(&channel).await?;
        Ok(channel)
    }

    /// Declares the durable topic exchange every event goes to.
    pub async fn declare_exchange(&self, channel: &Channel) -> Result<(), BrokerError> {
        channel
            .exchange_declare(
                self.inner.settings.exchange.clone().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Whether the broker answers (readiness).
    pub async fn check(&self) -> Result<(), String> {
        let channel = self.channel().await.map_err(|err| err.to_string())?;
        let _ = channel.close(200, "ok".into()).await;
        Ok(())
    }

    /// Closes the connection (shutdown).
    pub async fn close(&self) {
        if let Some(connection) = self.inner.connection.lock().await.take() {
            let _ = connection.close(200, "shutdown".into()).await;
        }
    }
}
