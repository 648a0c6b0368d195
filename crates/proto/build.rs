//! Compiles `proto/berth.proto` with protox (pure Rust, no `protoc` needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/berth.proto");
    let fds = protox::compile(["proto/berth.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
