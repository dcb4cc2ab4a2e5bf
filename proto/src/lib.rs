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
        pub mod platform {
            pub mod v1 {
                tonic::include_proto!("shopmesh.platform.v1");
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

/// Who may call an RPC, as its `(shopmesh.common.v1.policy)` option declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nobody (a method that declares no access).
    Denied,
    /// Anyone; a token that is sent must verify.
    Public,
    /// A verified user access token.
    User,
    /// A verified admin access token.
    Admin,
    /// Only the services in [`MethodPolicy::callers`].
    Internal,
}

/// One RPC's policy, read from the contracts at build time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodPolicy {
    /// `/package.Service/Method`, as it appears in the HTTP/2 `:path`.
    pub path: &'static str,
    /// Fully qualified service name.
    pub service: &'static str,
    pub method: &'static str,
    pub access: Access,
    /// Service identities admitted besides the users `access` admits.
    pub callers: &'static [&'static str],
    /// Safe to retry after a transient failure.
    pub idempotent: bool,
    /// Runs under the stream budget instead of the unary deadline.
    pub long_running: bool,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

/// The policy table of every RPC in the contracts.
pub mod policy {
    use super::{Access, MethodPolicy};

    include!(concat!(env!("OUT_DIR"), "/shopmesh_policies.rs"));

    /// The policy of the RPC at `path` (`/package.Service/Method`), if the contracts define it.
    pub fn lookup(path: &str) -> Option<&'static MethodPolicy> {
        METHODS
            .binary_search_by(|policy| policy.path.cmp(path))
            .ok()
            .map(|index| &METHODS[index])
    }

    /// The RPCs of one service, in path order.
    pub fn of_service(service: &str) -> impl Iterator<Item = &'static MethodPolicy> + '_ {
        METHODS
            .iter()
            .filter(move |policy| policy.service == service)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn internal_inventory_methods_admit_only_the_order_service() {
            for method in ["Reserve", "Commit", "Release"] {
                let policy = lookup(&format!("/shopmesh.product.v1.InventoryService/{method}"))
                    .unwrap_or_else(|| panic!("{method} has a policy"));
                assert_eq!(policy.access, Access::Internal);
                assert_eq!(policy.callers, &["order"]);
            }
            let charge = lookup("/shopmesh.payment.v1.PaymentService/Charge").expect("charge");
            assert_eq!(
                (charge.access, charge.callers),
                (Access::Internal, &["order"][..])
            );
        }

        #[test]
        fn every_method_is_found_by_its_path_and_no_method_is_open_by_accident() {
            assert!(METHODS.len() > 50);
            for policy in METHODS {
                assert_eq!(lookup(policy.path), Some(policy));
                assert_ne!(policy.access, Access::Denied, "{}", policy.path);
            }
            assert!(lookup("/shopmesh.product.v1.ProductService/Nope").is_none());
            let import =
                lookup("/shopmesh.product.v1.ProductService/ImportProducts").expect("import");
            assert!(import.long_running && import.client_streaming && !import.idempotent);
        }
    }
}

/// The gRPC reference: one self-contained HTML page (inline CSS, no external assets) rendered at
/// build time from the contracts by `build/docs.rs`. Every shopmesh service with its methods,
/// their comments and policies (access level, calling services, idempotent, long-running), then
/// every message and enum with their fields, values and comments. The gateway serves it at
/// `/docs/grpc`; `docs/grpc.html` is the checked-in copy.
pub const GRPC_REFERENCE_HTML: &str = include_str!(concat!(env!("OUT_DIR"), "/grpc_docs.html"));

#[cfg(test)]
mod docs_tests {
    use super::GRPC_REFERENCE_HTML as PAGE;

    /// The HTML of the element that starts with `id="{id}"`, up to its closing `end` tag.
    fn block(id: &str, end: &str) -> &'static str {
        let start = PAGE
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("the page has an element {id}"));
        let len = PAGE[start..]
            .find(end)
            .unwrap_or_else(|| panic!("{id} is closed"));
        &PAGE[start..start + len]
    }

    #[test]
    fn page_is_self_contained() {
        assert!(PAGE.starts_with("<!DOCTYPE html>"));
        assert!(PAGE.trim_end().ends_with("</html>"));
        for external in ["<link", "src=\"http", "src='http", "@import", "url(http"] {
            assert!(!PAGE.contains(external), "the page loads {external}");
        }
    }

    #[test]
    fn page_documents_services_methods_and_policies() {
        assert!(PAGE.contains("id=\"shopmesh.product.v1.InventoryService\""));
        assert!(PAGE.contains("href=\"#shopmesh.product.v1.InventoryService.Reserve\""));
        let reserve = block("shopmesh.product.v1.InventoryService.Reserve", "</article>");
        assert!(reserve.contains("internal-only"), "{reserve}");
        assert!(reserve.contains("caller: order"), "{reserve}");
        assert!(reserve.contains("ACCESS_INTERNAL"), "{reserve}");
        assert!(reserve.contains("idempotent"), "{reserve}");
        assert!(
            reserve.contains("href=\"#shopmesh.product.v1.ReserveRequest\""),
            "{reserve}"
        );
        assert!(
            reserve.contains("Reserve holds stock for every line of an order"),
            "{reserve}"
        );
        let get_stock = block(
            "shopmesh.product.v1.InventoryService.GetStock",
            "</article>",
        );
        assert!(get_stock.contains("badge public") && !get_stock.contains("internal-only"));
        let import = block(
            "shopmesh.product.v1.ProductService.ImportProducts",
            "</article>",
        );
        assert!(import.contains("client streaming") && import.contains("long-running"));
        assert!(!PAGE.contains("id=\"grpc.") && !PAGE.contains("id=\"pkg-google."));
    }

    #[test]
    fn page_documents_messages_fields_and_enums() {
        let product = block("shopmesh.product.v1.Product", "</section>");
        assert!(product.contains(
            "Stock-keeping unit, unique across all products including soft-deleted ones; immutable."
        ));
        assert!(product.contains("href=\"#shopmesh.common.v1.Money\""));
        assert!(product.contains("repeated"));
        let reason = block("shopmesh.product.v1.StockMovementReason", "</section>");
        assert!(reason.contains("STOCK_MOVEMENT_REASON_RESERVE"));
        assert!(PAGE.contains("id=\"pkg-shopmesh.events.v1\""));
        let envelope = block("shopmesh.events.v1.EventEnvelope", "</section>");
        assert!(envelope.contains("EventEnvelope wraps every event."));
        assert!(envelope.contains("UUIDv7, unique per event; the deduplication key of consumers."));
        // Comments are escaped, not markup.
        assert!(PAGE.contains("CREATED -&gt; PAID"));
    }
}
