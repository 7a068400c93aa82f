//! Retry budget per service: over a sliding 10 s window, retries may not exceed
//! `ratio` × requests + 10 × `minRetriesPerSecond`, so retries cannot multiply an outage.
//! The window is ten one-second slots of atomics, carried across snapshots.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Instant,
};

use skiff_api::model;

const SLOTS: usize = 10;

fn now_sec() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    // Seconds from 1, so that a slot stamped 0 is never mistaken for a current one.
    START.get_or_init(Instant::now).elapsed().as_secs() + 1
}

#[derive(Debug, Default)]
struct Slot {
    sec: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// The counted requests and retries of one service.
#[derive(Debug, Default)]
pub struct BudgetState {
    slots: [Slot; SLOTS],
}

impl BudgetState {
    /// The slot for this second, cleared first if it still holds an older second. Concurrent
    /// clears may lose an increment or two; a budget tolerates that.
    fn slot(&self, sec: u64) -> &Slot {
        let slot = &self.slots[(sec % SLOTS as u64) as usize];
        let seen = slot.sec.load(Ordering::Relaxed);
        if seen != sec
            && slot
                .sec
                .compare_exchange(seen, sec, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Requests and retries of the last 10 s.
    pub fn window(&self) -> (u64, u64) {
        let now = now_sec();
        self.slots
            .iter()
            .filter(|s| s.sec.load(Ordering::Relaxed) + (SLOTS as u64) > now)
            .fold((0, 0), |(req, ret), s| {
                (
                    req + u64::from(s.requests.load(Ordering::Relaxed)),
                    ret + u64::from(s.retries.load(Ordering::Relaxed)),
                )
            })
    }
}

/// A configured budget (`retryBudget`) over its service's state.
#[derive(Debug, Clone)]
pub struct Budget {
    pub ratio: f64,
    pub min_retries_per_second: u32,
    pub state: Arc<BudgetState>,
}

impl Budget {
    pub fn new(spec: &model::RetryBudget, state: Arc<BudgetState>) -> Self {
        Budget {
            ratio: spec.ratio,
            min_retries_per_second: spec.min_retries_per_second,
            state,
        }
    }

    /// Counts one request toward the ratio.
    pub fn deposit(&self) {
        self.state
            .slot(now_sec())
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false (and nothing taken) when it is spent.
    pub fn withdraw(&self) -> bool {
        let (requests, retries) = self.state.window();
        let allowed =
            self.ratio * requests as f64 + f64::from(self.min_retries_per_second) * SLOTS as f64;
        if (retries as f64) < allowed {
            self.state
                .slot(now_sec())
                .retries
                .fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_ratio_and_minimum() {
        let b = Budget::new(
            &model::RetryBudget {
                ratio: 0.2,
                min_retries_per_second: 1,
            },
            Arc::default(),
        );
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..1000).filter(|_| b.withdraw()).count();
        // 0.2 × 100 + 10 × 1; a second boundary during the test cannot add any.
        assert_eq!(granted, 30);
        assert_eq!(b.state.window(), (100, 30));
    }

    #[test]
    fn zero_ratio_and_minimum_allows_nothing() {
        let b = Budget::new(
            &model::RetryBudget {
                ratio: 0.0,
                min_retries_per_second: 0,
            },
            Arc::default(),
        );
        b.deposit();
        assert!(!b.withdraw());
    }
}
