//! A RabbitMQ node of one test's own: started from this machine's `rabbitmq-server` with its
//! own node name, AMQP and distribution ports and data directory, so a test can stop and start
//! a real broker (durable queues and persistent messages on disk survive it, as in production)
//! without disturbing the other tests, which share the machine's broker.
//!
//! `rabbitmq-server` run by root switches to the `rabbitmq` user, so the node's directory is
//! world-writable; it is removed when the node is dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Command;

pub struct RabbitNode {
    name: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

impl RabbitNode {
    /// Starts a fresh node and waits until it accepts AMQP connections.
    pub async fn start() -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("shopmesh-rabbit-{unique}"));
        std::fs::create_dir_all(&dir).expect("node directory");
        set_mode(&dir, 0o777);
        let plugins = dir.join("enabled_plugins");
        // No plugins: the management plugin would want the machine broker's HTTP port.
        std::fs::write(&plugins, "[].\n").expect("enabled_plugins");
        set_mode(&plugins, 0o644);
        let node = Self {
            name: format!("shopmesh-test-{}@localhost", &unique[..12]),
            port: free_port(),
            dist_port: free_port(),
            dir,
        };
        node.boot().await;
        node
    }

    /// `amqp://` URL of the node's default vhost.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the node the way an operator does (`rabbitmqctl stop`): every connection drops.
    pub async fn stop(&self) {
        let status = Command::new("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .expect("rabbitmqctl runs");
        assert!(status.success(), "rabbitmqctl stop {}", self.name);
    }

    /// Starts the stopped node again on the same data, name and ports.
    pub async fn restart(&self) {
        self.boot().await;
    }

    async fn boot(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.out"))
            .expect("node log");
        Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("none"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("node log"))
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server starts (run as root or rabbitmq)");
        let until = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < until,
                "the RabbitMQ node {} did not listen within 60 s; see {}",
                self.name,
                self.dir.join("server.out").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        // Synchronous: a test's runtime may be gone by now.
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
