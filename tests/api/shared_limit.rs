//! Rate limits across gateway replicas: two gateways behind one nginx edge share one per-IP
//! budget with `RATE_LIMIT_STORE=redis`, and each has its own with `memory`.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;

use shopmesh_platform::mesh::url_key;
use tokio::process::{Child, Command};

use crate::helpers::{
    Options, Reply, TempDir, TestApp, free_port, nginx_binary, repo_root, spawn_app_with,
    wait_ready,
};

/// A gateway in a process of its own, in front of the test's services (same run directory, so
/// the same keys; same Redis and key prefix).
fn second_gateway(app: &TestApp, dir: &TempDir, port: u16) -> Child {
    let mut vars = app.vars.clone();
    for (service, url) in &app.grpc {
        vars.insert(url_key(service), url.clone());
    }
    vars.insert("GATEWAY_ADDR".into(), format!("127.0.0.1:{port}"));
    crate::process::shopmesh(&vars, dir)
        .args(["serve", "--target", "gateway"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the second gateway starts")
}

/// An nginx edge over both gateways, in its own process group, ended with it when dropped.
struct Edge {
    _child: Child,
    group: i32,
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.group)])
            .stderr(Stdio::null())
            .status();
    }
}

/// The project's nginx templates rendered with both gateways as upstream servers; nginx's own
/// per-IP limit well above the gateways'.
fn start_edge(run_dir: &Path, edge_port: u16, gateways: [u16; 2]) -> Edge {
    let root = repo_root().join("nginx");
    let main = std::fs::read_to_string(root.join("nginx.conf.template")).unwrap();
    let site = std::fs::read_to_string(root.join("templates/shopmesh.conf.template")).unwrap();
    let servers = gateways
        .iter()
        .map(|port| format!("server 127.0.0.1:{port} max_fails=3 fail_timeout=5s;"))
        .collect::<Vec<_>>()
        .join("\n    ");
    let main = main.replace("${RUN_DIR}", &run_dir.display().to_string());
    let site = site
        .replace("${EDGE_LISTEN}", &format!("127.0.0.1:{edge_port}"))
        .replace("${GATEWAY_UPSTREAM_SERVERS}", &servers)
        .replace("${NGINX_RATE}", "1000r/s")
        .replace("${NGINX_BURST}", "2000");
    std::fs::create_dir_all(run_dir.join("tmp")).unwrap();
    std::fs::write(run_dir.join("nginx.conf"), main).unwrap();
    std::fs::write(run_dir.join("shopmesh.conf"), site).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(run_dir)
        .arg("-c")
        .arg(run_dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("nginx must be installed");
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .unwrap_or(-1);
    Edge {
        _child: child,
        group,
    }
}

/// Outcome of a quick series of requests from one client address through the edge.
struct Tally {
    ok: usize,
    refused: Vec<Reply>,
}

/// Two gateways (the test's and a child process) with a per-IP budget of 10 at 1/s on the
/// given store, behind one edge; 20 quick requests from `client` (a loopback address of its
/// own, so that the readiness polls of the set-up, keyed by 127.0.0.1, do not count).
async fn twenty_requests(store: &str, client: [u8; 4]) -> Tally {
    let app = spawn_app_with(Options {
        ip_per_second: 1,
        ip_burst: 10,
        env: vec![("RATE_LIMIT_STORE", store.to_owned())],
        ..Options::default()
    })
    .await;
    let dir = TempDir::new("shopmesh-gateway-2");
    let port = free_port();
    let _second = second_gateway(&app, &dir, port);
    wait_ready(&app.http, &format!("http://127.0.0.1:{port}/healthz")).await;
    let first = app
        .gateway
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    let edge_port = free_port();
    let _edge = start_edge(&dir.0.join("nginx"), edge_port, [first, port]);
    let edge = format!("http://127.0.0.1:{edge_port}");
    let http = reqwest::Client::builder()
        .local_address(IpAddr::from(client))
        .build()
        .unwrap();
    // The edge is up once it answers at all (from another address than the client's).
    wait_ready(&app.http, &format!("{edge}/healthz")).await;

    let mut tally = Tally {
        ok: 0,
        refused: Vec::new(),
    };
    for _ in 0..20 {
        let reply = Reply::from(http.get(format!("{edge}/healthz")).send().await.unwrap()).await;
        match reply.status {
            200 => tally.ok += 1,
            _ => tally.refused.push(reply),
        }
    }
    tally
}

#[tokio::test]
async fn two_gateways_behind_one_edge_share_one_budget_in_redis() {
    let tally = twenty_requests("redis", [127, 0, 0, 2]).await;
    assert!(
        (10..=11).contains(&tally.ok),
        "one budget of 10 (plus at most one refill) across both gateways, got {} admitted",
        tally.ok
    );
    assert_eq!(tally.ok + tally.refused.len(), 20);
    for reply in &tally.refused {
        reply.assert_problem(429);
        let retry_after: u64 = reply
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("a 429 carries Retry-After in seconds");
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    }
}

#[tokio::test]
async fn with_the_memory_store_each_gateway_has_its_own_budget() {
    let tally = twenty_requests("memory", [127, 0, 0, 3]).await;
    assert!(
        tally.ok >= 18,
        "two budgets of 10, one per gateway, got {} admitted",
        tally.ok
    );
}
