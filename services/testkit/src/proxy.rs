//! A TCP proxy a test puts between a service and a server (RabbitMQ, say) to take the server
//! away from that service alone: [`TcpProxy::outage`] drops every open connection and refuses
//! new ones until [`TcpProxy::restore`], which is what the service sees of a broker restart,
//! without disturbing the other tests that share the real server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    addr: SocketAddr,
    /// `true` while the upstream is "down"; every bridged connection watches it.
    down: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (down, _) = watch::channel(false);
        let down = Arc::new(down);
        let state = down.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *state.borrow() {
                    drop(client);
                    continue;
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self { addr, down, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts every connection and refuses new ones.
    pub fn outage(&self) {
        self.down.send_replace(true);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.down.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
