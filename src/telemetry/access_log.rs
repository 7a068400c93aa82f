//! The access log: one JSON object per line on stdout for each request and TCP connection,
//! with the trace and span ids that join it to the trace. Off by default. Lines go through a
//! bounded queue to a writer thread, so a slow stdout drops lines (counted), never requests.

use std::{
    io::Write,
    sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel},
    time::SystemTime,
};

use prometheus_client::{metrics::counter::Counter, registry::Registry};
use serde::Serialize;

/// Lines waiting for the writer beyond this are dropped.
const QUEUE: usize = 4096;

/// One request or connection, as logged.
#[derive(Debug, Default, Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub direction: &'static str,
    pub method: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub path: Option<&'a str>,
    pub protocol: &'static str,
    pub status: Option<u16>,
    pub reason: Option<&'a str>,
    pub duration_ms: f64,
    pub route: Option<&'a str>,
    pub service: Option<&'a str>,
    pub endpoint: Option<String>,
    pub attempts: u32,
    pub peer_identity: Option<&'a str>,
    pub grpc_status: Option<u32>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub request_id: Option<&'a str>,
}

pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
    dropped: Counter,
}

impl AccessLog {
    /// Registers the log's metric; `on` starts the writer thread.
    pub fn register(reg: &mut Registry, on: bool) -> std::io::Result<AccessLog> {
        let dropped = Counter::default();
        reg.register(
            "skiff_access_log_dropped",
            "Access-log lines dropped because stdout did not keep up",
            dropped.clone(),
        );
        let tx = if on {
            let (tx, rx) = sync_channel(QUEUE);
            std::thread::Builder::new()
                .name("skiff-access-log".into())
                .spawn(move || write_lines(&rx))?;
            Some(tx)
        } else {
            None
        };
        Ok(AccessLog { tx, dropped })
    }

    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        if tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

fn write_lines(rx: &Receiver<Vec<u8>>) {
    let stdout = std::io::stdout();
    while let Ok(first) = rx.recv() {
        let mut out = stdout.lock();
        let mut line = first;
        loop {
            if out.write_all(&line).is_err() {
                return;
            }
            match rx.try_recv() {
                Ok(next) => line = next,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
}

/// `time` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-02T09:54:53.123Z`: the one
/// format the proxy writes times in (access log, `/config_dump`, `/certs`).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (the era-based conversion).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_204_093, 123), "2026-12-02T09:34:53.123Z");
        assert_eq!(at(1_796_179_502, 345), "2026-12-02T02:45:02.345Z");
    }

    #[test]
    fn entries_are_one_json_line() {
        let e = Entry {
            direction: "outbound",
            method: Some("GET"),
            status: Some(200),
            ..Entry::default()
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["trace_id"], serde_json::Value::Null);
    }
}
