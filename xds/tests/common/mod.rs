//! What the `skiff-xds` binary tests share: reading the startup line
//! `skiff-xds listening grpc=ADDR admin=ADDR` of a spawned `serve`, then draining its stdout.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::Child,
};

/// The gRPC and admin addresses `child` announces, read within `deadline`; `Err` carries the
/// line when it is not the startup line. Its stdout is drained afterwards so it never blocks.
pub async fn startup_addrs(
    child: &mut Child,
    deadline: Duration,
) -> Result<(SocketAddr, SocketAddr), String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    tokio::time::timeout(deadline, reader.read_line(&mut line))
        .await
        .expect("startup line in time")
        .expect("read startup line");
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink).await;
    });
    let rest = line
        .trim()
        .strip_prefix("skiff-xds listening ")
        .ok_or_else(|| line.clone())?;
    let (mut grpc, mut admin) = (None, None);
    for part in rest.split(' ') {
        match part.split_once('=') {
            Some(("grpc", a)) => grpc = a.parse().ok(),
            Some(("admin", a)) => admin = a.parse().ok(),
            _ => {}
        }
    }
    grpc.zip(admin).ok_or(line)
}
