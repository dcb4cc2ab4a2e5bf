//! The use cases of the inbox API: every one acts on the caller's own notifications.

use chrono::{DateTime, SecondsFormat, Utc};
use shopmesh_platform::{cursor, page};
use uuid::Uuid;

use crate::error::Error;
use crate::kind::{Channel, Kind};
use crate::repo::{ListFilter, Notification, Store};

/// One page of a list.
#[derive(Clone, Debug)]
pub struct Page {
    pub notifications: Vec<Notification>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// The inbox of every user.
#[derive(Clone, Debug)]
pub struct Inbox {
    store: Store,
}

/// The part of a page token that names the list's filters: a token is valid only for the list
/// it came from.
fn filter_key(filter: ListFilter) -> String {
    format!(
        "n1|{}|{}",
        u8::from(filter.unread_only),
        filter.channel.map_or("all", Channel::as_str)
    )
}

fn parse_token(token: &str, filter: ListFilter) -> Result<Option<(DateTime<Utc>, Uuid)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let parts = cursor::decode(token, 3).ok_or(Error::BadPageToken)?;
    if parts[0] != filter_key(filter) {
        return Err(Error::BadPageToken);
    }
    let at = DateTime::parse_from_rfc3339(&parts[1])
        .map_err(|_| Error::BadPageToken)?
        .with_timezone(&Utc);
    let id = Uuid::parse_str(&parts[2]).map_err(|_| Error::BadPageToken)?;
    Ok(Some((at, id)))
}

/// A notification id as sent: one that is not a UUID names no notification.
fn notification_id(raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::NotFound)
}

impl Inbox {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub async fn ready(&self) -> Result<(), Error> {
        Ok(self.store.ping().await?)
    }

    /// A page of the user's notifications, newest first.
    pub async fn list(
        &self,
        user_id: &str,
        page_size: i32,
        page_token: &str,
        filter: ListFilter,
    ) -> Result<Page, Error> {
        let size = page::page_size(page_size)
            .ok_or_else(|| Error::field("page_size", "must be between 0 and 100"))?;
        let after = parse_token(page_token, filter)?;
        let limit = i64::try_from(size).unwrap_or(20);
        let mut notifications = self.store.list(user_id, filter, after, limit + 1).await?;
        let more = notifications.len() > size;
        notifications.truncate(size);
        let next_page_token = match notifications.last() {
            Some(last) if more => cursor::encode(&[
                &filter_key(filter),
                &last.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                &last.id.to_string(),
            ]),
            _ => String::new(),
        };
        Ok(Page {
            notifications,
            next_page_token,
        })
    }

    pub async fn mark_read(&self, user_id: &str, id: &str) -> Result<Notification, Error> {
        self.store
            .mark_read(user_id, notification_id(id)?)
            .await?
            .ok_or(Error::NotFound)
    }

    pub async fn mark_all_read(&self, user_id: &str) -> Result<u64, Error> {
        Ok(self.store.mark_all_read(user_id).await?)
    }

    pub async fn delete(&self, user_id: &str, id: &str) -> Result<(), Error> {
        if self.store.delete(user_id, notification_id(id)?).await? {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    pub async fn unread_count(&self, user_id: &str) -> Result<i64, Error> {
        Ok(self.store.unread_count(user_id).await?)
    }

    /// The kinds the user muted for e-mail.
    pub async fn email_muted(&self, user_id: &str) -> Result<Vec<Kind>, Error> {
        Ok(self.store.mutes(user_id).await?)
    }

    /// Replaces the kinds the user muted for e-mail; returns them as stored.
    pub async fn set_email_muted(&self, user_id: &str, kinds: &[Kind]) -> Result<Vec<Kind>, Error> {
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        self.store.set_mutes(user_id, &kinds).await?;
        Ok(kinds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_valid_only_for_its_own_filters() {
        let all = ListFilter::default();
        let unread = ListFilter {
            unread_only: true,
            channel: None,
        };
        let id = Uuid::now_v7();
        let token = cursor::encode(&[
            &filter_key(all),
            "2026-01-02T03:04:05.123456Z",
            &id.to_string(),
        ]);
        let (at, parsed) = parse_token(&token, all).unwrap().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(at.timestamp_subsec_micros(), 123_456);
        assert!(matches!(
            parse_token(&token, unread),
            Err(Error::BadPageToken)
        ));
        assert!(matches!(
            parse_token("garbage!", all),
            Err(Error::BadPageToken)
        ));
        assert!(parse_token("", all).unwrap().is_none());
    }
}
