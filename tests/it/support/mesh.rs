//! A meshed loopback setup with identity on: a control plane in this process with a CA
//! directory and bootstrap tokens (`MeshCa`), and `skiff --xds` sidecars that prove who they
//! are with a token file. The mesh file is rewritten ConfigMap-style as sidecars bind their
//! inbound ports, since a workload's `inbound.listen` is where its peers connect.

use std::{path::PathBuf, time::Duration};

use skiff_xds::serve::{IdentityArgs, Running, ServeArgs};

use super::{
    STEP, client,
    control_plane::replace_file,
    eventually,
    proxy::{Proxy, ProxyBuilder},
};

/// The trust domain every mesh test uses.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// `spiffe://cluster.local/ns/default/sa/<sa>`.
pub fn spiffe(sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}")
}

/// A control plane with a CA, in this process, serving `mesh.yaml` from its own tempdir.
pub struct MeshCa {
    pub cp: Running,
    pub dir: tempfile::TempDir,
}

impl MeshCa {
    /// Starts with `mesh` (YAML), tokens `default/<workload>: token-<workload>` for each of
    /// `workloads`, and certificates of `lifetime` (None: the default 24 h).
    pub async fn start(mesh: &str, workloads: &[&str], lifetime: Option<Duration>) -> MeshCa {
        let dir = tempfile::Builder::new()
            .prefix("skiff-mesh-")
            .tempdir()
            .expect("tempdir");
        let mesh_path = dir.path().join("mesh.yaml");
        replace_file(&mesh_path, mesh);
        let tokens: String = workloads
            .iter()
            .map(|w| format!("default/{w}: {}\n", token(w)))
            .collect();
        std::fs::write(dir.path().join("tokens.yaml"), tokens).expect("write tokens");
        let mut identity = IdentityArgs {
            ca_dir: Some(dir.path().join("ca")),
            bootstrap_tokens: Some(dir.path().join("tokens.yaml")),
            ..IdentityArgs::default()
        };
        if let Some(l) = lifetime {
            identity.cert_lifetime = l;
        }
        let cp = skiff_xds::serve::start_with(
            ServeArgs {
                config: Some(mesh_path),
                grpc_addr: "127.0.0.1:0".parse().expect("literal"),
                admin_addr: "127.0.0.1:0".parse().expect("literal"),
            },
            identity,
        )
        .await
        .expect("control plane with a CA starts");
        MeshCa { cp, dir }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.cp.grpc_addr)
    }

    pub fn mesh_path(&self) -> PathBuf {
        self.dir.path().join("mesh.yaml")
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Replaces the mesh file (a ConfigMap-style edit the control plane picks up).
    pub fn set_mesh(&self, mesh: &str) {
        replace_file(&self.mesh_path(), mesh);
    }

    /// The control plane's `/proxies` report: `configVersion`, `lastError`, `proxies`.
    pub async fn proxies_report(&self) -> serde_json::Value {
        let r = client::send_h1(self.cp.admin_addr, client::get("admin", "/proxies")).await;
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("/proxies is not JSON: {e}: {}", r.text()))
    }

    /// Replaces the mesh file and returns once the control plane serves the new version
    /// (services are fetched on demand, so a proxy's next lookup gets the edit).
    pub async fn set_mesh_and_wait(&self, mesh: &str) {
        let before = self.proxies_report().await["configVersion"].clone();
        self.set_mesh(mesh);
        eventually("the control plane takes the mesh edit", STEP, || async {
            let report = self.proxies_report().await;
            assert!(
                report["lastError"].is_null(),
                "the control plane refused the edit: {}",
                report["lastError"]
            );
            report["configVersion"] != before
        })
        .await;
    }

    /// A sidecar for `workload` proving itself with its token (`with_token: false`: no
    /// identity, plaintext). Returns once `/ready` (which waits for the certificate).
    pub async fn sidecar(&self, workload: &str, with_token: bool) -> Proxy {
        self.builder(workload, with_token).start().await
    }

    /// The builder behind [`MeshCa::sidecar`], for extra flags.
    pub fn builder(&self, workload: &str, with_token: bool) -> ProxyBuilder {
        let mut b = ProxyBuilder::xds(&self.url()).workload(workload, "default");
        if with_token {
            let path = self.dir.path().join(format!("{workload}.token"));
            std::fs::write(&path, format!("{}\n", token(workload))).expect("write token file");
            b = b.arg("--token-file", path.to_str().expect("utf-8 path"));
        }
        b
    }
}

/// The bootstrap token of `workload` in [`MeshCa`]'s tokens file.
pub fn token(workload: &str) -> String {
    format!("token-{workload}")
}
