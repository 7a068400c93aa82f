//! Compiles the discovery API (`proto/skiff/xds/v1/xds.proto`) with protox, so no system
//! `protoc` is needed. Maps are generated as `BTreeMap`, so a message encodes to the same
//! bytes every time and resource versions (hashes of those bytes) are stable.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["skiff/xds/v1/xds.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
