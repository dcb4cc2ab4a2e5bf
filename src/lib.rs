//! The `shopmesh` binary's library: the one list of services and the commands built on it.
//! `main.rs` only parses the command line.

pub mod compose;
pub mod k8s;
pub mod run;

use std::sync::Arc;

use shopmesh_platform::mesh::{Mesh, Service};

/// Every service of shopmesh, in start order. Adding a service means adding it here; `--target`,
/// `migrate`, readiness, the gateway's upstreams and `/readyz`, the test harness, the
/// docker-compose file and the Kubernetes manifests all follow from this list.
pub fn services() -> Vec<Arc<dyn Service>> {
    vec![
        Arc::new(shopmesh_user::User),
        Arc::new(shopmesh_product::Product::default()),
        Arc::new(shopmesh_payment::Payment::default()),
        Arc::new(shopmesh_delivery::Delivery::default()),
        Arc::new(shopmesh_order::Order::default()),
        Arc::new(shopmesh_notification::Notification::default()),
        Arc::new(shopmesh_analytics::Analytics::default()),
        Arc::new(shopmesh_cart::Cart),
    ]
}

/// The mesh of every service.
pub fn mesh() -> Mesh {
    Mesh::new(services())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use shopmesh_platform::mesh::{addr_key, url_key};
    use shopmesh_platform::{Env, Settings};

    /// Every key the binary reads, found by reading them all from an empty environment.
    fn keys_read() -> Vec<String> {
        let env = Env::from_map(HashMap::new()).unwrap();
        Settings::from_env(&env).unwrap();
        shopmesh_gateway::settings::GatewaySettings::from_env(&env).unwrap();
        let mesh = super::mesh();
        for service in mesh.services() {
            service.read_settings(&env).unwrap();
        }
        mesh.configured_peers(&env).unwrap();
        let mut keys = env.keys_read();
        for service in mesh.services() {
            keys.push(addr_key(service.name()));
            keys.push(url_key(service.name()));
        }
        keys
    }

    #[test]
    fn env_example_documents_every_key_the_binary_reads() {
        let example = include_str!("../.env.example");
        let documented: Vec<&str> = example
            .lines()
            .map(|line| line.trim_start_matches("# "))
            .filter_map(|line| line.split_once('=').map(|(key, _)| key))
            .collect();
        let keys = keys_read();
        assert!(keys.len() > 30, "{keys:?}");
        for key in keys {
            assert!(
                documented.contains(&key.as_str()),
                "{key} is missing from .env.example"
            );
        }
    }

    #[test]
    fn the_checked_in_compose_file_is_the_generated_one() {
        assert_eq!(
            include_str!("../docker-compose.yml"),
            super::compose::render(&super::mesh()),
            "regenerate: shopmesh compose > docker-compose.yml"
        );
    }
}
