//! Events the user service records in its outbox: `user.registered` and `user.updated`, with the
//! protobuf payloads of `shopmesh.events.v1`.
//!
//! MongoDB gives the user service no multi-document transaction it can rely on, so the outbox is
//! a field of the account itself: each event is appended to the `pending_events` array of the
//! user document whose change it describes, in the very insert or update that makes the change
//! (one document, so atomic). None is lost and none is recorded for a change that did not
//! happen. The relay reads them with [`crate::repo::UserRepo::pending_events`], publishes them
//! and removes them with [`crate::repo::UserRepo::mark_events_published`]. They never leave the
//! repository in a [`User`].

use chrono::{DateTime, Utc};
use prost::Message;
use shopmesh_contracts::pb::shopmesh::events::v1 as pb;

use crate::domain::User;
use crate::grpc::{role_pb, tier_pb};

pub const USER_REGISTERED: &str = "user.registered";
pub const USER_UPDATED: &str = "user.updated";

/// One event of the outbox: what a user document's `pending_events` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEvent {
    /// UUIDv7, the event id (consumers deduplicate on it).
    pub id: String,
    /// The routing key, e.g. "user.registered".
    pub event_type: String,
    /// The user id.
    pub aggregate_id: String,
    /// Type URL of the payload message, "type.googleapis.com/shopmesh.events.v1.<Name>".
    pub payload_type: String,
    /// The encoded protobuf payload message (the relay wraps it in an EventEnvelope).
    pub payload: Vec<u8>,
    /// The request id of the call that caused the change; empty when there was none.
    pub correlation_id: String,
    /// When the change was made (millisecond precision, as MongoDB stores it).
    pub created_at: DateTime<Utc>,
}

impl PendingEvent {
    fn new(
        user: &User,
        event_type: &str,
        name: &str,
        payload: Vec<u8>,
        correlation_id: &str,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.to_owned(),
            aggregate_id: user.id.clone(),
            payload_type: format!("type.googleapis.com/shopmesh.events.v1.{name}"),
            payload,
            correlation_id: correlation_id.to_owned(),
            created_at: at,
        }
    }

    /// The event of a new account.
    pub fn registered(user: &User, correlation_id: &str, at: DateTime<Utc>) -> Self {
        let payload = pb::UserRegistered {
            user_id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            role: role_pb(user.role).into(),
            tier: tier_pb(user.tier).into(),
        }
        .encode_to_vec();
        Self::new(
            user,
            USER_REGISTERED,
            "UserRegistered",
            payload,
            correlation_id,
            at,
        )
    }

    /// The event of a changed profile, role or tier: the whole new state of `user`.
    pub fn updated(user: &User, correlation_id: &str, at: DateTime<Utc>) -> Self {
        let payload = pb::UserUpdated {
            user_id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
            phone: user.phone.clone(),
            role: role_pb(user.role).into(),
            tier: tier_pb(user.tier).into(),
        }
        .encode_to_vec();
        Self::new(
            user,
            USER_UPDATED,
            "UserUpdated",
            payload,
            correlation_id,
            at,
        )
    }
}

/// Whether `after` differs from `before` in what user.updated carries (profile, role, tier).
pub fn changed(before: &User, after: &User) -> bool {
    before.email != after.email
        || before.name != after.name
        || before.phone != after.phone
        || before.role != after.role
        || before.tier != after.tier
}
