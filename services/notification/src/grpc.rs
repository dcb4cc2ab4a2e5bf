//! The gRPC face of the notification service: protobuf to use cases and back.
//!
//! Every RPC admits a verified user token (the method guard checks it against the policies in
//! notification.proto) and acts on that user's own notifications only, admins included: no
//! request names a user, and someone else's notification id is NOT_FOUND like an unknown one.

use shopmesh_contracts::pb::shopmesh::notification::v1::{
    self as pb, notification_service_server::NotificationService as NotificationApi,
};
use shopmesh_platform::grpc::identity;
use shopmesh_platform::problem::field_error;
use shopmesh_platform::time::timestamp;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::kind::{Channel, Kind};
use crate::repo::{ListFilter, Notification};
use crate::service::Inbox;

pub fn kind_pb(kind: Kind) -> pb::NotificationKind {
    match kind {
        Kind::Welcome => pb::NotificationKind::Welcome,
        Kind::OrderPaid => pb::NotificationKind::OrderPaid,
        Kind::PaymentFailed => pb::NotificationKind::PaymentFailed,
        Kind::OrderShipped => pb::NotificationKind::OrderShipped,
        Kind::OrderDelivered => pb::NotificationKind::OrderDelivered,
        Kind::OrderRefunded => pb::NotificationKind::OrderRefunded,
        Kind::OrderCancelled => pb::NotificationKind::OrderCancelled,
    }
}

/// A kind as sent; `None` for UNSPECIFIED or a number the contract does not know.
fn kind(raw: i32) -> Option<Kind> {
    Some(match pb::NotificationKind::try_from(raw).ok()? {
        pb::NotificationKind::Unspecified => return None,
        pb::NotificationKind::Welcome => Kind::Welcome,
        pb::NotificationKind::OrderPaid => Kind::OrderPaid,
        pb::NotificationKind::PaymentFailed => Kind::PaymentFailed,
        pb::NotificationKind::OrderShipped => Kind::OrderShipped,
        pb::NotificationKind::OrderDelivered => Kind::OrderDelivered,
        pb::NotificationKind::OrderRefunded => Kind::OrderRefunded,
        pb::NotificationKind::OrderCancelled => Kind::OrderCancelled,
    })
}

fn channel_pb(channel: Channel) -> pb::Channel {
    match channel {
        Channel::InApp => pb::Channel::InApp,
        Channel::Email => pb::Channel::Email,
    }
}

fn notification_pb(n: Notification) -> pb::Notification {
    pb::Notification {
        id: n.id.to_string(),
        user_id: n.user_id,
        channel: channel_pb(n.channel).into(),
        template: n.kind.as_str().to_owned(),
        subject: n.subject,
        body: n.body,
        read: n.read_at.is_some(),
        create_time: Some(timestamp(n.created_at)),
        read_time: n.read_at.map(timestamp),
        kind: kind_pb(n.kind).into(),
    }
}

fn preferences_pb(kinds: &[Kind]) -> pb::Preferences {
    pb::Preferences {
        email_muted: kinds.iter().map(|k| kind_pb(*k).into()).collect(),
    }
}

fn count(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

/// Implements `shopmesh.notification.v1.NotificationService`.
#[derive(Clone, Debug)]
pub struct NotificationGrpc {
    inbox: Inbox,
}

impl NotificationGrpc {
    pub fn new(inbox: Inbox) -> Self {
        Self { inbox }
    }
}

#[tonic::async_trait]
impl NotificationApi for NotificationGrpc {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let caller = identity(&request)?;
        let req = request.into_inner();
        let channel = match pb::Channel::try_from(req.channel) {
            Ok(pb::Channel::Unspecified) => None,
            Ok(pb::Channel::InApp) => Some(Channel::InApp),
            Ok(pb::Channel::Email) => Some(Channel::Email),
            Err(_) => return Err(Error::field("channel", "is not a channel").into()),
        };
        let page = self
            .inbox
            .list(
                &caller.user_id,
                req.page_size,
                &req.page_token,
                ListFilter {
                    unread_only: req.unread_only,
                    channel,
                },
            )
            .await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: page
                .notifications
                .into_iter()
                .map(notification_pb)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let caller = identity(&request)?;
        let notification = self
            .inbox
            .mark_read(&caller.user_id, &request.into_inner().notification_id)
            .await?;
        Ok(Response::new(pb::MarkReadResponse {
            notification: Some(notification_pb(notification)),
        }))
    }

    async fn mark_all_read(
        &self,
        request: Request<pb::MarkAllReadRequest>,
    ) -> Result<Response<pb::MarkAllReadResponse>, Status> {
        let caller = identity(&request)?;
        let marked = self.inbox.mark_all_read(&caller.user_id).await?;
        Ok(Response::new(pb::MarkAllReadResponse {
            marked_count: count(marked),
        }))
    }

    async fn delete_notification(
        &self,
        request: Request<pb::DeleteNotificationRequest>,
    ) -> Result<Response<pb::DeleteNotificationResponse>, Status> {
        let caller = identity(&request)?;
        self.inbox
            .delete(&caller.user_id, &request.into_inner().notification_id)
            .await?;
        Ok(Response::new(pb::DeleteNotificationResponse {}))
    }

    async fn get_unread_count(
        &self,
        request: Request<pb::GetUnreadCountRequest>,
    ) -> Result<Response<pb::GetUnreadCountResponse>, Status> {
        let caller = identity(&request)?;
        let unread = self.inbox.unread_count(&caller.user_id).await?;
        Ok(Response::new(pb::GetUnreadCountResponse {
            unread_count: count(unread),
        }))
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::GetPreferencesResponse>, Status> {
        let caller = identity(&request)?;
        let muted = self.inbox.email_muted(&caller.user_id).await?;
        Ok(Response::new(pb::GetPreferencesResponse {
            preferences: Some(preferences_pb(&muted)),
        }))
    }

    async fn update_preferences(
        &self,
        request: Request<pb::UpdatePreferencesRequest>,
    ) -> Result<Response<pb::UpdatePreferencesResponse>, Status> {
        let caller = identity(&request)?;
        let preferences = request.into_inner().preferences.unwrap_or_default();
        let mut kinds = Vec::with_capacity(preferences.email_muted.len());
        let mut errors = Vec::new();
        for (index, raw) in preferences.email_muted.iter().enumerate() {
            match kind(*raw) {
                Some(kind) => kinds.push(kind),
                None => errors.push(field_error(
                    &format!("preferences.email_muted[{index}]"),
                    "is not a notification kind",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Invalid(errors).into());
        }
        let muted = self.inbox.set_email_muted(&caller.user_id, &kinds).await?;
        Ok(Response::new(pb::UpdatePreferencesResponse {
            preferences: Some(preferences_pb(&muted)),
        }))
    }
}
