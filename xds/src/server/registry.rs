//! Who is connected and how far each proxy got: per stream, per resource type, the version
//! sent, the version ACKed and the last NACK. Written by the streams, read by admin's
//! `/proxies`; the shape here is the JSON contract `skiff-xds status` reads.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use skiff_api::resource::Kind;

/// One connected proxy, as `/proxies` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub workload: String,
    pub namespace: String,
    pub proxy_version: String,
    /// Seconds since the Unix epoch.
    pub connected_since: u64,
    /// By type name (`Service`, `Endpoints`, ...): only types the proxy subscribed to.
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TypeStatus {
    /// `system_version_info` of the last response sent.
    pub sent: Option<String>,
    /// The version of the last response the proxy ACKed.
    pub acked: Option<String>,
    pub in_sync: bool,
    pub last_nack: Option<Nack>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Nack {
    pub version: String,
    pub message: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// The JSON body of `GET /proxies`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProxiesReport {
    pub config_version: String,
    pub last_error: Option<String>,
    pub proxies: Vec<ProxyStatus>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every open stream's status, by stream id.
#[derive(Debug, Default)]
pub struct Registry {
    // Guards live inside one method call each, never across an `.await`.
    proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, ProxyStatus>> {
        // A panic elsewhere cannot leave a half-written status worth refusing to read.
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a stream; the proxy is listed until the returned guard drops.
    pub fn register(self: &Arc<Self>, id: u64, status: ProxyStatus) -> Registration {
        self.lock().insert(id, status);
        Registration {
            registry: self.clone(),
            id,
        }
    }

    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        self.lock().values().cloned().collect()
    }

    fn update(&self, id: u64, kind: Kind, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(p) = self.lock().get_mut(&id) {
            let t = p.types.entry(kind.message_name().to_owned()).or_default();
            f(t);
            t.in_sync = t.sent.is_some() && t.sent == t.acked;
        }
    }
}

/// A stream's entry in the [`Registry`]; removes it when dropped (the stream ended).
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Registration {
    pub fn sent(&self, kind: Kind, version: &str) {
        self.registry.update(self.id, kind, |t| {
            t.sent = Some(version.to_owned());
        });
    }

    pub fn acked(&self, kind: Kind, version: &str) {
        self.registry.update(self.id, kind, |t| {
            t.acked = Some(version.to_owned());
        });
    }

    pub fn nacked(&self, kind: Kind, version: &str, message: &str) {
        self.registry.update(self.id, kind, |t| {
            t.last_nack = Some(Nack {
                version: version.to_owned(),
                message: message.to_owned(),
                at: unix_now(),
            });
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}
