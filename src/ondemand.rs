//! On-demand outbound discovery: a request for a service the snapshot does not hold asks the
//! xDS client to subscribe to it by what the app addressed (a host or an original destination)
//! and waits, bounded, for the answer. Owns the lookup table and its waiters; the xDS client
//! owns the subscriptions and reports each lookup as found or missing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::sync::{mpsc, watch};
use tracing::warn;

/// Lookups one proxy keeps at once (pending, found or missing). An app that addresses more
/// distinct unknown hosts gets 503 `unknown-service` for the rest without a subscription.
const MAX_LOOKUPS: usize = 10_000;

/// `skiff_xds_lookups{result}`: how each request that waited for a lookup fared.
#[derive(Clone, Debug, Default)]
pub struct LookupMetrics {
    lookups: Family<LookupLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    /// `found`, `missing`, or `timeout` (no answer within `--xds-fetch-timeout`).
    result: &'static str,
}

impl LookupMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = LookupMetrics::default();
        reg.register(
            "skiff_xds_lookups",
            "Requests that waited for a service fetched on demand, by outcome",
            m.lookups.clone(),
        );
        m
    }

    /// The counters of found, missing and timed-out lookups.
    fn outcomes(&self) -> [Counter; 3] {
        ["found", "missing", "timeout"]
            .map(|result| self.lookups.get_or_create_owned(&LookupLabels { result }))
    }
}

/// How one lookup ended; the index of its `skiff_xds_lookups_total` counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Found = 0,
    Missing = 1,
    /// No answer within `--xds-fetch-timeout`.
    Timeout = 2,
}

/// What the control plane said about one alias.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Answer {
    /// Asked; no answer yet.
    Pending,
    /// A service claims it and is in the installed snapshot with what it needs.
    Found,
    /// No service claims it (the subscription stays: a service may claim it later).
    Missing,
    /// A service claims it, but this proxy refused (NACKed) it or what it needs, and holds no
    /// good version: requests get 503 `unknown-service`. The reason is the NACK's.
    Refused(Arc<str>),
}

impl std::fmt::Display for Answer {
    /// As `/config_dump` shows it: `pending`, `found`, `missing`, `refused: <reason>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Pending => f.write_str("pending"),
            Answer::Found => f.write_str("found"),
            Answer::Missing => f.write_str("missing"),
            Answer::Refused(reason) => write!(f, "refused: {reason}"),
        }
    }
}

#[derive(Debug)]
struct Lookup {
    answer: Answer,
    /// A request asked for it since the last idle sweep.
    used: bool,
}

/// Shared by the request path (`fetch`) and the xDS client (everything else).
pub struct OnDemand {
    wanted: mpsc::Sender<String>,
    lookups: Mutex<HashMap<String, Lookup>>,
    answered: watch::Sender<u64>,
    timeout: Duration,
    /// Outcomes of `fetch`: found, missing, timeout.
    outcomes: [Counter; 3],
}

impl OnDemand {
    /// The handle and the receiving end of new aliases, for the xDS client.
    pub fn new(
        timeout: Duration,
        metrics: &LookupMetrics,
    ) -> (Arc<OnDemand>, mpsc::Receiver<String>) {
        let (wanted, rx) = mpsc::channel(1024);
        let od = OnDemand {
            wanted,
            lookups: Mutex::new(HashMap::new()),
            answered: watch::Sender::new(0),
            timeout,
            outcomes: metrics.outcomes(),
        };
        (Arc::new(od), rx)
    }

    /// Asks for the aliases and waits until none is pending, or the timeout, counting the
    /// outcome in `skiff_xds_lookups_total`. The caller then looks in the newest snapshot
    /// again.
    pub async fn fetch(&self, aliases: &[String]) {
        let outcome = self.lookup(aliases).await;
        self.outcomes[outcome as usize].inc();
    }

    /// [`OnDemand::fetch`] without counting: for a look the admin asked for (`/describe`),
    /// which is no request of the app.
    pub async fn lookup(&self, aliases: &[String]) -> Outcome {
        let mut answers = self.answered.subscribe();
        if self.ask(aliases) {
            let wait = async {
                while answers.changed().await.is_ok() {
                    if !self.any_pending(aliases) {
                        return;
                    }
                }
            };
            if tokio::time::timeout(self.timeout, wait).await.is_err() {
                return Outcome::Timeout;
            }
        }
        let found = self.lookups.lock().is_ok_and(|lookups| {
            aliases
                .iter()
                .any(|a| lookups.get(a).is_some_and(|l| l.answer == Answer::Found))
        });
        if found {
            Outcome::Found
        } else {
            Outcome::Missing
        }
    }

    /// Registers the aliases not yet known and sends them to the client; whether any of them
    /// is pending now.
    fn ask(&self, aliases: &[String]) -> bool {
        let Ok(mut lookups) = self.lookups.lock() else {
            return false;
        };
        let mut pending = false;
        for alias in aliases {
            if let Some(l) = lookups.get_mut(alias) {
                l.used = true;
                pending |= l.answer == Answer::Pending;
                continue;
            }
            if lookups.len() >= MAX_LOOKUPS {
                warn!(%alias, limit = MAX_LOOKUPS, "too many on-demand lookups; not subscribing");
                continue;
            }
            // A full channel means the client is far behind; the request fails fast instead.
            if self.wanted.try_send(alias.clone()).is_ok() {
                lookups.insert(
                    alias.clone(),
                    Lookup {
                        answer: Answer::Pending,
                        used: true,
                    },
                );
                pending = true;
            }
        }
        pending
    }

    /// Whether the alias was asked for (answered or not). With the table full, everything
    /// counts as asked: nothing more will be.
    pub fn asked(&self, alias: &str) -> bool {
        self.lookups
            .lock()
            .is_ok_and(|lookups| lookups.len() >= MAX_LOOKUPS || lookups.contains_key(alias))
    }

    fn any_pending(&self, aliases: &[String]) -> bool {
        let Ok(lookups) = self.lookups.lock() else {
            return false;
        };
        aliases
            .iter()
            .any(|a| lookups.get(a).is_some_and(|l| l.answer == Answer::Pending))
    }

    // --- for the xDS client ---

    /// Records answers; waiters look again after [`OnDemand::notify`].
    pub fn answer(&self, alias: &str, answer: Answer) {
        if let Ok(mut lookups) = self.lookups.lock()
            && let Some(l) = lookups.get_mut(alias)
        {
            l.answer = answer;
        }
    }

    /// Wakes every waiter to look at the answers (after a snapshot is installed).
    pub fn notify(&self) {
        self.answered.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The aliases not answered `found`: still pending, or missing or refused so far (a
    /// service may claim them, or a good version come, later).
    pub fn pending(&self) -> Vec<String> {
        let Ok(lookups) = self.lookups.lock() else {
            return Vec::new();
        };
        lookups
            .iter()
            .filter(|(_, l)| l.answer != Answer::Found)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Clears the `used` marks and returns the missing aliases no request asked for since the
    /// last sweep (found ones are judged by their service's use).
    pub fn sweep_missing(&self) -> Vec<String> {
        let Ok(mut lookups) = self.lookups.lock() else {
            return Vec::new();
        };
        let mut idle = Vec::new();
        for (alias, l) in lookups.iter_mut() {
            if l.answer == Answer::Missing && !l.used {
                idle.push(alias.clone());
            }
            l.used = false;
        }
        idle
    }

    /// Drops lookups (their subscriptions are gone); the next request asks again.
    pub fn forget(&self, aliases: &[String]) {
        if let Ok(mut lookups) = self.lookups.lock() {
            for a in aliases {
                lookups.remove(a);
            }
        }
    }

    /// The answer recorded for one alias, if it was asked.
    pub fn answer_of(&self, alias: &str) -> Option<Answer> {
        let lookups = self.lookups.lock().ok()?;
        lookups.get(alias).map(|l| l.answer.clone())
    }

    /// Every lookup and its answer, for `/config_dump`.
    pub fn lookups(&self) -> Vec<(String, Answer)> {
        let Ok(lookups) = self.lookups.lock() else {
            return Vec::new();
        };
        let mut all: Vec<_> = lookups
            .iter()
            .map(|(a, l)| (a.clone(), l.answer.clone()))
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_returns_when_answered_or_timed_out() {
        let (od, mut rx) = OnDemand::new(Duration::from_secs(30), &LookupMetrics::default());
        let keys = vec!["host:a".to_owned()];
        let waiter = {
            let od = od.clone();
            let keys = keys.clone();
            tokio::spawn(async move { od.fetch(&keys).await })
        };
        assert_eq!(rx.recv().await.as_deref(), Some("host:a"));
        od.answer("host:a", Answer::Missing);
        od.notify();
        waiter.await.expect("the waiter returns once answered");
        // Answered: no new subscription, no wait.
        od.fetch(&keys).await;
        assert!(rx.try_recv().is_err());

        let (od, _rx) = OnDemand::new(Duration::from_millis(10), &LookupMetrics::default());
        od.fetch(&["host:b".to_owned()]).await;
        assert_eq!(od.pending(), ["host:b"]);
    }

    #[test]
    fn unused_missing_lookups_are_swept() {
        let (od, _rx) = OnDemand::new(Duration::from_secs(1), &LookupMetrics::default());
        assert!(od.ask(&["host:a".to_owned(), "host:b".to_owned()]));
        od.answer("host:a", Answer::Missing);
        od.answer("host:b", Answer::Found);
        assert!(od.sweep_missing().is_empty(), "both were just used");
        assert_eq!(od.sweep_missing(), ["host:a"]);
        od.forget(&["host:a".to_owned()]);
        assert_eq!(od.lookups(), [("host:b".to_owned(), Answer::Found)]);
    }
}
