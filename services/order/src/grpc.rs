//! The gRPC adapter of the order service: checks who calls, hands the request to
//! [`OrderService`], and nothing else.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use shopmesh_contracts::pb::shopmesh::order::v1 as pb;
use shopmesh_contracts::pb::shopmesh::order::v1::order_service_server::OrderService as OrderApi;
use shopmesh_platform::grpc::{CallContext, calling_service, identity};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::service::OrderService;

pub struct OrderGrpc {
    service: Arc<OrderService>,
}

impl OrderGrpc {
    pub fn new(service: Arc<OrderService>) -> Self {
        Self { service }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchOrderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl OrderApi for OrderGrpc {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let ctx = CallContext::from_request(&request);
        let order = self.service.place(ctx, request.into_inner()).await?;
        Ok(Response::new(pb::PlaceOrderResponse { order: Some(order) }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let caller = identity(&request)?;
        let order = self
            .service
            .get(&caller, &request.get_ref().order_id)
            .await?;
        Ok(Response::new(pb::GetOrderResponse { order: Some(order) }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = identity(&request)?;
        Ok(Response::new(
            self.service.list(&caller, request.into_inner()).await?,
        ))
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let caller = identity(&request)?;
        let ctx = CallContext::from_request(&request);
        let order = self
            .service
            .cancel(ctx, &caller, request.into_inner())
            .await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order),
        }))
    }

    async fn update_order_status(
        &self,
        request: Request<pb::UpdateOrderStatusRequest>,
    ) -> Result<Response<pb::UpdateOrderStatusResponse>, Status> {
        // The method guard admitted an admin or the delivery service.
        let actor = match identity(&request) {
            Ok(user) => user.user_id,
            Err(_) if calling_service(&request).is_some() => String::new(),
            Err(status) => return Err(status),
        };
        let correlation_id = CallContext::from_request(&request)
            .request_id
            .unwrap_or_default();
        let order = self
            .service
            .update_status(&actor, &correlation_id, request.into_inner())
            .await?;
        Ok(Response::new(pb::UpdateOrderStatusResponse {
            order: Some(order),
        }))
    }

    async fn refund_order(
        &self,
        request: Request<pb::RefundOrderRequest>,
    ) -> Result<Response<pb::RefundOrderResponse>, Status> {
        let caller = identity(&request)?;
        let ctx = CallContext::from_request(&request);
        let order = self
            .service
            .refund(ctx, &caller, request.into_inner())
            .await?;
        Ok(Response::new(pb::RefundOrderResponse {
            order: Some(order),
        }))
    }

    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let caller = identity(&request)?;
        let rx = self
            .service
            .clone()
            .watch(&caller, &request.get_ref().order_id)
            .await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
