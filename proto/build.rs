//! Compiles every `.proto` under `shopmesh/` with the pure-Rust `protox` compiler (no system
//! `protoc`), generates prost messages and tonic clients/servers, writes the encoded file
//! descriptor set (custom options and comments kept) next to them so servers can answer gRPC
//! reflection, and extracts every RPC's `(shopmesh.common.v1.policy)` into a static table.
//! A method without a policy fails the build: access is denied by default, and this keeps a new
//! RPC from shipping without someone deciding who may call it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, Value};

#[path = "build/docs.rs"]
mod docs;

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

/// Rust source of the method policy table.
fn policies(pool: &DescriptorPool) -> Result<String, Box<dyn std::error::Error>> {
    let extension = pool
        .get_extension_by_name("shopmesh.common.v1.policy")
        .ok_or("the shopmesh.common.v1.policy option is not defined")?;
    let mut out = String::from(
        "/// Every RPC's policy, sorted by path.\npub static METHODS: &[MethodPolicy] = &[\n",
    );
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let options = method.options();
            if !options.has_extension(&extension) {
                missing.push(path);
                continue;
            }
            let value = options.get_extension(&extension);
            let policy = value.as_message().ok_or("policy is not a message")?;
            let field = |name: &str| policy.get_field_by_name(name);
            let access = match field("access").and_then(|v| v.as_enum_number()) {
                Some(1) => "Public",
                Some(2) => "User",
                Some(3) => "Admin",
                Some(4) => "Internal",
                _ => "Denied",
            };
            let callers: Vec<String> = match field("callers").as_deref() {
                Some(Value::List(list)) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(|s| format!("{s:?}")))
                    .collect(),
                _ => Vec::new(),
            };
            let flag = |name: &str| field(name).and_then(|v| v.as_bool()).unwrap_or(false);
            let mut row = String::new();
            writeln!(
                row,
                "    MethodPolicy {{ path: {path:?}, service: {:?}, method: {:?}, access: Access::{access}, \
                 callers: &[{}], idempotent: {}, long_running: {}, client_streaming: {}, server_streaming: {} }},",
                service.full_name(),
                method.name(),
                callers.join(", "),
                flag("idempotent"),
                flag("long_running"),
                method.is_client_streaming(),
                method.is_server_streaming(),
            )?;
            rows.push((path, row));
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "these RPCs declare no (shopmesh.common.v1.policy): {}",
            missing.join(", ")
        )
        .into());
    }
    rows.sort();
    for (_, row) in rows {
        out.push_str(&row);
    }
    out.push_str("];\n");
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    collect(&root.join("shopmesh"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=shopmesh");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(&files)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The encoded set keeps custom options, which reflection clients (grpcurl) then show too.
    std::fs::write(
        out_dir.join("shopmesh_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let pool = compiler.descriptor_pool();
    std::fs::write(out_dir.join("shopmesh_policies.rs"), policies(&pool)?)?;
    std::fs::write(out_dir.join("grpc_docs.html"), docs::render(&pool))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
