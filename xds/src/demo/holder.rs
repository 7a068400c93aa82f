//! Who holds a taken port, for the demo's "port taken" message: the listening TCP sockets of
//! `/proc/net/tcp{,6}` with that port, and the processes whose open files are those sockets.
//! Linux only; anywhere else, or without permission to look, nobody is named.

use std::fmt::Write as _;

/// A process listening on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command line, arguments space-separated (cut to 120 characters).
    pub command: String,
}

/// The socket inodes in a `/proc/net/tcp`-format table that listen on `port`.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let listening = *state == "0A";
            (listening && u16::from_str_radix(hex_port, 16).ok()? == port && inode != 0)
                .then_some(inode)
        })
        .collect()
}

/// The processes listening on `port`, as far as this process may see.
pub fn holders(port: u16) -> Vec<Holder> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if holds {
            let command = std::fs::read(entry.path().join("cmdline"))
                .map(|raw| command_line(&raw))
                .unwrap_or_default();
            found.push(Holder { pid, command });
        }
    }
    found
}

/// A `/proc/<pid>/cmdline` (NUL-separated) as one line for a message.
fn command_line(raw: &[u8]) -> String {
    let text: String = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let cut: String = text.chars().take(120).collect();
    if cut.len() < text.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// "127.0.0.1:P is held by pid N (`command`): stop it with `kill N`" for each taken port
/// whose holder can be found, joined with "; "; empty when none can.
pub fn explain(ports: &[u16]) -> String {
    let mut out = String::new();
    for &port in ports {
        for h in holders(port) {
            if !out.is_empty() {
                out.push_str("; ");
            }
            let _ = write!(
                out,
                "127.0.0.1:{port} is held by pid {} (`{}`): stop it with `kill {}`",
                h.pid, h.command, h.pid
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:3A99 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:3A99 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5353 1 0000000000000000 20 4 30 10 -1
   2: 00000000:3A98 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6464 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn finds_the_listening_socket_of_a_port_only() {
        // 0x3A99 = 15001: one listener and one established connection.
        assert_eq!(listening_inodes(TABLE, 15001), [4242]);
        assert_eq!(listening_inodes(TABLE, 15000), [6464]);
        assert!(listening_inodes(TABLE, 80).is_empty());
        assert!(listening_inodes("garbage\nmore garbage", 15001).is_empty());
    }

    #[test]
    fn names_this_process_for_a_port_it_holds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let me = std::process::id();
        let text = explain(&[port]);
        assert!(
            text.contains(&format!("is held by pid {me} "))
                && text.contains(&format!("`kill {me}`")),
            "{text}"
        );
        assert_eq!(command_line(b"skiff\0run\0--xds\0"), "skiff run --xds");
    }
}
