//! Generated contracts of every shopmesh service and event.
//!
//! The `.proto` files under `proto/shopmesh` are the source of truth; this crate only compiles
//! them. Generated types stop at a service's edge: domain code converts them into its own types.

/// Generated protobuf and gRPC code, one module per protobuf package.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    pub mod shopmesh {
        pub mod analytics {
            pub mod v1 {
                tonic::include_proto!("shopmesh.analytics.v1");
            }
        }
        pub mod cart {
            pub mod v1 {
                tonic::include_proto!("shopmesh.cart.v1");
            }
        }
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("shopmesh.common.v1");
            }
        }
        pub mod delivery {
            pub mod v1 {
                tonic::include_proto!("shopmesh.delivery.v1");
            }
        }
        pub mod events {
            pub mod v1 {
                tonic::include_proto!("shopmesh.events.v1");
            }
        }
        pub mod notification {
            pub mod v1 {
                tonic::include_proto!("shopmesh.notification.v1");
            }
        }
        pub mod order {
            pub mod v1 {
                tonic::include_proto!("shopmesh.order.v1");
            }
        }
        pub mod payment {
            pub mod v1 {
                tonic::include_proto!("shopmesh.payment.v1");
            }
        }
        pub mod product {
            pub mod v1 {
                tonic::include_proto!("shopmesh.product.v1");
            }
        }
        pub mod user {
            pub mod v1 {
                tonic::include_proto!("shopmesh.user.v1");
            }
        }
    }

    /// The encoded `FileDescriptorSet` of every shopmesh contract, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("shopmesh_descriptor");
}

pub use pb::shopmesh::user::v1 as user;
