//! Ports for account storage and refresh-token families, and their adapters: MongoDB for
//! accounts and profiles (with the outbox of their events, see [`crate::events`]), Redis for
//! refresh tokens.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{ClientOptions, FindOneAndUpdateOptions, IndexOptions, ReturnDocument};
use mongodb::{Collection, IndexModel};
use serde::{Deserialize, Serialize};
use shopmesh_platform::auth::{Role, Tier};

use crate::domain::{Address, AddressFields, User};
use crate::events::PendingEvent;

/// A storage failure. `Duplicate` is the unique email index refusing a second account.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("duplicate key")]
    Duplicate,
    #[error(transparent)]
    Backend(#[from] anyhow::Error),
}

/// Accounts and profiles.
#[async_trait]
pub trait UserRepo: Send + Sync {
    /// Creates the indexes the invariants rely on (idempotent).
    async fn migrate(&self) -> Result<(), RepoError>;
    async fn ping(&self) -> Result<(), RepoError>;
    /// Inserts the account with `event` (its user.registered) as its one pending event, in the
    /// same insert.
    async fn insert(&self, user: &User, event: &PendingEvent) -> Result<(), RepoError>;
    async fn by_id(&self, id: &str) -> Result<Option<User>, RepoError>;
    async fn by_email(&self, normalized: &str) -> Result<Option<User>, RepoError>;
    /// Writes the profile and access of `user` (name, phone, role, tier) with its `version`
    /// and `updated_at` if the stored account is still at `expected_version`, appending `event`
    /// (its user.updated) to the account's pending events in the same update. `None` when the
    /// account changed in between (or is gone): nothing was written.
    async fn update_account(
        &self,
        user: &User,
        expected_version: i64,
        event: &PendingEvent,
    ) -> Result<Option<User>, RepoError>;
    /// Replaces the address list if the account is still at `expected_version`; `None` when the
    /// account changed in between (or is gone).
    async fn replace_addresses(
        &self,
        id: &str,
        expected_version: i64,
        addresses: &[Address],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, RepoError>;
    /// Accounts in id order after `after`, optionally filtered by an email substring.
    async fn list(
        &self,
        after: Option<&str>,
        email_contains: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>, RepoError>;
    /// For the outbox relay: up to `limit` events not published yet, of all accounts, oldest
    /// first (an account's own events in the order they were recorded).
    async fn pending_events(&self, limit: usize) -> Result<Vec<PendingEvent>, RepoError>;
    /// For the outbox relay: removes the events with these ids from their accounts' pending
    /// events (unknown ids are ignored, so a repeat does no harm).
    async fn mark_events_published(&self, ids: &[String]) -> Result<(), RepoError>;
}

/// The field of a user document that holds its outbox (see [`crate::events`]).
const PENDING_EVENTS: &str = "pending_events";

/// One element of a user document's `pending_events`.
#[derive(Debug, Serialize, Deserialize)]
struct EventDoc {
    id: String,
    event_type: String,
    aggregate_id: String,
    payload_type: String,
    payload: bson::Binary,
    correlation_id: String,
    created_at: bson::DateTime,
}

fn event_doc(event: &PendingEvent) -> Document {
    doc! {
        "id": &event.id,
        "event_type": &event.event_type,
        "aggregate_id": &event.aggregate_id,
        "payload_type": &event.payload_type,
        "payload": bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: event.payload.clone(),
        },
        "correlation_id": &event.correlation_id,
        "created_at": to_bson_time(event.created_at),
    }
}

impl From<EventDoc> for PendingEvent {
    fn from(doc: EventDoc) -> Self {
        Self {
            id: doc.id,
            event_type: doc.event_type,
            aggregate_id: doc.aggregate_id,
            payload_type: doc.payload_type,
            payload: doc.payload.bytes,
            correlation_id: doc.correlation_id,
            created_at: from_bson_time(doc.created_at),
        }
    }
}

/// Reads of accounts leave the outbox out: it is the relay's, never part of a [`User`].
fn without_events() -> Document {
    doc! { PENDING_EVENTS: 0 }
}

#[derive(Debug, Serialize, Deserialize)]
struct AddressDoc {
    id: String,
    label: String,
    recipient: String,
    line1: String,
    line2: String,
    city: String,
    region: String,
    postal_code: String,
    country: String,
    phone: String,
    is_default: bool,
    created_at: bson::DateTime,
}

/// A user document as the service reads and writes it. The document also holds
/// `pending_events`, which this type leaves out on purpose (reads project it away, inserts add
/// it), so the outbox cannot reach a [`User`], an API response or the user's JSON.
#[derive(Debug, Serialize, Deserialize)]
struct UserDoc {
    #[serde(rename = "_id")]
    id: String,
    email: String,
    email_normalized: String,
    password_hash: String,
    name: String,
    phone: String,
    role: String,
    tier: String,
    addresses: Vec<AddressDoc>,
    version: i64,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
}

fn to_bson_time(time: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(time.timestamp_millis())
}

fn from_bson_time(time: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(time.timestamp_millis()).unwrap_or_default()
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Customer => "customer",
        Role::Admin => "admin",
    }
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Standard => "standard",
        Tier::Vip => "vip",
    }
}

fn address_doc(address: &Address) -> AddressDoc {
    let f = &address.fields;
    AddressDoc {
        id: address.id.clone(),
        label: f.label.clone(),
        recipient: f.recipient.clone(),
        line1: f.line1.clone(),
        line2: f.line2.clone(),
        city: f.city.clone(),
        region: f.region.clone(),
        postal_code: f.postal_code.clone(),
        country: f.country.clone(),
        phone: f.phone.clone(),
        is_default: address.is_default,
        created_at: to_bson_time(address.created_at),
    }
}

impl From<UserDoc> for User {
    fn from(doc: UserDoc) -> Self {
        Self {
            id: doc.id,
            email: doc.email,
            email_normalized: doc.email_normalized,
            password_hash: doc.password_hash,
            name: doc.name,
            phone: doc.phone,
            role: if doc.role == "admin" {
                Role::Admin
            } else {
                Role::Customer
            },
            tier: if doc.tier == "vip" {
                Tier::Vip
            } else {
                Tier::Standard
            },
            addresses: doc
                .addresses
                .into_iter()
                .map(|a| Address {
                    id: a.id,
                    fields: AddressFields {
                        label: a.label,
                        recipient: a.recipient,
                        line1: a.line1,
                        line2: a.line2,
                        city: a.city,
                        region: a.region,
                        postal_code: a.postal_code,
                        country: a.country,
                        phone: a.phone,
                    },
                    is_default: a.is_default,
                    created_at: from_bson_time(a.created_at),
                })
                .collect(),
            version: doc.version,
            created_at: from_bson_time(doc.created_at),
            updated_at: from_bson_time(doc.updated_at),
        }
    }
}

fn user_doc(user: &User) -> UserDoc {
    UserDoc {
        id: user.id.clone(),
        email: user.email.clone(),
        email_normalized: user.email_normalized.clone(),
        password_hash: user.password_hash.clone(),
        name: user.name.clone(),
        phone: user.phone.clone(),
        role: role_name(user.role).into(),
        tier: tier_name(user.tier).into(),
        addresses: user.addresses.iter().map(address_doc).collect(),
        version: user.version,
        created_at: to_bson_time(user.created_at),
        updated_at: to_bson_time(user.updated_at),
    }
}

/// True when MongoDB refused a write because of a unique index (E11000).
fn is_duplicate(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|e| e.code == 11000)),
        _ => false,
    }
}

fn backend(err: mongodb::error::Error) -> RepoError {
    RepoError::Backend(anyhow::Error::new(err).context("mongodb"))
}

/// Escapes regex metacharacters so a search string matches literally.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// [`UserRepo`] on a MongoDB collection `users`.
#[derive(Clone)]
pub struct MongoUserRepo {
    users: Collection<UserDoc>,
    db: mongodb::Database,
}

impl MongoUserRepo {
    pub async fn connect(url: &str, database: &str) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(url).await?;
        options.app_name = Some("shopmesh-user".into());
        options.connect_timeout = Some(Duration::from_secs(3));
        options.server_selection_timeout = Some(Duration::from_secs(5));
        let client = mongodb::Client::with_options(options)?;
        let db = client.database(database);
        Ok(Self {
            users: db.collection("users"),
            db,
        })
    }

    async fn find_and_set(
        &self,
        filter: Document,
        set: Document,
    ) -> Result<Option<User>, RepoError> {
        self.find_and_update(filter, doc! { "$set": set }).await
    }

    async fn find_and_update(
        &self,
        filter: Document,
        update: Document,
    ) -> Result<Option<User>, RepoError> {
        let options = FindOneAndUpdateOptions::builder()
            .return_document(ReturnDocument::After)
            .projection(without_events())
            .build();
        self.users
            .find_one_and_update(filter, update)
            .with_options(options)
            .await
            .map(|doc| doc.map(User::from))
            .map_err(backend)
    }
}

#[async_trait]
impl UserRepo for MongoUserRepo {
    async fn migrate(&self) -> Result<(), RepoError> {
        let unique_email = IndexModel::builder()
            .keys(doc! { "email_normalized": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("email_normalized_unique".to_owned())
                    .build(),
            )
            .build();
        self.users
            .create_index(unique_email)
            .await
            .map_err(backend)?;
        // The relay finds and removes published events by id.
        let pending_events = IndexModel::builder()
            .keys(doc! { "pending_events.id": 1 })
            .options(
                IndexOptions::builder()
                    .name("pending_events_id".to_owned())
                    .build(),
            )
            .build();
        self.users
            .create_index(pending_events)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), RepoError> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(|_| ())
            .map_err(backend)
    }

    async fn insert(&self, user: &User, event: &PendingEvent) -> Result<(), RepoError> {
        let mut document =
            bson::to_document(&user_doc(user)).map_err(|err| RepoError::Backend(err.into()))?;
        document.insert(PENDING_EVENTS, vec![Bson::Document(event_doc(event))]);
        let users = self.users.clone_with_type::<Document>();
        match users.insert_one(document).await {
            Ok(_) => Ok(()),
            Err(err) if is_duplicate(&err) => Err(RepoError::Duplicate),
            Err(err) => Err(backend(err)),
        }
    }

    async fn by_id(&self, id: &str) -> Result<Option<User>, RepoError> {
        self.users
            .find_one(doc! { "_id": id })
            .projection(without_events())
            .await
            .map(|doc| doc.map(User::from))
            .map_err(backend)
    }

    async fn by_email(&self, normalized: &str) -> Result<Option<User>, RepoError> {
        self.users
            .find_one(doc! { "email_normalized": normalized })
            .projection(without_events())
            .await
            .map(|doc| doc.map(User::from))
            .map_err(backend)
    }

    async fn update_account(
        &self,
        user: &User,
        expected_version: i64,
        event: &PendingEvent,
    ) -> Result<Option<User>, RepoError> {
        self.find_and_update(
            doc! { "_id": &user.id, "version": expected_version },
            doc! {
                "$set": {
                    "name": &user.name,
                    "phone": &user.phone,
                    "role": role_name(user.role),
                    "tier": tier_name(user.tier),
                    "version": user.version,
                    "updated_at": to_bson_time(user.updated_at),
                },
                "$push": { PENDING_EVENTS: event_doc(event) },
            },
        )
        .await
    }

    async fn replace_addresses(
        &self,
        id: &str,
        expected_version: i64,
        addresses: &[Address],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, RepoError> {
        let docs = addresses
            .iter()
            .map(|a| bson::to_bson(&address_doc(a)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| RepoError::Backend(err.into()))?;
        self.find_and_set(
            doc! { "_id": id, "version": expected_version },
            doc! {
                "addresses": docs,
                "version": expected_version + 1,
                "updated_at": to_bson_time(now),
            },
        )
        .await
    }

    async fn list(
        &self,
        after: Option<&str>,
        email_contains: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>, RepoError> {
        let mut filter = Document::new();
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after });
        }
        if let Some(text) = email_contains.filter(|t| !t.is_empty()) {
            filter.insert(
                "email_normalized",
                doc! { "$regex": regex_literal(&text.to_lowercase()) },
            );
        }
        let cursor = self
            .users
            .find(filter)
            .projection(without_events())
            .sort(doc! { "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(backend)?;
        let docs: Vec<UserDoc> = cursor.try_collect().await.map_err(backend)?;
        Ok(docs.into_iter().map(User::from).collect())
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<PendingEvent>, RepoError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let pipeline = [
            // Accounts with at least one pending event (through the pending_events.id index).
            doc! { "$match": { "pending_events.id": { "$exists": true } } },
            doc! { "$project": { PENDING_EVENTS: 1 } },
            doc! { "$unwind": { "path": "$pending_events", "includeArrayIndex": "position" } },
            // Oldest first; an account's events of the same millisecond in the order they
            // were appended.
            doc! { "$sort": { "pending_events.created_at": 1, "_id": 1, "position": 1 } },
            doc! { "$limit": i64::try_from(limit).unwrap_or(i64::MAX) },
        ];
        let cursor = self.users.aggregate(pipeline).await.map_err(backend)?;
        let rows: Vec<Document> = cursor.try_collect().await.map_err(backend)?;
        rows.into_iter()
            .map(|row| {
                let event = row
                    .get_document(PENDING_EVENTS)
                    .map_err(|err| RepoError::Backend(err.into()))?;
                bson::from_document::<EventDoc>(event.clone())
                    .map(PendingEvent::from)
                    .map_err(|err| RepoError::Backend(err.into()))
            })
            .collect()
    }

    async fn mark_events_published(&self, ids: &[String]) -> Result<(), RepoError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.users
            .update_many(
                doc! { "pending_events.id": { "$in": ids } },
                doc! { "$pull": { PENDING_EVENTS: { "id": { "$in": ids } } } },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// The outcome of presenting a refresh token.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: here is its successor, for this user.
    Rotated { user_id: String, token: String },
    /// Unknown, expired, malformed, or its family was revoked.
    Invalid,
    /// An already-rotated token came back: the whole family is now revoked.
    Reused,
}

/// Refresh-token families: opaque tokens, stored hashed, rotated on every use.
#[async_trait]
pub trait RefreshTokens: Send + Sync {
    async fn ping(&self) -> anyhow::Result<()>;
    /// Starts a new family for `user_id` and returns its first token.
    async fn issue(&self, user_id: &str) -> anyhow::Result<String>;
    async fn rotate(&self, token: &str) -> anyhow::Result<Rotation>;
    /// Revokes the family of `token`; unknown tokens are ignored. True when the token was one of
    /// its family's (current or rotated), so the caller may end the family's session too.
    async fn revoke(&self, token: &str) -> anyhow::Result<bool>;
}

/// [`RefreshTokens`] in Redis. A token is `<family>.<secret>`; only its SHA-256 is stored. Keys
/// of one family share a hash tag, so the scripts stay valid on a Redis cluster.
#[derive(Clone)]
pub struct RedisRefreshTokens {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    ttl: Duration,
}

const ISSUE: &str = r"
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'cur', ARGV[2], 'revoked', '0')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return 1
";

const ROTATE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return {'invalid'} end
local f = redis.call('HMGET', KEYS[1], 'uid', 'cur', 'revoked')
if not f[1] then return {'invalid'} end
if f[3] == '1' then return {'invalid'} end
if f[2] ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return {'reused'}
end
redis.call('HSET', KEYS[1], 'cur', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[3], f[1], 'EX', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {'ok', f[1]}
";

const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 1
";

struct ParsedToken {
    family: String,
    hash: String,
}

fn parse_token(token: &str) -> Option<ParsedToken> {
    use sha2::{Digest, Sha256};
    let (family, secret) = token.split_once('.')?;
    let family_ok = family.len() == 32 && family.chars().all(|c| c.is_ascii_hexdigit());
    let secret_ok = (40..=64).contains(&secret.len())
        && secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !family_ok || !secret_ok {
        return None;
    }
    let hash = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(ParsedToken {
        family: family.to_owned(),
        hash,
    })
}

/// The family of a well-formed refresh token: the login session its access tokens name (`sid`).
pub fn token_family(token: &str) -> Option<String> {
    parse_token(token).map(|parsed| parsed.family)
}

fn new_token(family: &str) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    format!(
        "{family}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    )
}

impl RedisRefreshTokens {
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2);
        let redis = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
        })
    }

    fn family_key(&self, family: &str) -> String {
        format!("{}rtf:{{{family}}}", self.prefix)
    }

    fn token_key(&self, family: &str, hash: &str) -> String {
        format!("{}rt:{{{family}}}:{hash}", self.prefix)
    }
}

#[async_trait]
impl RefreshTokens for RedisRefreshTokens {
    async fn ping(&self) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let _: String = redis::cmd("PING").query_async(&mut redis).await?;
        Ok(())
    }

    async fn issue(&self, user_id: &str) -> anyhow::Result<String> {
        let family = uuid::Uuid::now_v7().simple().to_string();
        let token = new_token(&family);
        let parsed = parse_token(&token).ok_or_else(|| anyhow::anyhow!("token format"))?;
        let mut redis = self.redis.clone();
        let _: i64 = redis::Script::new(ISSUE)
            .key(self.family_key(&family))
            .key(self.token_key(&family, &parsed.hash))
            .arg(user_id)
            .arg(&parsed.hash)
            .arg(self.ttl.as_secs())
            .invoke_async(&mut redis)
            .await?;
        Ok(token)
    }

    async fn rotate(&self, token: &str) -> anyhow::Result<Rotation> {
        let Some(old) = parse_token(token) else {
            return Ok(Rotation::Invalid);
        };
        let next = new_token(&old.family);
        let next_hash = parse_token(&next)
            .ok_or_else(|| anyhow::anyhow!("token format"))?
            .hash;
        let mut redis = self.redis.clone();
        let reply: Vec<String> = redis::Script::new(ROTATE)
            .key(self.family_key(&old.family))
            .key(self.token_key(&old.family, &old.hash))
            .key(self.token_key(&old.family, &next_hash))
            .arg(&old.hash)
            .arg(&next_hash)
            .arg(self.ttl.as_secs())
            .invoke_async(&mut redis)
            .await?;
        Ok(match reply.as_slice() {
            [ok, user_id] if ok == "ok" => Rotation::Rotated {
                user_id: user_id.clone(),
                token: next,
            },
            [reused] if reused == "reused" => Rotation::Reused,
            _ => Rotation::Invalid,
        })
    }

    async fn revoke(&self, token: &str) -> anyhow::Result<bool> {
        let Some(parsed) = parse_token(token) else {
            return Ok(false);
        };
        let mut redis = self.redis.clone();
        let revoked: i64 = redis::Script::new(REVOKE)
            .key(self.family_key(&parsed.family))
            .key(self.token_key(&parsed.family, &parsed.hash))
            .invoke_async(&mut redis)
            .await?;
        Ok(revoked == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_a_family_and_a_secret() {
        let token = new_token(&uuid::Uuid::now_v7().simple().to_string());
        let parsed = parse_token(&token).unwrap();
        assert_eq!(parsed.hash.len(), 64);
        assert_eq!(token_family(&token), Some(parsed.family.clone()));
        assert_eq!(token_family("garbage"), None);
        assert!(parse_token("garbage").is_none());
        assert!(parse_token(&format!("{}x", token.split('.').next().unwrap())).is_none());
    }

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(regex_literal("a.b+c@x"), "a\\.b\\+c@x");
    }
}
