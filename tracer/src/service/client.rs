//! The client side of the local API: `tracer state`, `tracer events`, and
//! what `tracer top` reads.

use std::{
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Sends `GET target` and returns the body's reader once the status is 200.
pub fn get(socket: &Path, target: &str) -> Result<BufReader<UnixStream>> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("connecting to {} (is `tracer run --api` running, and are you root?)", socket.display())
    })?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {target} HTTP/1.1\r\nHost: tracer\r\nConnection: close\r\n\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).context("reading the API's answer")?;
    let code = status.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim_end() != "" {
        header.clear();
    }
    if code != "200" {
        let mut body = String::new();
        let _ = reader.take(4096).read_to_string(&mut body);
        bail!("the API answered {}: {}", status.trim(), body.trim());
    }
    Ok(reader)
}

/// The host's current state (`/v1/state`).
pub fn state(socket: &Path) -> Result<Value> {
    let mut body = Vec::new();
    get(socket, "/v1/state")?.read_to_end(&mut body)?;
    serde_json::from_slice(&body).context("the API's state is not JSON")
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `tracer events`: copies the record stream to stdout, line by line.
pub fn events(socket: &Path, kinds: &[String], format: &str, follow: bool) -> Result<()> {
    let mut target = format!("/v1/events?format={}", query_escape(format));
    if !kinds.is_empty() {
        target.push_str(&format!("&kinds={}", query_escape(&kinds.join(","))));
    }
    if follow {
        target.push_str("&follow=1");
    }
    let reader = get(socket, &target)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in reader.split(b'\n') {
        let line = line.context("reading the record stream")?;
        out.write_all(&line)?;
        out.write_all(b"\n")?;
        // Followed, each record shows as it comes; a pipe that closed ends it.
        out.flush()?;
    }
    Ok(())
}

/// `tracer state`: the state, pretty JSON.
pub fn print_state(socket: &Path) -> Result<()> {
    let state = state(socket)?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_escaped() {
        assert_eq!(query_escape("network.*,classification"), "network.%2A,classification");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }
}
