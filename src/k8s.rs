//! `shopmesh k8s --out DIR`: the Kubernetes manifests, a kustomize base and two overlays,
//! generated from the list of services like `shopmesh compose`, so that a new service gets its
//! Deployment, Service, probes, autoscaler, disruption budget, identity key and peers' URLs
//! without editing YAML by hand. CI checks that the checked-in `deploy/k8s` is exactly this
//! output and validates every object against the Kubernetes schemas (`scripts/k8s-validate.py`).
//!
//! Each kind of object has one generator function below; all of them build a small YAML tree
//! (`Value`) that the tests inspect and [`render`] prints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use shopmesh_platform::mesh::{GATEWAY, Mesh, Service, Store, addr_key, url_key};

/// Where the output is meant to live, for the comments that say how to regenerate it.
const OUT_DIR: &str = "deploy/k8s";
const IMAGE: &str = "shopmesh";
const BASE_TAG: &str = "local";
const GATEWAY_PORT: u16 = 8081;
const METRICS_PORT: u16 = 9464;
const UID: i64 = 10001;
/// Where every container finds the service identity keys (`MESH_KEYS_DIR`).
const MESH_DIR: &str = "/mesh";
/// The ConfigMap of non-secret settings every shopmesh container reads.
const CONFIG: &str = "shopmesh-config";
/// The Secret of store URLs (they carry passwords).
const STORES_SECRET: &str = "shopmesh-stores";
/// The public half of every identity key.
const PUBLIC_KEYS: &str = "shopmesh-mesh-public-keys";
const PLACEHOLDER: &str = "replace-me";
/// The dev overlay's store password: those stores are reachable only inside its namespace.
const DEV_PASSWORD: &str = "shopmesh";
const DEV_NAMESPACE: &str = "shopmesh-dev";
const PRODUCTION_NAMESPACE: &str = "shopmesh";

/// Every process publishes or consumes events (the gateway reads dead letters), as in
/// docker-compose.
const AMQP_URL: (&str, &str) = (
    "AMQP_URL",
    "amqp://shopmesh:${RABBITMQ_PASSWORD:-shopmesh}@rabbitmq:5672/%2f",
);
/// The gateway checks every access token's session in the user service's Redis.
const GATEWAY_SECRET_ENV: &[(&str, &str)] = &[AMQP_URL, ("REDIS_URL", "redis://redis:6379")];

/// Settings of `.env.example` whose dev default is wrong in a cluster.
const CLUSTER_SETTINGS: &[(&str, &str)] = &[
    ("SHOPMESH_PROFILE", "production"),
    ("LOG_FORMAT", "json"),
    ("BIND_HOST", "0.0.0.0"),
    ("MESH_KEYS_DIR", MESH_DIR),
    ("GATEWAY_ADDR", "0.0.0.0:8081"),
    ("METRICS_ADDR", "0.0.0.0:9464"),
    // X-Real-IP counts only from the private ranges pod networks use (the ingress controller's
    // pods among them); narrow it to the ingress controller's pod range where it is known.
    ("TRUSTED_PROXIES", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"),
];

/// Settings of `.env.example` a cluster does not take: the nginx edge's address (the ingress
/// takes its place), the dev profile's run directory and its fault-injection hook.
const NOT_IN_CLUSTER: &[&str] = &["EDGE_ADDR", "SHOPMESH_RUN_DIR", "ORDER_FAULT_CRASH_AT"];

/// A YAML value: what every generator builds and [`render`] prints.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Str(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Str(value)
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Self {
        Value::Str(value.clone())
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<u16> for Value {
    fn from(value: u16) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<Vec<Value>> for Value {
    fn from(value: Vec<Value>) -> Self {
        Value::List(value)
    }
}

/// Reading a tree back, for the tests.
#[cfg(test)]
impl Value {
    /// The value at a dotted path of map keys and list indexes (`spec.template.spec.0`).
    fn get(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(self, |value, step| match value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == step).map(|(_, v)| v),
            Value::List(items) => step.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }

    /// The value of one key of a map (keys may hold dots: `user.pub`).
    fn entry(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    fn items(&self) -> &[Value] {
        match self {
            Value::List(items) => items,
            _ => &[],
        }
    }
}

macro_rules! map {
    ($($key:expr => $value:expr),* $(,)?) => {
        Value::Map(vec![$((String::from($key), Value::from($value))),*])
    };
}

macro_rules! list {
    ($($item:expr),* $(,)?) => {
        Value::List(vec![$(Value::from($item)),*])
    };
}

/// One file of the output: where it goes under the output directory and what it holds.
#[derive(Clone, Debug)]
pub struct File {
    pub path: PathBuf,
    pub contents: String,
}

/// A Deployment of the shopmesh image: the gateway or one service of the mesh.
struct Target<'a> {
    name: &'static str,
    service: Option<&'a dyn Service>,
}

impl Target<'_> {
    /// The Secret keys its container gets (compose form: `${VAR:-default}` references).
    fn secret_env(&self) -> Vec<(&'static str, &'static str)> {
        match self.service {
            None => GATEWAY_SECRET_ENV.to_vec(),
            Some(service) => {
                let mut env = vec![AMQP_URL];
                for (key, value) in service.deploy_env() {
                    if is_secret(key) && !env.iter().any(|(k, _)| k == key) {
                        env.push((key, value));
                    }
                }
                env
            }
        }
    }
}

/// The gateway first, then every service of the mesh in start order.
fn targets(mesh: &Mesh) -> Vec<Target<'_>> {
    std::iter::once(Target {
        name: GATEWAY,
        service: None,
    })
    .chain(mesh.services().iter().map(|service| Target {
        name: service.name(),
        service: Some(service.as_ref()),
    }))
    .collect()
}

/// Keys whose values are secret: private keys and store URLs (they carry passwords); the URLs
/// of peers' gRPC servers are not.
fn is_secret(key: &str) -> bool {
    key.ends_with("_PEM") || (key.ends_with("_URL") && !key.ends_with("_GRPC_URL"))
}

/// A private key is the service's own Secret; store URLs share one.
fn is_private_key(key: &str) -> bool {
    key.ends_with("_PEM")
}

/// `${VAR}` references of a compose value, resolved to their defaults: what the dev overlay's
/// stores answer to.
fn dev_value(compose: &str) -> String {
    let mut out = String::new();
    let mut rest = compose;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let reference = &rest[start + 2..start + end];
        if let Some((_, default)) = reference.split_once(":-") {
            out.push_str(default);
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out.trim_matches('"').to_owned()
}

/// A reference with an empty default (`${JWT_PREVIOUS_KEY_PEM:-}`) may be left unset.
fn is_optional(compose: &str) -> bool {
    compose.trim_matches('"').ends_with(":-}")
}

fn keys_secret(service: &str) -> String {
    format!("shopmesh-{service}-keys")
}

fn mesh_key_secret(identity: &str) -> String {
    format!("shopmesh-mesh-key-{identity}")
}

fn labels(target: &str) -> Value {
    map! {
        "app.kubernetes.io/name" => "shopmesh",
        "app.kubernetes.io/component" => target,
        "app.kubernetes.io/part-of" => "shopmesh",
    }
}

fn metadata(name: &str, labels: Value) -> Value {
    map! { "name" => name, "labels" => labels }
}

/// Matches the Dockerfile's user: uid and gid 10001, no root, no privilege escalation.
fn pod_security() -> Value {
    map! {
        "runAsNonRoot" => true,
        "runAsUser" => UID,
        "runAsGroup" => UID,
        "fsGroup" => UID,
        "seccompProfile" => map! { "type" => "RuntimeDefault" },
    }
}

fn container_security() -> Value {
    map! {
        "allowPrivilegeEscalation" => false,
        "readOnlyRootFilesystem" => true,
        "capabilities" => map! { "drop" => list!["ALL"] },
    }
}

fn resources(cpu: &str, memory: &str, cpu_limit: &str, memory_limit: &str) -> Value {
    map! {
        "requests" => map! { "cpu" => cpu, "memory" => memory },
        "limits" => map! { "cpu" => cpu_limit, "memory" => memory_limit },
    }
}

/// Secret references: store URLs from the shared Secret, private keys from the service's own.
fn secret_env(owner: &str, env: &[(&str, &str)]) -> Vec<Value> {
    env.iter()
        .map(|(key, compose)| {
            let secret = if is_private_key(key) {
                keys_secret(owner)
            } else {
                STORES_SECRET.to_owned()
            };
            let mut reference = vec![
                ("name".to_owned(), Value::from(secret)),
                ("key".to_owned(), Value::from(*key)),
            ];
            if is_optional(compose) {
                reference.push(("optional".to_owned(), Value::Bool(true)));
            }
            map! { "name" => *key, "valueFrom" => map! { "secretKeyRef" => Value::Map(reference) } }
        })
        .collect()
}

fn grpc_probe(port: u16, service: Option<&str>, period: i64, failures: i64) -> Value {
    let mut grpc = vec![("port".to_owned(), Value::from(port))];
    if let Some(service) = service {
        grpc.push(("service".to_owned(), Value::from(service)));
    }
    map! {
        "grpc" => Value::Map(grpc),
        "periodSeconds" => period,
        "timeoutSeconds" => 2i64,
        "failureThreshold" => failures,
    }
}

fn http_probe(path: &str, period: i64, failures: i64) -> Value {
    map! {
        "httpGet" => map! { "path" => path, "port" => "http" },
        "periodSeconds" => period,
        "timeoutSeconds" => 2i64,
        "failureThreshold" => failures,
    }
}

/// Startup (up to a minute: a service migrates its stores before it listens), liveness and
/// readiness. A service's overall gRPC health ("") is SERVING from start until shutdown, so it
/// says the process lives; its first gRPC service's health follows its readiness check (stores
/// answer, the user service's public keys are loaded). The gateway has /healthz and /readyz.
fn probes(target: &Target) -> [(&'static str, Value); 3] {
    match target.service {
        Some(service) => {
            let port = service.default_port();
            let ready = service.grpc_services().first().copied();
            [
                ("startupProbe", grpc_probe(port, None, 2, 30)),
                ("livenessProbe", grpc_probe(port, None, 10, 3)),
                ("readinessProbe", grpc_probe(port, ready, 5, 3)),
            ]
        }
        None => [
            ("startupProbe", http_probe("/healthz", 2, 30)),
            ("livenessProbe", http_probe("/healthz", 10, 3)),
            ("readinessProbe", http_probe("/readyz", 5, 3)),
        ],
    }
}

/// The container ports: gRPC (or the gateway's HTTP, which also serves its /metrics) and the
/// metrics port of a process that runs no gateway.
fn ports(target: &Target) -> Vec<(&'static str, u16)> {
    match target.service {
        Some(service) => vec![("grpc", service.default_port()), ("metrics", METRICS_PORT)],
        None => vec![("http", GATEWAY_PORT)],
    }
}

fn metrics_port(target: &Target) -> u16 {
    if target.service.is_some() {
        METRICS_PORT
    } else {
        GATEWAY_PORT
    }
}

/// The identity keys directory: this target's own private key and every public key, nothing
/// else (mode 0440 = 288, readable by the container's group, fsGroup 10001).
fn mesh_keys_volume(target: &str) -> Value {
    let key = format!("{target}.key");
    map! {
        "name" => "mesh-keys",
        "projected" => map! {
            "defaultMode" => 288i64,
            "sources" => list![
                map! { "secret" => map! {
                    "name" => mesh_key_secret(target),
                    "items" => list![map! { "key" => &key, "path" => &key }],
                }},
                map! { "configMap" => map! { "name" => PUBLIC_KEYS } },
            ],
        },
    }
}

fn image() -> String {
    format!("{IMAGE}:{BASE_TAG}")
}

/// The Deployment of one target.
fn deployment(target: &Target) -> Value {
    let name = target.name;
    let ports: Vec<Value> = ports(target)
        .into_iter()
        .map(|(port_name, port)| {
            map! { "name" => port_name, "containerPort" => port, "protocol" => "TCP" }
        })
        .collect();
    let mut container = vec![
        ("name".to_owned(), Value::from(name)),
        ("image".to_owned(), Value::from(image())),
        ("imagePullPolicy".to_owned(), Value::from("IfNotPresent")),
        ("args".to_owned(), list!["serve", "--target", name]),
        ("ports".to_owned(), Value::List(ports)),
        (
            "envFrom".to_owned(),
            list![map! { "configMapRef" => map! { "name" => CONFIG } }],
        ),
        (
            "env".to_owned(),
            Value::List(secret_env(name, &target.secret_env())),
        ),
    ];
    for (probe, value) in probes(target) {
        container.push((probe.to_owned(), value));
    }
    let requests = if target.service.is_some() {
        resources("100m", "128Mi", "1", "512Mi")
    } else {
        resources("200m", "128Mi", "1", "512Mi")
    };
    container.extend([
        ("resources".to_owned(), requests),
        ("securityContext".to_owned(), container_security()),
        (
            "volumeMounts".to_owned(),
            list![
                map! { "name" => "mesh-keys", "mountPath" => MESH_DIR, "readOnly" => true },
                map! { "name" => "tmp", "mountPath" => "/tmp" },
            ],
        ),
    ]);
    map! {
        "apiVersion" => "apps/v1",
        "kind" => "Deployment",
        "metadata" => metadata(name, labels(name)),
        "spec" => map! {
            "replicas" => 1i64,
            "selector" => map! { "matchLabels" => labels(name) },
            "strategy" => map! {
                "type" => "RollingUpdate",
                "rollingUpdate" => map! { "maxSurge" => 1i64, "maxUnavailable" => 0i64 },
            },
            "template" => map! {
                "metadata" => map! {
                    "labels" => labels(name),
                    "annotations" => map! {
                        "prometheus.io/scrape" => "true",
                        "prometheus.io/port" => metrics_port(target).to_string(),
                        "prometheus.io/path" => "/metrics",
                    },
                },
                "spec" => map! {
                    // Nothing here calls the Kubernetes API, and service links would put
                    // USER_PORT, REDIS_PORT … into the environment.
                    "automountServiceAccountToken" => false,
                    "enableServiceLinks" => false,
                    // SHUTDOWN_GRACE_SECS (10) of draining after health turns NOT_SERVING.
                    "terminationGracePeriodSeconds" => 30i64,
                    "securityContext" => pod_security(),
                    "containers" => list![Value::Map(container)],
                    "volumes" => list![
                        mesh_keys_volume(name),
                        map! { "name" => "tmp", "emptyDir" => map! { "sizeLimit" => "64Mi" } },
                    ],
                },
            },
        },
    }
}

/// The Service in front of one target's pods: its gRPC (or HTTP) port and its metrics port.
fn service(target: &Target) -> Value {
    let ports: Vec<Value> = ports(target)
        .into_iter()
        .map(|(port_name, port)| {
            let protocol = if port_name == "grpc" { "grpc" } else { "http" };
            map! {
                "name" => port_name,
                "port" => port,
                "targetPort" => port_name,
                "protocol" => "TCP",
                "appProtocol" => protocol,
            }
        })
        .collect();
    map! {
        "apiVersion" => "v1",
        "kind" => "Service",
        "metadata" => metadata(target.name, labels(target.name)),
        "spec" => map! {
            "type" => "ClusterIP",
            "selector" => labels(target.name),
            "ports" => Value::List(ports),
        },
    }
}

/// Scales one Deployment on CPU.
fn autoscaler(target: &Target) -> Value {
    map! {
        "apiVersion" => "autoscaling/v2",
        "kind" => "HorizontalPodAutoscaler",
        "metadata" => metadata(target.name, labels(target.name)),
        "spec" => map! {
            "scaleTargetRef" => map! {
                "apiVersion" => "apps/v1",
                "kind" => "Deployment",
                "name" => target.name,
            },
            "minReplicas" => 1i64,
            "maxReplicas" => 5i64,
            "metrics" => list![map! {
                "type" => "Resource",
                "resource" => map! {
                    "name" => "cpu",
                    "target" => map! { "type" => "Utilization", "averageUtilization" => 70i64 },
                },
            }],
        },
    }
}

/// Keeps one pod of a Deployment through voluntary disruptions (node drains).
fn disruption_budget(target: &Target) -> Value {
    map! {
        "apiVersion" => "policy/v1",
        "kind" => "PodDisruptionBudget",
        "metadata" => metadata(target.name, labels(target.name)),
        "spec" => map! {
            "minAvailable" => 1i64,
            "selector" => map! { "matchLabels" => labels(target.name) },
        },
    }
}

/// The non-secret settings of `.env.example` with cluster values: production profile, JSON
/// logs, listening on all interfaces, peers at their Services' DNS names.
fn config_map(mesh: &Mesh) -> Value {
    let mut data: Vec<(String, String)> = Vec::new();
    for line in include_str!("../.env.example").lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let documented_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !documented_key || is_secret(key) || NOT_IN_CLUSTER.contains(&key) {
            continue;
        }
        let value = value.trim().trim_matches('"');
        if !value.is_empty() {
            data.push((key.to_owned(), value.to_owned()));
        }
    }
    let mut set = |key: String, value: String| match data.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => data.push((key, value)),
    };
    for (key, value) in CLUSTER_SETTINGS {
        set((*key).to_owned(), (*value).to_owned());
    }
    for service in mesh.services() {
        let (name, port) = (service.name(), service.default_port());
        set(addr_key(name), format!("0.0.0.0:{port}"));
        set(url_key(name), format!("http://{name}:{port}"));
    }
    map! {
        "apiVersion" => "v1",
        "kind" => "ConfigMap",
        "metadata" => metadata(CONFIG, labels("config")),
        "data" => Value::Map(data.into_iter().map(|(k, v)| (k, Value::Str(v))).collect()),
    }
}

/// Every store URL any target reads, with its compose value.
fn store_urls(mesh: &Mesh) -> BTreeMap<&'static str, &'static str> {
    targets(mesh)
        .iter()
        .flat_map(|target| target.secret_env())
        .filter(|(key, _)| !is_private_key(key))
        .collect()
}

fn secret(name: &str, component: &str, data: Vec<(String, Value)>) -> Value {
    map! {
        "apiVersion" => "v1",
        "kind" => "Secret",
        "metadata" => metadata(name, labels(component)),
        "type" => "Opaque",
        "stringData" => Value::Map(data),
    }
}

/// The store URLs: placeholders in the template, the dev overlay's stores in dev.
fn stores_secret(mesh: &Mesh, dev: bool) -> Value {
    let data = store_urls(mesh)
        .into_iter()
        .map(|(key, compose)| {
            let value = if dev {
                dev_value(compose)
            } else {
                PLACEHOLDER.to_owned()
            };
            (key.to_owned(), Value::Str(value))
        })
        .collect();
    secret(STORES_SECRET, "stores", data)
}

/// A service's private keys (the user service's token signing key): only its pods read it.
fn keys_secret_template(service: &dyn Service) -> Option<Value> {
    let data: Vec<(String, Value)> = service
        .deploy_env()
        .iter()
        .filter(|(key, _)| is_private_key(key))
        .map(|(key, compose)| {
            let value = if is_optional(compose) {
                ""
            } else {
                PLACEHOLDER
            };
            ((*key).to_owned(), Value::from(value))
        })
        .collect();
    (!data.is_empty()).then(|| secret(&keys_secret(service.name()), service.name(), data))
}

/// One target's identity private key, `<target>.key` as `shopmesh mesh-keys` writes it.
fn mesh_key_secret_template(target: &str) -> Value {
    secret(
        &mesh_key_secret(target),
        target,
        vec![(format!("{target}.key"), Value::from(PLACEHOLDER))],
    )
}

/// The public half of every identity's key, `<identity>.pub`.
fn public_keys_template(mesh: &Mesh) -> Value {
    let data = mesh
        .identities()
        .into_iter()
        .map(|identity| (format!("{identity}.pub"), Value::from(PLACEHOLDER)))
        .collect();
    map! {
        "apiVersion" => "v1",
        "kind" => "ConfigMap",
        "metadata" => metadata(PUBLIC_KEYS, labels("mesh-keys")),
        "data" => Value::Map(data),
    }
}

/// `shopmesh migrate`: databases, schemas, indexes and event queues (idempotent). It needs every
/// store URL and no key.
fn migrate_job(mesh: &Mesh) -> Value {
    let env: Vec<(&str, &str)> = store_urls(mesh).into_iter().collect();
    map! {
        "apiVersion" => "batch/v1",
        "kind" => "Job",
        "metadata" => metadata("migrate", labels("migrate")),
        "spec" => map! {
            "backoffLimit" => 10i64,
            "ttlSecondsAfterFinished" => 86400i64,
            "template" => map! {
                "metadata" => map! { "labels" => labels("migrate") },
                "spec" => map! {
                    "restartPolicy" => "OnFailure",
                    "automountServiceAccountToken" => false,
                    "enableServiceLinks" => false,
                    "securityContext" => pod_security(),
                    "containers" => list![map! {
                        "name" => "migrate",
                        "image" => image(),
                        "imagePullPolicy" => "IfNotPresent",
                        "args" => list!["migrate"],
                        "envFrom" => list![map! { "configMapRef" => map! { "name" => CONFIG } }],
                        "env" => Value::List(secret_env("migrate", &env)),
                        "resources" => resources("100m", "64Mi", "1", "256Mi"),
                        "securityContext" => container_security(),
                        "volumeMounts" => list![map! { "name" => "tmp", "mountPath" => "/tmp" }],
                    }],
                    "volumes" => list![
                        map! { "name" => "tmp", "emptyDir" => map! { "sizeLimit" => "64Mi" } },
                    ],
                },
            },
        },
    }
}

fn namespace(name: &str) -> Value {
    map! {
        "apiVersion" => "v1",
        "kind" => "Namespace",
        "metadata" => metadata(name, map! { "app.kubernetes.io/part-of" => "shopmesh" }),
    }
}

/// How the dev overlay runs one store, the same images and checks as docker-compose.
struct StoreSpec {
    image: &'static str,
    port: u16,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    data_path: &'static str,
    /// Paths the image writes besides its data (kept in emptyDirs).
    scratch: &'static [(&'static str, &'static str)],
    ready: &'static [&'static str],
    memory_limit: &'static str,
}

fn store_spec(store: Store) -> StoreSpec {
    match store {
        Store::Postgres => StoreSpec {
            image: "postgres:16",
            port: 5432,
            args: &[],
            env: &[
                ("POSTGRES_USER", "shopmesh"),
                ("POSTGRES_PASSWORD", DEV_PASSWORD),
                ("POSTGRES_DB", "shopmesh"),
                // A subdirectory: the volume's root may hold lost+found, which initdb refuses.
                ("PGDATA", "/var/lib/postgresql/data/pgdata"),
            ],
            data_path: "/var/lib/postgresql/data",
            scratch: &[],
            ready: &["pg_isready", "-U", "shopmesh", "-d", "shopmesh"],
            memory_limit: "512Mi",
        },
        Store::Redis => StoreSpec {
            image: "redis:7",
            port: 6379,
            args: &["redis-server", "--appendonly", "yes"],
            env: &[],
            data_path: "/data",
            scratch: &[],
            ready: &["redis-cli", "ping"],
            memory_limit: "256Mi",
        },
        Store::MongoDb => StoreSpec {
            image: "mongo:7",
            port: 27017,
            args: &[],
            env: &[],
            data_path: "/data/db",
            scratch: &[("config", "/data/configdb")],
            ready: &[
                "mongosh",
                "--quiet",
                "--eval",
                "quit(db.adminCommand('ping').ok ? 0 : 1)",
            ],
            memory_limit: "1Gi",
        },
        Store::RabbitMq => StoreSpec {
            image: "rabbitmq:3.13-management",
            port: 5672,
            args: &[],
            env: &[
                ("RABBITMQ_DEFAULT_USER", "shopmesh"),
                ("RABBITMQ_DEFAULT_PASS", DEV_PASSWORD),
            ],
            data_path: "/var/lib/rabbitmq",
            scratch: &[],
            ready: &["rabbitmq-diagnostics", "-q", "ping"],
            memory_limit: "512Mi",
        },
    }
}

fn store_labels(store: Store) -> Value {
    map! {
        "app.kubernetes.io/name" => store.compose_name(),
        "app.kubernetes.io/part-of" => "shopmesh",
    }
}

/// The headless Service of a dev store: its name is the host in the store URLs.
fn store_service(store: Store) -> Value {
    let spec = store_spec(store);
    let name = store.compose_name();
    map! {
        "apiVersion" => "v1",
        "kind" => "Service",
        "metadata" => metadata(name, store_labels(store)),
        "spec" => map! {
            "clusterIP" => "None",
            "selector" => store_labels(store),
            "ports" => list![map! {
                "name" => name,
                "port" => spec.port,
                "targetPort" => spec.port,
                "protocol" => "TCP",
            }],
        },
    }
}

/// A dev store: one pod with its data on a PersistentVolumeClaim.
fn store_stateful_set(store: Store) -> Value {
    let spec = store_spec(store);
    let name = store.compose_name();
    let mut container = vec![
        ("name".to_owned(), Value::from(name)),
        ("image".to_owned(), Value::from(spec.image)),
    ];
    if !spec.args.is_empty() {
        container.push((
            "args".to_owned(),
            Value::List(spec.args.iter().map(|a| Value::from(*a)).collect()),
        ));
    }
    if !spec.env.is_empty() {
        let env = spec
            .env
            .iter()
            .map(|(key, value)| map! { "name" => *key, "value" => *value })
            .collect();
        container.push(("env".to_owned(), Value::List(env)));
    }
    let mut mounts = vec![map! { "name" => "data", "mountPath" => spec.data_path }];
    let mut volumes = Vec::new();
    for (volume, path) in spec.scratch {
        mounts.push(map! { "name" => *volume, "mountPath" => *path });
        volumes.push(map! { "name" => *volume, "emptyDir" => map! {} });
    }
    container.extend([
        (
            "ports".to_owned(),
            list![map! { "name" => name, "containerPort" => spec.port, "protocol" => "TCP" }],
        ),
        (
            "readinessProbe".to_owned(),
            map! {
                "exec" => map! {
                    "command" => Value::List(spec.ready.iter().map(|a| Value::from(*a)).collect()),
                },
                "periodSeconds" => 10i64,
                "timeoutSeconds" => 10i64,
                "failureThreshold" => 6i64,
            },
        ),
        (
            "resources".to_owned(),
            resources("100m", "128Mi", "1", spec.memory_limit),
        ),
        ("volumeMounts".to_owned(), Value::List(mounts)),
    ]);
    let mut pod = vec![
        (
            "automountServiceAccountToken".to_owned(),
            Value::Bool(false),
        ),
        ("enableServiceLinks".to_owned(), Value::Bool(false)),
        ("containers".to_owned(), list![Value::Map(container)]),
    ];
    if !volumes.is_empty() {
        pod.push(("volumes".to_owned(), Value::List(volumes)));
    }
    map! {
        "apiVersion" => "apps/v1",
        "kind" => "StatefulSet",
        "metadata" => metadata(name, store_labels(store)),
        "spec" => map! {
            "serviceName" => name,
            "replicas" => 1i64,
            "selector" => map! { "matchLabels" => store_labels(store) },
            "template" => map! {
                "metadata" => map! { "labels" => store_labels(store) },
                "spec" => Value::Map(pod),
            },
            "volumeClaimTemplates" => list![map! {
                "metadata" => map! { "name" => "data" },
                "spec" => map! {
                    "accessModes" => list!["ReadWriteOnce"],
                    "resources" => map! { "requests" => map! { "storage" => "1Gi" } },
                },
            }],
        },
    }
}

fn kustomization(entries: Vec<(&str, Value)>) -> Value {
    let mut map = vec![
        (
            "apiVersion".to_owned(),
            Value::from("kustomize.config.k8s.io/v1beta1"),
        ),
        ("kind".to_owned(), Value::from("Kustomization")),
    ];
    map.extend(entries.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Value::Map(map)
}

/// A JSON patch (RFC 6902) applied to every object of one kind.
fn patch_entry(path: &str, kind: &str) -> Value {
    map! { "path" => path, "target" => map! { "kind" => kind } }
}

fn replace_ops(ops: &[(&str, i64)]) -> Value {
    Value::List(
        ops.iter()
            .map(|(path, value)| map! { "op" => "replace", "path" => *path, "value" => *value })
            .collect(),
    )
}

fn stores(mesh: &Mesh) -> BTreeSet<Store> {
    mesh.services()
        .iter()
        .flat_map(|s| s.stores().iter().copied())
        .collect()
}

fn target_file(name: &str) -> String {
    format!("{name}.yaml")
}

const GENERATED: &str = "Generated by `shopmesh k8s --out deploy/k8s` from the binary's list of services; CI fails\nwhen this directory drifts from it. Do not edit by hand.";

/// Every file of the layout, paths relative to the output directory.
pub fn render(mesh: &Mesh) -> Vec<File> {
    let targets = targets(mesh);
    let mut files = Vec::new();
    let mut add = |path: &str, comment: &str, docs: Vec<Value>| {
        files.push(File {
            path: PathBuf::from(path),
            contents: render_docs(comment, &docs),
        });
    };

    let mut resources = vec![Value::from("config.yaml"), Value::from("migrate.yaml")];
    for target in &targets {
        add(
            &format!("base/{}", target_file(target.name)),
            &format!(
                "{GENERATED}\n\nThe {} target: its pods, Service, CPU autoscaler and disruption budget.",
                target.name
            ),
            vec![
                deployment(target),
                service(target),
                autoscaler(target),
                disruption_budget(target),
            ],
        );
        resources.push(Value::from(target_file(target.name)));
    }
    add(
        "base/config.yaml",
        &format!(
            "{GENERATED}\n\nThe non-secret settings of .env.example with their cluster values; secrets are in the\nSecrets of secrets.template.yaml. Pods read it at start: `kubectl rollout restart` after a change."
        ),
        vec![config_map(mesh)],
    );
    add(
        "base/migrate.yaml",
        &format!(
            "{GENERATED}\n\nOne-shot `shopmesh migrate` (idempotent). A Job's pod template cannot change: delete the\nfinished Job before applying a new image (it is removed a day after it finished)."
        ),
        vec![migrate_job(mesh)],
    );
    let mut templates = vec![stores_secret(mesh, false)];
    templates.extend(
        mesh.services()
            .iter()
            .filter_map(|s| keys_secret_template(s.as_ref())),
    );
    templates.extend(targets.iter().map(|t| mesh_key_secret_template(t.name)));
    templates.push(public_keys_template(mesh));
    add(
        "base/secrets.template.yaml",
        &format!(
            "{GENERATED}\n\nTemplates of what the base needs and does not hold: replace every \"{PLACEHOLDER}\" and apply it\nto the namespace yourself (or create the objects as deploy/k8s/README.md shows). Not listed in\nkustomization.yaml on purpose: applying the overlay would put the placeholders back."
        ),
        templates,
    );
    add(
        "base/kustomization.yaml",
        &format!(
            "{GENERATED}\n\nEvery shopmesh target, the settings and the migrate Job. The stores are not here (use\nmanaged ones, or the dev overlay's), nor the Secrets (see secrets.template.yaml)."
        ),
        vec![kustomization(vec![("resources", Value::List(resources))])],
    );

    // The dev overlay: its own stores, one replica each, at most two under load.
    let stores = stores(mesh);
    let mut store_docs = Vec::new();
    for store in &stores {
        store_docs.push(store_service(*store));
        store_docs.push(store_stateful_set(*store));
    }
    add(
        "overlays/dev/stores.yaml",
        &format!(
            "{GENERATED}\n\nThe stores for a self-contained dev cluster, each one pod with a 1Gi volume, reached at the\nhosts of the store URLs in secrets.yaml."
        ),
        store_docs,
    );
    add(
        "overlays/dev/secrets.yaml",
        &format!(
            "{GENERATED}\n\nThe dev stores' URLs (their passwords are dev-only: the stores are reachable only inside the\nnamespace). The signing key and identity keys are made per installation (README.md)."
        ),
        vec![stores_secret(mesh, true)],
    );
    add(
        "overlays/dev/namespace.yaml",
        GENERATED,
        vec![namespace(DEV_NAMESPACE)],
    );
    add(
        "overlays/dev/replicas.yaml",
        GENERATED,
        vec![replace_ops(&[("/spec/replicas", 1)])],
    );
    add(
        "overlays/dev/autoscaling.yaml",
        GENERATED,
        vec![replace_ops(&[
            ("/spec/minReplicas", 1),
            ("/spec/maxReplicas", 2),
        ])],
    );
    add(
        "overlays/dev/kustomization.yaml",
        &format!("{GENERATED}\n\n  kubectl apply -k deploy/k8s/overlays/dev"),
        vec![kustomization(vec![
            ("namespace", Value::from(DEV_NAMESPACE)),
            (
                "resources",
                list![
                    "../../base",
                    "namespace.yaml",
                    "stores.yaml",
                    "secrets.yaml"
                ],
            ),
            (
                "patches",
                list![
                    patch_entry("replicas.yaml", "Deployment"),
                    patch_entry("autoscaling.yaml", "HorizontalPodAutoscaler"),
                ],
            ),
        ])],
    );

    // The production overlay: at least two replicas of everything, a released image.
    add(
        "overlays/production/namespace.yaml",
        GENERATED,
        vec![namespace(PRODUCTION_NAMESPACE)],
    );
    add(
        "overlays/production/replicas.yaml",
        GENERATED,
        vec![replace_ops(&[("/spec/replicas", 2)])],
    );
    add(
        "overlays/production/autoscaling.yaml",
        GENERATED,
        vec![replace_ops(&[
            ("/spec/minReplicas", 2),
            ("/spec/maxReplicas", 10),
        ])],
    );
    add(
        "overlays/production/kustomization.yaml",
        &format!(
            "{GENERATED}\n\nSet `newName` to the image in your registry. The stores are managed services: create the\nSecrets of base/secrets.template.yaml in the namespace first.\n\n  kubectl apply -k deploy/k8s/overlays/production"
        ),
        vec![kustomization(vec![
            ("namespace", Value::from(PRODUCTION_NAMESPACE)),
            ("resources", list!["../../base", "namespace.yaml"]),
            (
                "images",
                list![map! { "name" => IMAGE, "newTag" => env!("CARGO_PKG_VERSION") }],
            ),
            (
                "patches",
                list![
                    patch_entry("replicas.yaml", "Deployment"),
                    patch_entry("autoscaling.yaml", "HorizontalPodAutoscaler"),
                ],
            ),
        ])],
    );
    files.push(File {
        path: PathBuf::from("README.md"),
        contents: readme(&targets),
    });
    files
}

/// Writes every file of [`render`] under `out`; returns the paths written.
pub fn write(mesh: &Mesh, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for file in render(mesh) {
        let path = out.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, file.contents)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn readme(targets: &[Target]) -> String {
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"# Kubernetes manifests

Generated by `shopmesh k8s --out {OUT_DIR}` from the binary's list of services (do not edit by
hand; `scripts/test` fails when this directory drifts from the output and validates every object
against the Kubernetes 1.30 schemas with `scripts/k8s-validate.py`). To regenerate:

```sh
rm -rf {OUT_DIR} && ./target/debug/shopmesh k8s --out {OUT_DIR}
```

- `base/`: for each target a Deployment (`serve --target <name>`, non-root uid 10001, read-only
  root filesystem, no capabilities), a Service (the gRPC port; the gateway's HTTP 8081, which
  also serves its `/metrics`; the metrics port 9464 of the others), a CPU
  HorizontalPodAutoscaler and a PodDisruptionBudget (`minAvailable: 1`). The targets:
  {targets}.
  Besides them the ConfigMap `{CONFIG}` (the non-secret keys of `.env.example` with cluster
  values: production profile, JSON logs, peers at `http://<service>:<port>`) and the `migrate`
  Job (`shopmesh migrate`). Services are probed over gRPC health (`grpc.health.v1`, Kubernetes'
  native `grpc` probe): liveness on the overall status, readiness on the service's own, which
  follows its stores and the user service's public keys. The gateway is probed on `/healthz`
  and `/readyz`.
- `base/secrets.template.yaml`: the Secrets the base refers to but does not hold (store URLs,
  the signing key, identity keys), with `{PLACEHOLDER}` values. It is not part of the
  kustomization: applying it with every rollout would put the placeholders back.
- `overlays/dev/`: namespace `{DEV_NAMESPACE}`, one replica of each target (the autoscalers go
  to two at most), and the stores as StatefulSets with a volume each (PostgreSQL, Redis,
  MongoDB, RabbitMQ, the images of docker-compose.yml), their URLs in `secrets.yaml`.
- `overlays/production/`: namespace `{PRODUCTION_NAMESPACE}`, two replicas or more of each
  target (autoscalers from 2 to 10), the image tag of this release.

The stores are not in the base: production uses managed PostgreSQL, Redis, MongoDB and RabbitMQ
(or operators of your choice), whose URLs go into the `{STORES_SECRET}` Secret.

## Before the first apply: keys and secrets

Each Deployment mounts, at `{MESH_DIR}` (`MESH_KEYS_DIR`), only its own identity private key (the
Secret `shopmesh-mesh-key-<name>`, file `<name>.key`) and every public key (the ConfigMap
`{PUBLIC_KEYS}`, files `<name>.pub`), as `shopmesh mesh-keys` names them. Only the user
Deployment gets `JWT_PRIVATE_KEY_PEM` (Secret `shopmesh-user-keys`). Make them once per
installation, and keep the key directory off the cluster:

```sh
NS={DEV_NAMESPACE}   # or {PRODUCTION_NAMESPACE}
kubectl create namespace "$NS"
./target/release/shopmesh mesh-keys --dir mesh-keys
for name in {names}; do
  kubectl -n "$NS" create secret generic "shopmesh-mesh-key-$name" \
    --from-file="$name.key=mesh-keys/$name.key"
done
kubectl -n "$NS" create configmap {PUBLIC_KEYS} \
  $(printf -- '--from-file=%s ' mesh-keys/*.pub)
kubectl -n "$NS" create secret generic shopmesh-user-keys \
  --from-literal=JWT_PRIVATE_KEY_PEM="$(openssl genpkey -algorithm ed25519)"
```

In production also create `{STORES_SECRET}` from `base/secrets.template.yaml` with the managed
stores' URLs (the dev overlay brings its own). Then:

```sh
kubectl apply -k {OUT_DIR}/overlays/dev          # or overlays/production
kubectl -n "$NS" rollout status deployment/gateway
kubectl -n "$NS" port-forward service/gateway 8081:8081
curl http://127.0.0.1:8081/readyz
```

The gateway's Service is ClusterIP: put your ingress in front of it (it trusts `X-Real-IP` from
the private address ranges, `TRUSTED_PROXIES` in the ConfigMap). Images: the base names
`{IMAGE}:{BASE_TAG}` (`docker build -t {IMAGE}:{BASE_TAG} .`, then load it into the dev cluster,
e.g. `kind load docker-image {IMAGE}:{BASE_TAG}`); the production overlay sets the release tag:
add `newName` there for the image in your registry.

## Validation

`.tools/venv/bin/python scripts/k8s-validate.py {OUT_DIR}` (run by `scripts/test`, which
installs the `kubernetes-validate` package there) builds the base and each overlay as kustomize
does for the features used here (`resources`, `namespace`, `images`, JSON-patch `patches` with
a kind or name target; any other field is refused). It validates every object of every build
and of the templates in strict mode (an unknown field fails) against the Kubernetes 1.30
schemas; checks that selectors select, that probes and Service ports name container ports and
that every ConfigMap, Secret and key a pod reads exists; and, when `kubectl` is installed,
that `kubectl kustomize` builds the same objects.

## Known limits

- gRPC calls between services go through each Service's cluster IP, which balances per
  connection: a client keeps to the pod it first reached until the connection closes.
- With one replica (dev), the disruption budget blocks a node drain until the pod is deleted.
- E-mail goes to `NOTIFICATION_SMTP_HOST` (127.0.0.1:2525 by default: a relay sidecar);
  point it at your relay.
"#,
        targets = names.join(", "),
        names = names.join(" "),
    );
    out
}

/// Prints YAML documents after a comment block.
fn render_docs(comment: &str, docs: &[Value]) -> String {
    let mut out = String::new();
    for line in comment.lines() {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    for (index, doc) in docs.iter().enumerate() {
        if index > 0 {
            out.push_str("---\n");
        }
        write_block(&mut out, doc, 0);
    }
    out
}

/// Writes a map or list in block style at `indent` spaces.
fn write_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Map(entries) => {
            for (key, value) in entries {
                let key = scalar(&Value::Str(key.clone()));
                match value {
                    Value::Map(inner) if !inner.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        write_block(out, value, indent + 2);
                    }
                    Value::List(inner) if !inner.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        write_block(out, value, indent + 2);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar(value));
                    }
                }
            }
        }
        Value::List(items) => {
            for item in items {
                match item {
                    Value::Map(inner) if !inner.is_empty() => {
                        // The item's first key goes on the dash's line.
                        let mut block = String::new();
                        write_block(&mut block, item, indent + 2);
                        let _ = write!(out, "{pad}- {}", &block[indent + 2..]);
                    }
                    Value::List(inner) if !inner.is_empty() => {
                        let _ = writeln!(out, "{pad}-");
                        write_block(out, item, indent + 2);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar(item));
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}{}", scalar(value));
        }
    }
}

/// A scalar, quoted unless it can only be read back as the same string: anything that starts
/// with a digit or could be a boolean or null in YAML 1.1 is quoted, and so is any character
/// outside a small safe set.
fn scalar(value: &Value) -> String {
    match value {
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Map(_) => "{}".to_owned(),
        Value::List(_) => "[]".to_owned(),
        Value::Str(s) => {
            let safe = s
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./-:".contains(c))
                && !s.ends_with(':')
                && !s.contains("://")
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
                );
            if safe {
                return s.clone();
            }
            let mut quoted = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => quoted.push_str("\\\""),
                    '\\' => quoted.push_str("\\\\"),
                    '\n' => quoted.push_str("\\n"),
                    '\t' => quoted.push_str("\\t"),
                    c if c.is_control() => {
                        let _ = write!(quoted, "\\u{:04x}", u32::from(c));
                    }
                    c => quoted.push(c),
                }
            }
            quoted.push('"');
            quoted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> Mesh {
        crate::mesh()
    }

    /// Every document of every base file, with the file it came from.
    fn base_docs() -> Vec<(String, Value)> {
        let mesh = mesh();
        let mut docs = Vec::new();
        for target in targets(&mesh) {
            for doc in [
                deployment(&target),
                service(&target),
                autoscaler(&target),
                disruption_budget(&target),
            ] {
                docs.push((target.name.to_owned(), doc));
            }
        }
        docs
    }

    fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
        docs.iter()
            .map(|(_, doc)| doc)
            .find(|doc| {
                doc.get("kind").and_then(Value::as_str) == Some(kind)
                    && doc.get("metadata.name").and_then(Value::as_str) == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn container(deployment: &Value) -> &Value {
        deployment.get("spec.template.spec.containers.0").unwrap()
    }

    fn env_names(container: &Value) -> Vec<&str> {
        container
            .get("env")
            .map(Value::items)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.get("name").and_then(Value::as_str))
            .collect()
    }

    #[test]
    fn every_service_gets_a_deployment_service_autoscaler_and_budget_with_grpc_probes() {
        let mesh = mesh();
        let docs = base_docs();
        for service in mesh.services() {
            let name = service.name();
            let port = i64::from(service.default_port());
            let deployment = find(&docs, "Deployment", name);
            let c = container(deployment);
            assert_eq!(
                c.get("args"),
                Some(&list!["serve", "--target", name]),
                "{name}"
            );
            for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                assert_eq!(
                    c.get(&format!("{probe}.grpc.port")).and_then(Value::as_int),
                    Some(port),
                    "{name} {probe}"
                );
            }
            // Readiness asks for the service's own status, which follows its readiness check.
            assert_eq!(
                c.get("readinessProbe.grpc.service").and_then(Value::as_str),
                service.grpc_services().first().copied(),
                "{name}"
            );
            assert_eq!(
                c.get("ports.0.containerPort").and_then(Value::as_int),
                Some(port)
            );
            let svc = find(&docs, "Service", name);
            let ports: Vec<i64> = svc
                .get("spec.ports")
                .unwrap()
                .items()
                .iter()
                .filter_map(|p| p.get("port").and_then(Value::as_int))
                .collect();
            assert_eq!(ports, vec![port, i64::from(METRICS_PORT)], "{name}");
            assert_eq!(svc.get("spec.selector"), Some(&labels(name)));
            let hpa = find(&docs, "HorizontalPodAutoscaler", name);
            assert_eq!(
                hpa.get("spec.scaleTargetRef.name").and_then(Value::as_str),
                Some(name)
            );
            assert_eq!(
                hpa.get("spec.metrics.0.resource.name")
                    .and_then(Value::as_str),
                Some("cpu")
            );
            let pdb = find(&docs, "PodDisruptionBudget", name);
            assert_eq!(
                pdb.get("spec.minAvailable").and_then(Value::as_int),
                Some(1)
            );
            assert_eq!(pdb.get("spec.selector.matchLabels"), Some(&labels(name)));
        }
    }

    #[test]
    fn the_gateway_is_probed_over_http_and_serves_8081() {
        let docs = base_docs();
        let c = container(find(&docs, "Deployment", GATEWAY));
        assert_eq!(
            c.get("readinessProbe.httpGet.path").and_then(Value::as_str),
            Some("/readyz")
        );
        assert_eq!(
            c.get("livenessProbe.httpGet.path").and_then(Value::as_str),
            Some("/healthz")
        );
        assert_eq!(
            find(&docs, "Service", GATEWAY)
                .get("spec.ports.0.port")
                .and_then(Value::as_int),
            Some(8081)
        );
        assert!(
            find(&docs, "HorizontalPodAutoscaler", GATEWAY)
                .get("spec")
                .is_some()
        );
        assert!(
            find(&docs, "PodDisruptionBudget", GATEWAY)
                .get("spec")
                .is_some()
        );
    }

    #[test]
    fn only_the_user_deployment_gets_the_signing_key() {
        let docs = base_docs();
        for target in targets(&mesh()) {
            let names = env_names(container(find(&docs, "Deployment", target.name)));
            assert_eq!(
                names.contains(&"JWT_PRIVATE_KEY_PEM"),
                target.name == "user",
                "{}: {names:?}",
                target.name
            );
            assert!(names.contains(&"AMQP_URL"), "{}", target.name);
        }
        let user = container(find(&docs, "Deployment", "user"));
        let key = user
            .get("env")
            .unwrap()
            .items()
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some("JWT_PRIVATE_KEY_PEM"))
            .unwrap();
        assert_eq!(
            key.get("valueFrom.secretKeyRef.name")
                .and_then(Value::as_str),
            Some("shopmesh-user-keys")
        );
        let migrate = migrate_job(&mesh());
        let names = env_names(migrate.get("spec.template.spec.containers.0").unwrap());
        assert!(names.iter().all(|n| !n.ends_with("_PEM")), "{names:?}");
        assert!(names.contains(&"PRODUCT_DATABASE_URL"), "{names:?}");
    }

    #[test]
    fn each_deployment_mounts_only_its_own_private_key_and_every_public_key() {
        let docs = base_docs();
        for target in targets(&mesh()) {
            let deployment = find(&docs, "Deployment", target.name);
            let sources = deployment
                .get("spec.template.spec.volumes.0.projected.sources")
                .unwrap()
                .items();
            assert_eq!(sources.len(), 2);
            assert_eq!(
                sources[0].get("secret.name").and_then(Value::as_str),
                Some(mesh_key_secret(target.name).as_str())
            );
            assert_eq!(
                sources[0]
                    .get("secret.items.0.path")
                    .and_then(Value::as_str),
                Some(format!("{}.key", target.name).as_str())
            );
            assert_eq!(
                sources[0].get("secret.items").map(|i| i.items().len()),
                Some(1)
            );
            assert_eq!(
                sources[1].get("configMap.name").and_then(Value::as_str),
                Some(PUBLIC_KEYS)
            );
        }
        let public = public_keys_template(&mesh());
        let data = public.get("data").unwrap();
        for identity in mesh().identities() {
            assert!(
                data.entry(&format!("{identity}.pub")).is_some(),
                "{identity}"
            );
        }
    }

    #[test]
    fn containers_run_as_the_images_unprivileged_user() {
        let docs = base_docs();
        for target in targets(&mesh()) {
            let deployment = find(&docs, "Deployment", target.name);
            let pod = deployment
                .get("spec.template.spec.securityContext")
                .unwrap();
            assert_eq!(pod.get("runAsUser").and_then(Value::as_int), Some(UID));
            assert_eq!(pod.get("runAsNonRoot"), Some(&Value::Bool(true)));
            let c = container(deployment);
            assert_eq!(
                c.get("securityContext.readOnlyRootFilesystem"),
                Some(&Value::Bool(true))
            );
            assert_eq!(
                c.get("securityContext.capabilities.drop"),
                Some(&list!["ALL"])
            );
            assert!(c.get("resources.requests.cpu").is_some());
            assert!(c.get("resources.limits.memory").is_some());
        }
    }

    #[test]
    fn the_config_map_points_peers_at_cluster_dns_and_holds_no_secret() {
        let mesh = mesh();
        let config = config_map(&mesh);
        let value = |key: &str| {
            config
                .get("data")
                .and_then(|data| data.entry(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        for service in mesh.services() {
            assert_eq!(
                value(&url_key(service.name())),
                Some(format!(
                    "http://{}:{}",
                    service.name(),
                    service.default_port()
                ))
            );
        }
        assert_eq!(value("SHOPMESH_PROFILE").as_deref(), Some("production"));
        assert_eq!(value("BIND_HOST").as_deref(), Some("0.0.0.0"));
        assert_eq!(value("LOG_FORMAT").as_deref(), Some("json"));
        assert_eq!(value("MESH_KEYS_DIR").as_deref(), Some(MESH_DIR));
        assert_eq!(value("EDGE_ADDR"), None);
        let Some(Value::Map(data)) = config.get("data") else {
            panic!("no data");
        };
        for (key, _) in data {
            assert!(!is_secret(key), "{key} is secret");
        }
    }

    #[test]
    fn every_secret_key_a_pod_reads_is_in_a_template() {
        let mesh = mesh();
        let stores = stores_secret(&mesh, false);
        let dev = stores_secret(&mesh, true);
        for target in targets(&mesh) {
            for (key, _) in target.secret_env() {
                if is_private_key(key) {
                    continue;
                }
                assert_eq!(
                    stores
                        .get("stringData")
                        .and_then(|data| data.entry(key))
                        .and_then(Value::as_str),
                    Some(PLACEHOLDER),
                    "{key}"
                );
            }
        }
        assert_eq!(
            dev.get("stringData.PRODUCT_DATABASE_URL")
                .and_then(Value::as_str),
            Some("postgres://shopmesh:shopmesh@postgres:5432/shopmesh_product")
        );
        assert_eq!(
            dev.get("stringData.AMQP_URL").and_then(Value::as_str),
            Some("amqp://shopmesh:shopmesh@rabbitmq:5672/%2f")
        );
    }

    #[test]
    fn the_dev_overlay_runs_every_store_the_services_need() {
        let mesh = mesh();
        let files = render(&mesh);
        let stores_file = files
            .iter()
            .find(|f| f.path == Path::new("overlays/dev/stores.yaml"))
            .unwrap();
        for store in stores(&mesh) {
            assert!(
                stores_file.contents.contains(&format!(
                    "kind: StatefulSet\nmetadata:\n  name: {}\n",
                    store.compose_name()
                )),
                "{store:?}"
            );
        }
        let base = files
            .iter()
            .find(|f| f.path == Path::new("base/kustomization.yaml"))
            .unwrap();
        for target in targets(&mesh) {
            assert!(
                base.contents
                    .contains(&format!("  - {}.yaml\n", target.name))
            );
            assert!(
                files
                    .iter()
                    .any(|f| f.path == Path::new(&format!("base/{}.yaml", target.name)))
            );
        }
        assert!(!base.contents.contains("- secrets.template.yaml"));
    }

    #[test]
    fn the_checked_in_manifests_are_the_generated_ones() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(OUT_DIR);
        let regenerate = "regenerate: rm -rf deploy/k8s && shopmesh k8s --out deploy/k8s";
        let files = render(&mesh());
        for file in &files {
            let checked_in = std::fs::read_to_string(root.join(&file.path))
                .unwrap_or_else(|_| panic!("{} is missing; {regenerate}", file.path.display()));
            assert_eq!(
                checked_in,
                file.contents,
                "{}: {regenerate}",
                file.path.display()
            );
        }
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap();
                    assert!(
                        files.iter().any(|f| f.path == relative),
                        "{} is not generated; {regenerate}",
                        relative.display()
                    );
                }
            }
        }
    }

    #[test]
    fn scalars_that_yaml_would_read_otherwise_are_quoted() {
        for (raw, printed) in [
            ("plain", "plain"),
            ("true", "\"true\""),
            ("no", "\"no\""),
            ("9464", "\"9464\""),
            ("0.1.0", "\"0.1.0\""),
            ("", "\"\""),
            ("shopmesh:", "\"shopmesh:\""),
            ("a b", "\"a b\""),
            ("http://user:50051", "\"http://user:50051\""),
            ("app.kubernetes.io/name", "app.kubernetes.io/name"),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
        ] {
            assert_eq!(scalar(&Value::from(raw)), printed, "{raw}");
        }
    }

    #[test]
    fn blocks_render_as_kubectl_would_read_them() {
        let doc = map! {
            "a" => 1i64,
            "b" => list![map! { "c" => "d", "e" => list!["f"] }, "g"],
            "h" => map! {},
        };
        let mut out = String::new();
        write_block(&mut out, &doc, 0);
        assert_eq!(out, "a: 1\nb:\n  - c: d\n    e:\n      - f\n  - g\nh: {}\n");
    }

    #[test]
    fn dev_values_resolve_compose_defaults() {
        assert_eq!(
            dev_value("postgres://shopmesh:${POSTGRES_PASSWORD:-shopmesh}@postgres:5432/x"),
            "postgres://shopmesh:shopmesh@postgres:5432/x"
        );
        assert_eq!(dev_value("redis://redis:6379"), "redis://redis:6379");
        assert!(is_optional("${JWT_PREVIOUS_KEY_PEM:-}"));
        assert!(!is_optional("${JWT_PRIVATE_KEY_PEM:?set it}"));
    }
}
