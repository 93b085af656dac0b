//! A real PostgreSQL server for tests: its own cluster in a temporary directory, on a free
//! loopback port, trusting local connections, killed on drop.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A running PostgreSQL cluster (superuser `strata`, no password).
pub struct PostgresServer {
    child: Child,
    port: u16,
    bin: PathBuf,
    // Dropped after the server is killed (fields drop in order).
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Debian's layout: `/usr/lib/postgresql/<major>/bin`, newest first.
fn binaries() -> io::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("PostgreSQL is not installed (apt-get install postgresql): {e}"),
            )
        })?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| io::Error::other("no initdb under /usr/lib/postgresql/*/bin"))
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user (`setpriv`
/// executes in place, so the child is the server itself and killing it stops the server).
fn command(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    /// Starts a cluster; panics with the reason if it cannot.
    pub fn start() -> PostgresServer {
        PostgresServer::try_start().expect("start PostgreSQL")
    }

    /// Starts a cluster.
    pub fn try_start() -> io::Result<PostgresServer> {
        let bin = binaries()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        // The server's user must own its directory (and reach it).
        let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status();
        let initdb = command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "strata", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        if !initdb.status.success() {
            return Err(io::Error::other(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            )));
        }
        let port = free_port()?;
        let child = command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            // A test database: durability off, speed on.
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = PostgresServer {
            child,
            port,
            bin,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(server.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "strata",
                    "-q",
                ])
                .status()?;
            if ready.success() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "PostgreSQL did not accept connections within 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` (create it first with [`create_database`](Self::create_database)).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://strata@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database`.
    pub fn create_database(&self, database: &str) {
        self.psql(&format!("CREATE DATABASE \"{database}\""));
    }

    /// The names of its databases.
    pub fn databases(&self) -> Vec<String> {
        self.psql("SELECT datname FROM pg_database")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Runs `sql` with `psql` (as the superuser, in `postgres`); its unaligned output.
    fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "strata",
                "-d",
                "postgres",
                "-At",
                "-c",
            ])
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // A fast shutdown (SIGINT) releases shared memory; SIGKILL only if it hangs.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
