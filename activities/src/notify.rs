//! Order notifications on RabbitMQ: exchange `martix.orders` (topic), routing key
//! `order.<outcome>`, persistent, with publisher confirms, message id = the activity's
//! idempotency key so consumers can deduplicate redeliveries.

use crate::reference::AdapterError;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

/// The exchange order notifications go to.
pub const EXCHANGE: &str = "martix.orders";

/// A publisher that reconnects on the next call after a failure.
pub struct AmqpNotifier {
    url: String,
    link: Mutex<Option<(Connection, Channel)>>,
}

fn amqp(e: lapin::Error) -> AdapterError {
    AdapterError::Unavailable(format!("RabbitMQ: {e}"))
}

impl AmqpNotifier {
    /// Connects to `url` (`amqp://guest:guest@127.0.0.1:5672/%2f`) and declares the exchange.
    pub async fn connect(url: &str) -> Result<Self, AdapterError> {
        let me = Self {
            url: url.to_owned(),
            link: Mutex::new(None),
        };
        *me.link.lock().await = Some(me.open().await?);
        Ok(me)
    }

    async fn open(&self) -> Result<(Connection, Channel), AdapterError> {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(amqp)?;
        let channel = conn.create_channel().await.map_err(amqp)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp)?;
        channel
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp)?;
        Ok((conn, channel))
    }

    /// Publishes and waits for the broker's confirm.
    pub async fn publish(
        &self,
        message_id: &str,
        outcome: &str,
        body: &[u8],
    ) -> Result<(), AdapterError> {
        let mut link = self.link.lock().await;
        if link.as_ref().is_none_or(|(c, _)| !c.status().connected()) {
            *link = Some(self.open().await?);
        }
        let (_, channel) = link.as_ref().expect("opened above");
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_content_type("application/json".into());
        let result = async {
            channel
                .basic_publish(
                    EXCHANGE.into(),
                    format!("order.{outcome}").as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await?
                .await
        }
        .await;
        match result {
            Ok(confirm) if confirm.is_ack() => Ok(()),
            Ok(_) => Err(AdapterError::Unavailable(
                "RabbitMQ refused the message".into(),
            )),
            Err(e) => {
                *link = None;
                Err(amqp(e))
            }
        }
    }
}
