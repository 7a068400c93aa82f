//! Where the mesh config is kept once loaded: the current compiled [`Resources`] behind an
//! `ArcSwap`, a `watch` that wakes discovery streams when it changes, and the last refusal.
//! Sources (`file`, later Kubernetes) only ever install configs that passed validation; the
//! store compiles them, with the CA's trust anchors put into `MeshSettings`.

pub mod file;
pub mod kube;

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use skiff_api::{
    model::{MeshFile, MeshSettings, Service, Workload},
    resource::{Kind, Resources, content_version},
};
use tokio::sync::watch;

/// The control plane's current config, shared by the source, the discovery streams and admin.
#[derive(Debug)]
pub struct ConfigStore {
    current: ArcSwap<Resources>,
    /// The settings of the source's last validated mesh, so that new trust anchors can be
    /// put into `MeshSettings` without a compile.
    settings: ArcSwap<MeshSettings>,
    /// The mesh CA's trust anchors (DER); empty without a CA.
    trust_anchors: ArcSwap<Vec<Vec<u8>>>,
    /// Held while compiling and storing, so a reload and an anchor change cannot undo
    /// each other. Never held across an `.await`.
    writer: Mutex<()>,
    /// Bumped on every install that changed something; streams wait on it.
    changed: watch::Sender<u64>,
    last_error: ArcSwapOption<String>,
}

impl ConfigStore {
    /// A store serving `initial` (validated), without trust anchors until
    /// [`ConfigStore::set_trust_anchors`].
    pub fn new(initial: MeshFile) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(ConfigStore {
            current: ArcSwap::from_pointee(skiff_api::resource::compile(&initial)),
            settings: ArcSwap::from_pointee(initial.mesh),
            trust_anchors: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(()),
            changed,
            last_error: ArcSwapOption::empty(),
        })
    }

    /// The config to serve now; holds no lock, cheap to call per event.
    pub fn current(&self) -> Arc<Resources> {
        self.current.load_full()
    }

    /// A receiver that sees a new value after every config change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Compiles a validated mesh (with the current trust anchors), installs it and wakes the
    /// streams; `false` (and no wake-up) when the result equals the current config, as after
    /// an edit that only touched comments.
    pub fn install(&self, next: MeshFile) -> bool {
        let _writing = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = self.compile_and_store(&next, &self.trust_anchors.load());
        self.settings.store(Arc::new(next.mesh));
        changed
    }

    /// Replaces the `Endpoints` of `services` (held already, from a mesh whose workloads and
    /// trust domain are the ones given) without compiling anything else, and wakes the
    /// streams when that changed something. `None`, and nothing done, when one of them is
    /// not a service held now: the caller installs the whole mesh instead.
    pub fn update_endpoints(
        &self,
        workloads: &[Workload],
        trust_domain: &str,
        services: &[Service],
    ) -> Option<bool> {
        let _writing = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = self
            .current
            .load()
            .with_endpoints(workloads, trust_domain, services)?;
        Some(self.store_if_changed(next))
    }

    /// Replaces the trust anchors every proxy receives in `MeshSettings` and recompiles the
    /// current mesh; `false` when they are the ones already served.
    pub fn set_trust_anchors(&self, anchors: Vec<Vec<u8>>) -> bool {
        let _writing = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if **self.trust_anchors.load() == anchors {
            return false;
        }
        let mut settings = MeshSettings::clone(&self.settings.load());
        settings.trust_anchors = anchors.clone();
        let next = self.current.load().with_trust_anchors(&settings);
        let changed = self.store_if_changed(next);
        self.trust_anchors.store(Arc::new(anchors));
        changed
    }

    /// The trust anchors served now.
    pub fn trust_anchors(&self) -> Arc<Vec<Vec<u8>>> {
        self.trust_anchors.load_full()
    }

    fn compile_and_store(&self, mesh: &MeshFile, anchors: &[Vec<u8>]) -> bool {
        let mut next = skiff_api::resource::compile(mesh);
        if mesh.mesh.trust_anchors != anchors {
            let mut settings = mesh.mesh.clone();
            settings.trust_anchors = anchors.to_vec();
            next = next.with_trust_anchors(&settings);
        }
        self.store_if_changed(next)
    }

    /// Serves `next` unless it equals what is served; wakes the streams when it does not.
    fn store_if_changed(&self, next: Resources) -> bool {
        if **self.current.load() == next {
            return false;
        }
        self.current.store(Arc::new(next));
        self.changed.send_modify(|generation| *generation += 1);
        true
    }

    /// Records why the last reload was refused (`None` after a good one).
    pub fn set_last_error(&self, error: Option<String>) {
        self.last_error.store(error.map(Arc::new));
    }

    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
    }

    /// A version of the whole config: changes when any resource of any kind does.
    pub fn version(&self) -> String {
        let resources = self.current();
        let text: Vec<String> = Kind::ALL
            .iter()
            .map(|&k| resources.kind_version(k))
            .collect();
        content_version(text.join(",").as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(text: &str) -> MeshFile {
        skiff_api::load(text).expect("valid test mesh")
    }

    #[test]
    fn trust_anchors_are_compiled_into_mesh_settings_and_survive_reloads() {
        let store = ConfigStore::new(mesh("services: []\n"));
        let mut changes = store.subscribe();
        assert!(store.current().mesh.message.trust_anchors.is_empty());

        assert!(store.set_trust_anchors(vec![b"anchor-1".to_vec()]));
        assert!(changes.has_changed().expect("open"), "streams are woken");
        changes.mark_unchanged();
        assert_eq!(
            store.current().mesh.message.trust_anchors,
            vec![b"anchor-1".to_vec()]
        );
        assert!(
            !store.set_trust_anchors(vec![b"anchor-1".to_vec()]),
            "same anchors"
        );
        assert!(!changes.has_changed().expect("open"));

        // A reload of the mesh file keeps the anchors.
        assert!(store.install(mesh("mesh: { trustDomain: example.org }\n")));
        let current = store.current();
        assert_eq!(current.mesh.message.trust_domain, "example.org");
        assert_eq!(
            current.mesh.message.trust_anchors,
            vec![b"anchor-1".to_vec()]
        );

        // And new anchors keep the reloaded mesh.
        let version = current.mesh.version().to_owned();
        assert!(store.set_trust_anchors(vec![b"anchor-1".to_vec(), b"anchor-2".to_vec()]));
        let current = store.current();
        assert_eq!(current.mesh.message.trust_domain, "example.org");
        assert_eq!(current.mesh.message.trust_anchors.len(), 2);
        assert_ne!(
            current.mesh.version(),
            version,
            "a new MeshSettings version"
        );
    }

    #[test]
    fn an_endpoints_update_replaces_only_those_endpoints() {
        let text = "services:\n  - { name: a, namespace: default, endpoints: [ { address: \"10.0.0.1:80\" } ] }\n  - { name: b, namespace: default, endpoints: [ { address: \"10.0.0.2:80\" } ] }\n";
        let store = ConfigStore::new(mesh(text));
        store.set_trust_anchors(vec![b"anchor".to_vec()]);
        let before = store.current();
        let mut changes = store.subscribe();
        changes.mark_unchanged();

        let mut edited = mesh(text);
        edited.services[0].endpoints[0].address = Some("10.0.0.9:80".parse().expect("addr"));
        let a = edited.services[0].clone();
        let changed =
            store.update_endpoints(&edited.workloads, "cluster.local", std::slice::from_ref(&a));
        assert_eq!(changed, Some(true));
        assert!(changes.has_changed().expect("open"), "streams are woken");
        let after = store.current();
        assert_eq!(
            after.endpoints["default/a"].message.endpoints[0].address,
            "10.0.0.9:80"
        );
        assert_ne!(
            after.kind_version(Kind::Endpoints),
            before.kind_version(Kind::Endpoints)
        );
        for kind in [
            Kind::Service,
            Kind::Workload,
            Kind::MeshSettings,
            Kind::Authorization,
        ] {
            assert_eq!(
                after.kind_version(kind),
                before.kind_version(kind),
                "{kind:?}"
            );
        }
        assert_eq!(after.endpoints["default/b"], before.endpoints["default/b"]);
        // What a whole compile of the edited mesh gives, anchors included.
        let whole = ConfigStore::new(edited);
        whole.set_trust_anchors(vec![b"anchor".to_vec()]);
        assert_eq!(*whole.current(), *after);

        // The same again changes nothing; an unknown service asks for a whole install.
        assert_eq!(
            store.update_endpoints(&[], "cluster.local", std::slice::from_ref(&a)),
            Some(false)
        );
        let mut unknown = a.clone();
        unknown.name = "c".into();
        assert_eq!(
            store.update_endpoints(&[], "cluster.local", &[unknown]),
            None
        );
        assert_eq!(*store.current(), *after, "nothing done");
    }
}
