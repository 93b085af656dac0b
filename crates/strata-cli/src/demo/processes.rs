//! The landscape's processes: started from this binary, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::BoxError;

/// A child process and the address it serves on.
pub(crate) struct Process {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    /// The line that announced it (the gateway's also names its admin listener).
    announced: String,
    child: Child,
    args: Vec<String>,
    marker: String,
}

impl Process {
    /// Runs this binary with `args` and waits for the line `<marker> http://<addr>` on its
    /// stderr.
    pub(crate) fn start(name: &str, args: &[String], marker: &str) -> Result<Process, BoxError> {
        let (child, addr, announced) = spawn(name, args, marker)?;
        Ok(Process {
            name: name.to_owned(),
            addr,
            announced,
            child,
            args: args.to_vec(),
            marker: marker.to_owned(),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL its announcement gave after `label` (`admin on`, say), if any.
    pub(crate) fn url_after(&self, label: &str) -> Option<String> {
        let rest = self.announced.split(&format!("{label} http://")).nth(1)?;
        let addr = rest.split([' ', ')']).next()?;
        Some(format!("http://{addr}"))
    }

    /// Kills it outright (SIGKILL: a crash, no draining).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again, on the same address (the others know it there).
    pub(crate) fn restart(&mut self) -> Result<(), BoxError> {
        let mut args = self.args.clone();
        args.extend(["--listen".to_owned(), self.addr.to_string()]);
        let (child, ..) = spawn(&self.name, &args, &self.marker)?;
        self.child = child;
        Ok(())
    }
}

/// Runs this binary with `args` and waits for the line `<marker> http://<addr>` on its stderr;
/// the child, the address and the line.
fn spawn(
    name: &str,
    args: &[String],
    marker: &str,
) -> Result<(Child, SocketAddr, String), BoxError> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = format!("{marker} http://");
    let name_owned = name.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split(&marker).nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                sent = tx.send(Ok((addr, line.clone()))).is_ok();
            } else if !sent && line.starts_with("error") {
                let _ = tx.send(Err(line.clone()));
            }
            // After start-up, the child's warnings still reach the user.
            if sent && (line.contains("WARN") || line.starts_with("error")) {
                eprintln!("[{name_owned}] {line}");
            }
        }
    });
    let (addr, announced) = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok((addr, line))) => (addr.parse()?, line),
        Ok(Err(line)) => return Err(format!("{name} failed to start: {line}").into()),
        Err(_) => {
            let _ = child.kill();
            return Err(format!("{name} did not start within 60 s").into());
        }
    };
    Ok((child, addr, announced))
}

impl Drop for Process {
    /// SIGTERM (the process drains and flushes its counters), SIGKILL after 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
