//! Requests from one broker to another, in the Kafka protocol over TCP,
//! as Kafka's brokers send them: a transaction coordinator writes markers
//! into partitions other brokers lead (WriteTxnMarkers), a partition
//! leader checks with a transaction's coordinator that a batch belongs to
//! the transaction (AddPartitionsToTxn v4+), a group coordinator hands a
//! transaction's offsets to its coordinator (TxnOffsetCommit).
//!
//! Up to `CONNECTIONS_PER_PEER` connections per peer, one request at a
//! time on each (these requests are per transaction, not per record, and
//! a marker write waits for the peer's flush, so concurrent transactions
//! use several); a failed connection is dropped and its next request opens
//! a new one. Responses are bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::security::tls::TlsServer;

use crate::metadata::BrokerRecord;

/// A peer's response larger than this is refused (these are small).
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// A peer that does not answer in this long is given up on (the caller
/// answers its client with a retriable error).
const TIMEOUT: Duration = Duration::from_secs(15);

/// Requests to one peer in flight at once, at most.
const CONNECTIONS_PER_PEER: usize = 8;

/// A connection to a peer: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Connection = std::sync::Arc<tokio::sync::Mutex<Option<Box<dyn Stream>>>>;

/// A peer's connections, and a counter spreading waiting requests over
/// them when all are busy.
type Pool = (Vec<Connection>, usize);

pub struct Peers {
    client_id: String,
    /// Set when the inter-broker listener is SSL: peers are reached over
    /// TLS, trusting `tls.ca_file` and presenting this broker's certificate.
    tls: Option<std::sync::Arc<TlsServer>>,
    /// By peer (node id and address).
    connections: Mutex<HashMap<(i32, String), Pool>>,
    correlation: AtomicI32,
}

impl Peers {
    pub fn new(node_id: i32, tls: Option<std::sync::Arc<TlsServer>>) -> Self {
        Self {
            client_id: format!("strata-broker-{node_id}"),
            tls,
            connections: Mutex::default(),
            correlation: AtomicI32::new(0),
        }
    }

    /// Sends `request` at `version` to `peer` and reads its response.
    pub async fn call<R>(
        &self,
        peer: &BrokerRecord,
        version: i16,
        request: &R,
    ) -> anyhow::Result<R::Response>
    where
        R: Request + Encodable + HeaderVersion,
    {
        let addr = format!("{}:{}", peer.host, peer.port);
        let (free, busy) = {
            let mut connections = self
                .connections
                .lock()
                .map_err(|_| anyhow::anyhow!("peer connections poisoned"))?;
            let (pool, next) = connections.entry((peer.node_id, addr.clone())).or_default();
            let free = pool
                .iter()
                .find_map(|c| std::sync::Arc::clone(c).try_lock_owned().ok());
            match free {
                Some(guard) => (Some(guard), None),
                None if pool.len() < CONNECTIONS_PER_PEER => {
                    let connection = Connection::default();
                    pool.push(std::sync::Arc::clone(&connection));
                    (connection.try_lock_owned().ok(), None)
                }
                None => {
                    *next = next.wrapping_add(1);
                    (None, Some(std::sync::Arc::clone(&pool[*next % pool.len()])))
                }
            }
        };
        let mut connection = match (free, busy) {
            (Some(guard), _) => guard,
            (None, Some(busy)) => busy.lock_owned().await,
            (None, None) => anyhow::bail!("no connection to broker {}", peer.node_id),
        };
        let result = tokio::time::timeout(
            TIMEOUT,
            self.exchange(&mut connection, &peer.host, &addr, version, request),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in {TIMEOUT:?}")));
        if result.is_err() {
            *connection = None; // a new connection for the next request
        }
        result.with_context(|| format!("request to broker {} at {addr}", peer.node_id))
    }

    async fn exchange<R>(
        &self,
        connection: &mut Option<Box<dyn Stream>>,
        host: &str,
        addr: &str,
        version: i16,
        request: &R,
    ) -> anyhow::Result<R::Response>
    where
        R: Request + Encodable + HeaderVersion,
    {
        if connection.is_none() {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            *connection = Some(match &self.tls {
                None => Box::new(stream),
                Some(tls) => {
                    let connector = tls.connector().context(
                        "the inter-broker listener is SSL: set tls.ca_file to trust the other brokers' certificates",
                    )?;
                    let name = rustls::pki_types::ServerName::try_from(host.to_string())
                        .with_context(|| format!("'{host}' is not a TLS server name"))?;
                    Box::new(connector.connect(name, stream).await?)
                }
            });
        }
        let Some(stream) = connection.as_mut() else {
            anyhow::bail!("no connection");
        };
        let correlation_id = self.correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        header.encode(&mut frame, R::header_version(version))?;
        request.encode(&mut frame, version)?;
        let size = i32::try_from(frame.len() - 4)?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        stream.write_all(&frame).await?;
        let size = stream.read_i32().await?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE_BYTES)
            .with_context(|| format!("response size {size} out of bounds"))?;
        let mut body = BytesMut::zeroed(size);
        stream.read_exact(&mut body).await?;
        let mut body = body.freeze();
        let response_header =
            ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
        anyhow::ensure!(
            response_header.correlation_id == correlation_id,
            "correlation id {} answers request {correlation_id}",
            response_header.correlation_id
        );
        let response = R::Response::decode(&mut body, version)?;
        if body.has_remaining() {
            tracing::debug!(bytes = body.remaining(), "peer response had trailing bytes");
        }
        Ok(response)
    }
}
