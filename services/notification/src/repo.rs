//! Every SQL statement of the notification service.
//!
//! What the event handler writes goes through the transaction the consumer runtime hands it
//! (the free functions taking a connection), so that it commits with the event's inbox row.
//! The inbox reads and changes of the gRPC API and the e-mail sender's claims go through
//! [`Store`]. Every inbox query names the owner: a notification of someone else's is never
//! read, changed or deleted, it is simply not found.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::kind::{Channel, Kind};

/// One notification in a user's inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub id: Uuid,
    pub user_id: String,
    pub kind: Kind,
    pub channel: Channel,
    pub subject: String,
    pub body: String,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: Uuid,
    user_id: String,
    kind: String,
    channel: String,
    subject: String,
    body: String,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl TryFrom<NotificationRow> for Notification {
    type Error = anyhow::Error;

    fn try_from(row: NotificationRow) -> Result<Self, Self::Error> {
        Ok(Self {
            kind: Kind::parse(&row.kind)
                .ok_or_else(|| anyhow::anyhow!("stored notification kind {:?}", row.kind))?,
            channel: Channel::parse(&row.channel)
                .ok_or_else(|| anyhow::anyhow!("stored notification channel {:?}", row.channel))?,
            id: row.id,
            user_id: row.user_id,
            subject: row.subject,
            body: row.body,
            read_at: row.read_at,
            created_at: row.created_at,
        })
    }
}

const COLUMNS: &str = "id, user_id, kind, channel, subject, body, read_at, created_at";

/// The local copy of a user the service writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub email: String,
    pub name: String,
}

/// A notification to write.
#[derive(Clone, Debug)]
pub struct NewNotification<'a> {
    pub id: Uuid,
    pub user_id: &'a str,
    pub kind: Kind,
    pub channel: Channel,
    pub subject: &'a str,
    pub body: &'a str,
    /// One notification per fact and user (`<kind>:<order id>` …).
    pub fact: &'a str,
    pub event_id: Uuid,
}

/// An e-mail to queue for a notification.
#[derive(Clone, Debug)]
pub struct NewEmail<'a> {
    pub notification_id: Uuid,
    pub user_id: &'a str,
    pub to_address: &'a str,
    pub to_name: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}

/// Inserts or updates the copy of a user, unless it reflects a later change already (an old
/// event re-driven after a newer one).
pub async fn upsert_recipient(
    conn: &mut PgConnection,
    user_id: &str,
    email: &str,
    name: &str,
    changed_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into recipients (user_id, email, name, changed_at) values ($1, $2, $3, $4) \
         on conflict (user_id) do update set email = excluded.email, name = excluded.name, \
         changed_at = excluded.changed_at, updated_at = now() \
         where recipients.changed_at <= excluded.changed_at",
    )
    .bind(user_id)
    .bind(email)
    .bind(name)
    .bind(changed_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn recipient(conn: &mut PgConnection, user_id: &str) -> sqlx::Result<Option<Recipient>> {
    let row: Option<(String, String)> =
        sqlx::query_as("select email, name from recipients where user_id = $1")
            .bind(user_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(email, name)| Recipient { email, name }))
}

/// Whether the user muted `kind` for e-mail.
pub async fn email_muted(conn: &mut PgConnection, user_id: &str, kind: Kind) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from email_mutes where user_id = $1 and kind = $2)")
        .bind(user_id)
        .bind(kind.as_str())
        .fetch_one(conn)
        .await
}

/// Writes the notification unless the user has one for its fact; `false` when it had.
pub async fn insert_notification(
    conn: &mut PgConnection,
    new: &NewNotification<'_>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "insert into notifications (id, user_id, kind, channel, subject, body, fact, event_id) \
         values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict (user_id, fact) do nothing",
    )
    .bind(new.id)
    .bind(new.user_id)
    .bind(new.kind.as_str())
    .bind(new.channel.as_str())
    .bind(new.subject)
    .bind(new.body)
    .bind(new.fact)
    .bind(new.event_id)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn insert_email(conn: &mut PgConnection, new: &NewEmail<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "insert into email_jobs (id, notification_id, user_id, to_address, to_name, subject, body) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(new.notification_id)
    .bind(new.user_id)
    .bind(new.to_address)
    .bind(new.to_name)
    .bind(new.subject)
    .bind(new.body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which notifications a list shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListFilter {
    pub unread_only: bool,
    pub channel: Option<Channel>,
}

/// An e-mail claimed for sending.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EmailJob {
    pub id: Uuid,
    pub notification_id: Uuid,
    pub to_address: String,
    pub to_name: String,
    pub subject: String,
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// The inbox and the e-mail queue.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Up to `limit` of the user's notifications, newest first, after the `(created_at, id)`
    /// of the previous page's last one.
    pub async fn list(
        &self,
        user_id: &str,
        filter: ListFilter,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> anyhow::Result<Vec<Notification>> {
        let rows: Vec<NotificationRow> = sqlx::query_as(&format!(
            "select {COLUMNS} from notifications where user_id = $1 \
             and (not $2 or read_at is null) \
             and ($3::text is null or channel = $3) \
             and ($4::timestamptz is null or (created_at, id) < ($4, $5)) \
             order by created_at desc, id desc limit $6"
        ))
        .bind(user_id)
        .bind(filter.unread_only)
        .bind(filter.channel.map(Channel::as_str))
        .bind(after.map(|(at, _)| at))
        .bind(after.map_or(Uuid::nil(), |(_, id)| id))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Notification::try_from).collect()
    }

    /// Marks one of the user's notifications read (a read one keeps its first read time);
    /// `None` when the user has no such notification.
    pub async fn mark_read(&self, user_id: &str, id: Uuid) -> anyhow::Result<Option<Notification>> {
        let row: Option<NotificationRow> = sqlx::query_as(&format!(
            "update notifications set read_at = coalesce(read_at, now()) \
             where id = $1 and user_id = $2 returning {COLUMNS}"
        ))
        .bind(id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Notification::try_from).transpose()
    }

    /// Marks every unread notification of the user read; how many were unread.
    pub async fn mark_all_read(&self, user_id: &str) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "update notifications set read_at = now() where user_id = $1 and read_at is null",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes one of the user's notifications; `false` when the user has no such one. Its
    /// e-mail, if any, is not affected.
    pub async fn delete(&self, user_id: &str, id: Uuid) -> sqlx::Result<bool> {
        let done = sqlx::query("delete from notifications where id = $1 and user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn unread_count(&self, user_id: &str) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "select count(*) from notifications where user_id = $1 and read_at is null",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
    }

    /// The kinds the user muted for e-mail, in kind order.
    pub async fn mutes(&self, user_id: &str) -> anyhow::Result<Vec<Kind>> {
        let names: Vec<String> =
            sqlx::query_scalar("select kind from email_mutes where user_id = $1")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        let mut kinds = names
            .iter()
            .map(|name| {
                Kind::parse(name).ok_or_else(|| anyhow::anyhow!("stored muted kind {name:?}"))
            })
            .collect::<anyhow::Result<Vec<Kind>>>()?;
        kinds.sort();
        Ok(kinds)
    }

    /// Replaces the kinds the user muted for e-mail, in one transaction.
    pub async fn set_mutes(&self, user_id: &str, kinds: &[Kind]) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("delete from email_mutes where user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let names: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        sqlx::query(
            "insert into email_mutes (user_id, kind) select $1, unnest($2::text[]) \
             on conflict do nothing",
        )
        .bind(user_id)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Claims up to `limit` due e-mails: each counts one more attempt and is held for `lease`
    /// (skipped by every other sender meanwhile; due again if its sender dies).
    pub async fn claim_emails(&self, limit: i64, lease: Duration) -> sqlx::Result<Vec<EmailJob>> {
        sqlx::query_as(
            "update email_jobs set attempts = attempts + 1, \
             next_attempt_at = now() + make_interval(secs => $2) \
             where id in (select id from email_jobs where status = 'pending' \
             and next_attempt_at <= now() order by next_attempt_at limit $1 \
             for update skip locked) \
             returning id, notification_id, to_address, to_name, subject, body, attempts",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await
    }

    pub async fn email_sent(&self, id: Uuid) -> sqlx::Result<()> {
        sqlx::query(
            "update email_jobs set status = 'sent', sent_at = now(), last_error = null \
             where id = $1 and status = 'pending'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt; the e-mail is due again after `retry_in`.
    pub async fn email_retry(&self, id: Uuid, retry_in: Duration, error: &str) -> sqlx::Result<()> {
        sqlx::query(
            "update email_jobs set last_error = $2, \
             next_attempt_at = now() + make_interval(secs => $3) \
             where id = $1 and status = 'pending'",
        )
        .bind(id)
        .bind(error)
        .bind(retry_in.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives an e-mail up: it will not be tried again. The in-app notification stays.
    pub async fn email_failed(&self, id: Uuid, error: &str) -> sqlx::Result<()> {
        sqlx::query(
            "update email_jobs set status = 'failed', last_error = $2 \
             where id = $1 and status = 'pending'",
        )
        .bind(id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
