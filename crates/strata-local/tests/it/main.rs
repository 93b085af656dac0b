//! A real `redis-server`: started, faulted, stopped; and the errors a user meets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use strata_local::{Error, LocalRedis};

/// Sends one inline command and returns the reply's first line.
fn ask(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned())
}

#[test]
fn starts_answers_restarts_empty_and_stops_on_drop() {
    let mut redis = LocalRedis::start().unwrap();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(ask(port, "SET k v").unwrap(), "+OK");
    assert_eq!(
        ask(port, "CONFIG GET save").unwrap(),
        "*2",
        "persistence is configured"
    );
    assert!(
        redis.log_path().exists(),
        "the log is captured in the server's directory"
    );

    redis.kill();
    assert!(ask(port, "PING").is_err(), "killed: nothing listens");
    redis.restart().unwrap();
    assert_eq!(redis.port(), port, "restarted on the same port");
    assert_eq!(ask(port, "GET k").unwrap(), "$-1", "empty after a restart");

    redis.freeze().unwrap();
    let mut frozen = TcpStream::connect(("127.0.0.1", port)).unwrap();
    frozen
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    frozen.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 16];
    assert!(
        frozen.read(&mut buf).is_err(),
        "a frozen server answers nothing"
    );
    redis.thaw().unwrap();
    frozen
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let n = frozen.read(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"+PONG\r\n",
        "thawed, it answers what was sent meanwhile"
    );

    let dir = redis.dir().to_owned();
    drop(redis);
    assert!(ask(port, "PING").is_err(), "stopped on drop");
    assert!(!dir.exists(), "its directory is removed");
}

#[test]
fn a_missing_binary_is_named_with_the_fix() {
    let err = LocalRedis::builder()
        .program("/nonexistent/redis-server")
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains("apt-get install redis-server"),
        "{err}"
    );
}

#[test]
fn a_taken_port_is_said_so() {
    let first = LocalRedis::start().unwrap();
    let err = LocalRedis::builder()
        .port(first.port())
        .start()
        .unwrap_err();
    assert!(
        matches!(err, Error::PortTaken { port } if port == first.port()),
        "{err:?}"
    );
}

#[test]
fn a_server_that_exits_quotes_its_log() {
    let err = LocalRedis::builder()
        .args(["--maxmemory-policy", "no-such-policy"])
        .start()
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Exited { .. }), "{err:?}");
    assert!(text.contains("exited while starting"), "{text}");
}
