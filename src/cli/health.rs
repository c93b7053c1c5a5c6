//! `strata health`: asks a broker's HTTP endpoint whether it is up, for
//! container healthchecks (the image has no curl and its `/bin/sh` has no
//! `/dev/tcp`). Exits 0 when `/health` answers 200, non-zero otherwise
//! with the reason on stderr.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The broker's HTTP address; a wildcard host (0.0.0.0, [::]) means
    /// this machine
    #[arg(
        long,
        env = "STRATA_HTTP_ADDR",
        default_value = "127.0.0.1:9644",
        value_name = "HOST:PORT"
    )]
    pub http_addr: String,
    /// Give up after this many milliseconds
    #[arg(long, default_value_t = 2_000, value_name = "MS")]
    pub timeout_ms: u64,
}

/// Where to connect for a listener bound at `addr`.
fn dial_address(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => addr.to_string(),
    }
}

async fn probe(addr: &str) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The status line is all that is needed; the body is a few bytes.
    let mut answer = Vec::new();
    stream
        .take(4_096)
        .read_to_end(&mut answer)
        .await
        .with_context(|| format!("no answer from {addr}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{addr}/health answered '{status}'");
    }
    Ok(())
}

pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let addr = dial_address(&args.http_addr);
    match tokio::time::timeout(Duration::from_millis(args.timeout_ms), probe(&addr)).await {
        Ok(result) => result,
        Err(_) => bail!("{addr}/health did not answer within {} ms", args.timeout_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::dial_address;

    #[test]
    fn wildcard_hosts_are_dialled_on_this_machine() {
        assert_eq!(dial_address("0.0.0.0:9644"), "127.0.0.1:9644");
        assert_eq!(dial_address("[::]:9644"), "[::1]:9644");
        assert_eq!(dial_address("broker-1:9644"), "broker-1:9644");
    }
}
