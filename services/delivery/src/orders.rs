//! The order service as the order-sync worker reaches it: UpdateOrderStatus over the mesh,
//! signed with the delivery service's identity (which the order service admits; no user token).

use std::time::Duration;

use async_trait::async_trait;
use shopmesh_contracts::pb::shopmesh::order::v1::order_service_client::OrderServiceClient;
use shopmesh_contracts::pb::shopmesh::order::v1::{OrderStatus, UpdateOrderStatusRequest};
use shopmesh_platform::client::MeshChannel;
use tonic::Code;
use uuid::Uuid;

use crate::domain::OrderUpdate;
use crate::service::{OrderUpdateError, OrderUpdates};

/// UpdateOrderStatus through a [`MeshChannel`] (deadline, circuit breaker).
#[derive(Clone, Debug)]
pub struct GrpcOrderUpdates {
    client: OrderServiceClient<MeshChannel>,
    timeout: Duration,
}

impl GrpcOrderUpdates {
    /// Each call may take up to `timeout`.
    pub fn new(channel: MeshChannel, timeout: Duration) -> Self {
        Self {
            client: OrderServiceClient::new(channel),
            timeout,
        }
    }
}

#[async_trait]
impl OrderUpdates for GrpcOrderUpdates {
    async fn update_status(
        &self,
        order_id: Uuid,
        status: OrderUpdate,
        note: &str,
    ) -> Result<(), OrderUpdateError> {
        let mut request = tonic::Request::new(UpdateOrderStatusRequest {
            order_id: order_id.to_string(),
            status: match status {
                OrderUpdate::Shipped => OrderStatus::Shipped,
                OrderUpdate::Completed => OrderStatus::Completed,
            }
            .into(),
            note: note.to_owned(),
        });
        request.set_timeout(self.timeout);
        match self.client.clone().update_order_status(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(classify(status.code(), status.message())),
        }
    }
}

/// FAILED_PRECONDITION (the order was cancelled or refunded), NOT_FOUND and INVALID_ARGUMENT
/// cannot change by retrying; everything else (UNAVAILABLE, DEADLINE_EXCEEDED, an open circuit,
/// even PERMISSION_DENIED while a deployment's keys are fixed) may.
fn classify(code: Code, message: &str) -> OrderUpdateError {
    let text = format!("{code:?}: {message}");
    match code {
        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument => {
            OrderUpdateError::Rejected(text)
        }
        _ => OrderUpdateError::Failed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lasting_refusals_stop_the_retries() {
        assert!(matches!(
            classify(Code::FailedPrecondition, "order is CANCELLED"),
            OrderUpdateError::Rejected(_)
        ));
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::PermissionDenied,
        ] {
            assert!(matches!(classify(code, "x"), OrderUpdateError::Failed(_)));
        }
    }
}
