//! Accept loop and per-connection request pipeline.
//!
//! Each connection reads frames in order. A request's ordered part (decode,
//! validation, offset assignment for Produce) runs inline, so requests of one
//! connection take effect in the order sent; the rest (waiting for the group
//! commit, long-polling a Fetch) runs as its own task. Responses are written
//! strictly in request order, at most `max_inflight_per_connection` pending.
//! A malformed frame closes the connection; other connections are untouched.
//!
//! Shutdown drains: on `shutdown` every connection stops reading new
//! requests (its reader task ends, tracked by `Broker::readers`), while the
//! responses already due, Produce acks included, are still written (by its
//! writer task, tracked by `Broker::responders`). `RunningBroker::shutdown`
//! waits for the readers before the write buffer's final flush, and for the
//! writers after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatched, dispatch};
use super::security::principal::ANONYMOUS;
use super::security::sasl::{Authenticator, PRE_AUTH_MAX_FRAME_BYTES, Step};
use super::{Broker, Listener};
use crate::config::SecurityProtocol;
use crate::protocol::frame::{check_frame_size, decode_request_header};

/// A response on its way to the writer, in request order.
struct Pending {
    /// The response, with the response memory it holds until written.
    response: JoinHandle<Result<(Bytes, Option<super::memory::ResponseMemory>), String>>,
    api: ApiKey,
    /// When the request's frame had been read in full.
    received: Instant,
}

/// Who is on a connection, and which listener it came through.
#[derive(Debug, Clone)]
pub struct Session {
    pub peer: std::net::SocketAddr,
    pub listener: Arc<Listener>,
    /// `User:NAME` (Kafka's form); `User:ANONYMOUS` when unauthenticated.
    pub principal: Arc<str>,
    /// This connection's share of the response budget (memory.rs).
    pub responses: Arc<tokio::sync::Semaphore>,
    /// Set when a quota throttles the client: no request is read until it
    /// has passed (quotas.rs).
    pub mute: Arc<super::quotas::Mute>,
}

/// Longest time a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Longest time between a frame's size prefix and its last byte.
const FRAME_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn accept_loop(
    broker: Arc<Broker>,
    socket: TcpListener,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // As Kafka: the inter-broker listener is exempt from
                // max_connections only when clients have listeners of
                // their own.
                let inter_broker =
                    listener.name == broker.inter_broker_listener && broker.listeners.len() > 1;
                let slot = match broker.connections.admit(peer.ip(), inter_broker) {
                    Ok(slot) => slot,
                    Err(refusal) => {
                        // Closed before anything is read (as Kafka does).
                        tracing::debug!(%peer, ?refusal, "connection refused: past its bound");
                        drop(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let readers = broker.readers.clone();
                let broker = Arc::clone(&broker);
                let shutdown = shutdown.clone();
                let listener = Arc::clone(&listener);
                readers.spawn(async move {
                    let result = match listener.protocol {
                        SecurityProtocol::Plaintext | SecurityProtocol::SaslPlaintext => {
                            let session = Session {
                                peer,
                                listener,
                                principal: Arc::from(ANONYMOUS),
                                responses: broker.memory.connection_share(),
                                mute: Arc::default(),
                            };
                            let (read_half, write_half) = stream.into_split();
                            serve(broker, read_half, write_half, session, shutdown).await
                        }
                        _ => serve_tls(broker, stream, peer, listener, shutdown).await,
                    };
                    if let Err(reason) = result {
                        tracing::debug!(%peer, %reason, "connection closed");
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A connection to an SSL listener: the TLS handshake (bounded), the
/// principal from the client's certificate, then requests as on any.
async fn serve_tls(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    listener: Arc<Listener>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let Some(tls) = broker.tls.clone() else {
        return Err(format!(
            "listener {} has no TLS configuration",
            listener.name
        ));
    };
    let handshake = tokio::select! {
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)) => done,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            broker.requests.authentication_failed();
            return Err(format!("TLS handshake failed: {error}"));
        }
        Err(_) => {
            broker.requests.authentication_failed();
            return Err(format!(
                "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"
            ));
        }
    };
    let principal = match tls.principal(stream.get_ref().1.peer_certificates()) {
        Ok(principal) => principal,
        Err(reason) => {
            broker.requests.authentication_failed();
            tracing::info!(%peer, %reason, "client certificate refused");
            return Err(reason);
        }
    };
    let session = Session {
        peer,
        listener,
        principal: Arc::from(principal),
        responses: broker.memory.connection_share(),
        mute: Arc::default(),
    };
    tracing::debug!(%peer, principal = %session.principal, listener = %session.listener.name, "TLS connection authenticated");
    let (read_half, write_half) = tokio::io::split(stream);
    serve(broker, read_half, write_half, session, shutdown).await
}

async fn serve<R, W>(
    broker: Arc<Broker>,
    read_half: R,
    mut write_half: W,
    mut session: Session,
    shutdown: CancellationToken,
) -> Result<(), String>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let mut reader = BufReader::with_capacity(8 * 1024, read_half);
    // SASL listeners: the exchange comes first (see security::sasl).
    let mut sasl = matches!(
        session.listener.protocol,
        SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
    )
    .then(|| Authenticator::new(Arc::clone(&broker.sasl_mechanisms)));
    let mut failed_authentication = None;
    let (tx, mut rx) = mpsc::channel::<Pending>(broker.config.kafka.max_inflight_per_connection);
    // Requests whose responses are not written yet: a connection waiting for
    // them is not idle.
    let unanswered = Arc::new(AtomicUsize::new(0));
    let idle_after = Duration::from_millis(broker.config.kafka.connections_max_idle_ms);
    let write_timeout = Duration::from_millis(broker.config.kafka.connection_write_timeout_ms);
    let metrics_broker = Arc::clone(&broker);
    let answered = Arc::clone(&unanswered);
    let writer = broker.responders.spawn(async move {
        while let Some(pending) = rx.recv().await {
            let written = match pending.response.await {
                Ok(Ok((response, _memory))) => {
                    match tokio::time::timeout(write_timeout, write_half.write_all(&response)).await
                    {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(error)) => Err(format!("write failed: {error}")),
                        Err(_) => Err(format!(
                            "a response of {} bytes not taken by the client within {write_timeout:?}",
                            response.len()
                        )),
                    }
                }
                Ok(Err(reason)) => Err(reason),
                Err(error) => Err(format!("request task failed: {error}")),
            };
            answered.fetch_sub(1, Ordering::AcqRel);
            match written {
                Ok(()) => {
                    metrics_broker
                        .requests
                        .record(pending.api, pending.received.elapsed());
                }
                Err(reason) => return Err(reason),
            }
        }
        Ok(())
    });
    let result = loop {
        // A throttled client's next request waits (Kafka's muting).
        tokio::select! {
            _ = session.mute.wait() => {}
            _ = shutdown.cancelled() => break Ok(()),
        }
        // Wait for the next request's first byte (fill_buf keeps what it
        // read if the wait is given up), closing the connection once it
        // has been idle for connections_max_idle_ms with nothing pending.
        let arrived = loop {
            tokio::select! {
                filled = reader.fill_buf() => break filled.map(|bytes| !bytes.is_empty()),
                _ = tokio::time::sleep(idle_after) => {
                    if unanswered.load(Ordering::Acquire) == 0 {
                        broker.connections.idle_closed();
                        break Ok(false);
                    }
                }
                _ = shutdown.cancelled() => break Ok(false),
            }
        };
        match arrived {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(format!("read failed: {e}")),
        }
        let size = tokio::select! {
            size = tokio::time::timeout(FRAME_READ_TIMEOUT, reader.read_i32()) => match size {
                Ok(size) => size,
                Err(_) => break Err(format!("frame size not received within {FRAME_READ_TIMEOUT:?}")),
            },
            _ = shutdown.cancelled() => break Ok(()),
        };
        let size = match size {
            Ok(size) => size,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(format!("read failed: {e}")),
        };
        let authenticating = sasl.as_ref().is_some_and(|a| !a.is_done());
        let max_frame = if authenticating {
            PRE_AUTH_MAX_FRAME_BYTES
        } else {
            broker.config.kafka.max_frame_bytes
        };
        let size = match check_frame_size(size, max_frame) {
            Ok(size) => size,
            Err(e) => break Err(e.to_string()),
        };
        // Counted in the request budget as its bytes arrive (memory.rs).
        let read = super::memory::read_frame(&broker.memory, &mut reader, size, FRAME_READ_TIMEOUT);
        let (frame, _memory) = tokio::select! {
            read = read => match read {
                Ok(read) => read,
                Err(reason) => break Err(reason),
            },
            _ = shutdown.cancelled() => break Ok(()),
        };
        let received = Instant::now();
        let request = match decode_request_header(frame) {
            Ok(request) => request,
            Err(e) => break Err(e.to_string()),
        };
        let api = request.api_key;
        if let Some(auth) = sasl.as_mut().filter(|a| !a.is_done())
            && api != ApiKey::ApiVersions
        {
            let (bytes, close) = match Box::pin(auth.handle(&broker, request)).await {
                Step::Answer(bytes) => (bytes, None),
                Step::Authenticated(bytes, principal) => {
                    tracing::debug!(peer = %session.peer, %principal, listener = %session.listener.name, "SASL authenticated");
                    session.principal = Arc::from(principal);
                    (bytes, None)
                }
                Step::Failed(bytes, reason) => (bytes, Some(reason)),
                Step::Close(reason) => {
                    broker.requests.authentication_failed();
                    break Err(reason);
                }
            };
            let pending = Pending {
                response: tokio::spawn(async move { Ok((bytes, None)) }),
                api,
                received,
            };
            unanswered.fetch_add(1, Ordering::AcqRel);
            if tx.send(pending).await.is_err() {
                break Err("writer stopped".into());
            }
            if let Some(reason) = close {
                // The answer goes out, then the connection closes.
                broker.requests.authentication_failed();
                failed_authentication = Some(reason);
                break Ok(());
            }
            continue;
        }
        // request_percentage: the time this request takes here.
        let quota_client = broker.quotas.active().then(|| {
            request
                .header
                .client_id
                .as_deref()
                .unwrap_or("")
                .to_string()
        });
        let dispatched = Box::pin(dispatch(&broker, request, &session)).await;
        if let Some(client) = quota_client {
            let percent_seconds = received.elapsed().as_secs_f64() * 100.0;
            let throttle = broker.quotas.record(
                super::quotas::QuotaType::Request,
                super::quotas::user_of(&session.principal),
                &client,
                percent_seconds,
            );
            session.mute.for_ms(throttle);
        }
        let response =
            match dispatched {
                Ok(Dispatched::Response(bytes)) => tokio::spawn(async move { Ok((bytes, None)) }),
                Ok(Dispatched::Deferred(future)) => {
                    tokio::spawn(async move { future.await.map(|bytes| (bytes, None)) })
                }
                Ok(Dispatched::Held(future)) => tokio::spawn(async move {
                    future.await.map(|(bytes, memory)| (bytes, Some(memory)))
                }),
                Ok(Dispatched::NoResponse) => {
                    broker.requests.record(api, received.elapsed());
                    continue;
                }
                Err(reason) => break Err(reason),
            };
        let pending = Pending {
            response,
            api,
            received,
        };
        unanswered.fetch_add(1, Ordering::AcqRel);
        if tx.send(pending).await.is_err() {
            break Err("writer stopped".into());
        }
    };
    drop(tx);
    let result = match failed_authentication {
        Some(reason) => Err(format!("authentication failed: {reason}")),
        None => result,
    };
    if shutdown.is_cancelled() {
        // Shutting down: the writer task goes on writing the responses due
        // (they may wait for the final flush, which waits for this reader).
        return result;
    }
    // Let responses already due reach the client before closing.
    match writer.await {
        Ok(Err(e)) if result.is_ok() => Err(e),
        _ => result,
    }
}
