//! What the watchers report, in the order they report it, folded into the [`ClusterState`]:
//! a watcher's (re)list replaces every object of its kind at once, the state counts as synced
//! once each kind has been listed, and the impact of everything applied since it was last
//! taken says what the next build must redo. Pure: the watcher tasks live in `watch`.

use std::collections::{BTreeSet, HashMap};

use super::{
    ClusterSettings, ClusterState, Event, Impact, KubeError, Object, ObjectKey, ObjectKind,
};

/// The kinds a synced state has listed.
pub const KINDS: [ObjectKind; 4] = [
    ObjectKind::Service,
    ObjectKind::EndpointSlice,
    ObjectKind::Pod,
    ObjectKind::ConfigMap,
];

/// One report of a watcher.
#[derive(Debug)]
pub enum Change {
    /// A watcher (re)starts listing `kind`: [`Change::Listed`] objects follow, then
    /// [`Change::ListDone`].
    List(ObjectKind),
    /// One object of a list in progress.
    Listed(Object),
    /// The list of `kind` is complete: objects of that kind it did not name are gone.
    ListDone(ObjectKind),
    /// A live add, update or delete.
    Watched(Event),
}

/// The cluster as listed and watched so far.
#[derive(Debug)]
pub struct Feed {
    state: ClusterState,
    /// Objects of lists in progress, by kind, applied together at [`Change::ListDone`].
    listing: HashMap<ObjectKind, Vec<Object>>,
    listed: BTreeSet<ObjectKind>,
    pending: Impact,
    /// Why the mesh ConfigMap's current version was refused, until one is accepted.
    refusal: Option<String>,
}

impl Feed {
    pub fn new(settings: ClusterSettings) -> Self {
        Feed {
            state: ClusterState::new(settings),
            listing: HashMap::new(),
            listed: BTreeSet::new(),
            pending: Impact::default(),
            refusal: None,
        }
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Every kind has been listed once: the state is the whole cluster, worth building.
    pub fn synced(&self) -> bool {
        KINDS.iter().all(|kind| self.listed.contains(kind))
    }

    /// Why the mesh ConfigMap as it stands was refused (the previous one is in use).
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// What changed since the last call.
    pub fn take_impact(&mut self) -> Impact {
        std::mem::take(&mut self.pending)
    }

    /// Folds one change in. An error is a refused mesh ConfigMap: the state keeps the
    /// previous one, and everything else of the change is applied.
    pub fn handle(&mut self, change: Change) -> Result<(), KubeError> {
        let config_map = match &change {
            Change::List(kind) | Change::ListDone(kind) => *kind == ObjectKind::ConfigMap,
            Change::Listed(object) | Change::Watched(Event::Applied(object)) => {
                object.kind() == ObjectKind::ConfigMap
            }
            Change::Watched(Event::Deleted(kind, _)) => *kind == ObjectKind::ConfigMap,
        };
        let result = self.fold(change);
        if config_map {
            match &result {
                Ok(()) => {
                    if !self.listing.contains_key(&ObjectKind::ConfigMap) {
                        self.refusal = None;
                    }
                }
                Err(e) => self.refusal = Some(e.to_string()),
            }
        }
        result
    }

    fn fold(&mut self, change: Change) -> Result<(), KubeError> {
        match change {
            Change::List(kind) => {
                self.listing.insert(kind, Vec::new());
                Ok(())
            }
            Change::Listed(object) => {
                match self.listing.get_mut(&object.kind()) {
                    Some(objects) => objects.push(object),
                    // A watcher that lists without saying so first: take it as live.
                    None => return self.event(Event::Applied(object)),
                }
                Ok(())
            }
            Change::ListDone(kind) => {
                let objects = self.listing.remove(&kind).unwrap_or_default();
                self.listed.insert(kind);
                self.replace(kind, objects)
            }
            Change::Watched(event) => self.event(event),
        }
    }

    /// Makes `objects` the whole of `kind`: deletes the others, applies these.
    fn replace(&mut self, kind: ObjectKind, objects: Vec<Object>) -> Result<(), KubeError> {
        let listed: BTreeSet<ObjectKey> = objects.iter().map(Object::key).collect();
        for key in self.state.keys(kind) {
            if !listed.contains(&key) {
                self.event(Event::Deleted(kind, key))?;
            }
        }
        let mut refused = Ok(());
        for object in objects {
            if let Err(e) = self.event(Event::Applied(object)) {
                refused = Err(e);
            }
        }
        refused
    }

    fn event(&mut self, event: Event) -> Result<(), KubeError> {
        let impact = self.state.impact(&event);
        self.pending.merge(impact);
        self.state.handle(event)
    }
}
