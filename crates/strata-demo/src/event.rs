//! Domain events, as they travel between services.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{DemoError, Result};

/// An event's id: time-ordered (milliseconds, then random), unique across services.
pub type EventId = String;

/// The stream an event travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Products: price, name, category changes.
    Products,
    /// Stock levels.
    Inventory,
    /// User profiles.
    Users,
}

impl Topic {
    /// The Redis stream's key. One hash tag for every topic: on a Redis Cluster a consumer
    /// reads all its topics in one blocking `XREADGROUP`, which needs them in one slot (the
    /// landscape's event rate is far below one node's).
    pub fn stream(self) -> &'static str {
        match self {
            Topic::Products => "events:{shop}:products",
            Topic::Inventory => "events:{shop}:inventory",
            Topic::Users => "events:{shop}:users",
        }
    }

    /// The topic's name, as stored in the outbox.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Products => "products",
            Topic::Inventory => "inventory",
            Topic::Users => "users",
        }
    }

    /// The topic of a stored name.
    pub fn parse(name: &str) -> Option<Topic> {
        [Topic::Products, Topic::Inventory, Topic::Users]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// A domain event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// A product's price, name or category changed.
    ProductChanged {
        /// The product.
        product_id: i64,
        /// Its category (caches of category listings depend on it).
        category_id: i64,
        /// The new price.
        price_cents: i64,
        /// The product's version after the change.
        version: i64,
    },
    /// A product's stock changed.
    InventoryChanged {
        /// The product.
        product_id: i64,
        /// Units in stock now.
        stock: i64,
    },
    /// A user's profile changed.
    UserUpdated {
        /// The user.
        user_id: i64,
    },
}

impl Event {
    /// The topic it travels on.
    pub fn topic(&self) -> Topic {
        match self {
            Event::ProductChanged { .. } => Topic::Products,
            Event::InventoryChanged { .. } => Topic::Inventory,
            Event::UserUpdated { .. } => Topic::Users,
        }
    }

    /// Its wire form.
    pub fn encode(&self) -> String {
        // Serialising plain fields and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the wire form; foreign bytes are a [`DemoError::BadEvent`].
    pub fn decode(id: &str, payload: &[u8]) -> Result<Event> {
        serde_json::from_slice(payload).map_err(|e| DemoError::BadEvent {
            id: id.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new event id: sorts by creation time.
pub(crate) fn new_id(now_ms: i64) -> EventId {
    format!("{now_ms:013}-{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_foreign_bytes_are_refused() {
        let e = Event::ProductChanged {
            product_id: 42,
            category_id: 7,
            price_cents: 1999,
            version: 3,
        };
        assert_eq!(Event::decode("1", e.encode().as_bytes()).unwrap(), e);
        assert!(matches!(
            Event::decode("2", b"\xff{not json"),
            Err(DemoError::BadEvent { .. })
        ));
        assert!(Event::decode("3", br#"{"type":"Unknown"}"#).is_err());
        assert!(new_id(5) < new_id(6));
        assert_eq!(Topic::parse("inventory"), Some(Topic::Inventory));
    }
}
