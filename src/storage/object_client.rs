//! The HTTP client under the S3 store (`object`): reqwest's, through
//! object_store's connector, counting per operation the attempts that
//! failed transiently, i.e. what object_store's retry layer retries.

use std::sync::Arc;

use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};

use super::metrics::ObjectStoreMetrics;

/// The HTTP client under the S3 store: reqwest's, counting the attempts
/// that failed transiently (what object_store's retry layer retries) per
/// operation.
#[derive(Debug)]
pub(super) struct CountingConnector {
    pub(super) metrics: Arc<ObjectStoreMetrics>,
    /// CA certificates trusted besides the system's (`s3.ca_file`).
    pub(super) roots: Vec<object_store::Certificate>,
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut options = options.clone();
        for root in &self.roots {
            options = options.with_root_certificate(root.clone());
        }
        Ok(HttpClient::new(CountingClient {
            inner: ReqwestConnector::default().connect(&options)?,
            metrics: Arc::clone(&self.metrics),
        }))
    }
}

#[derive(Debug)]
struct CountingClient {
    inner: HttpClient,
    metrics: Arc<ObjectStoreMetrics>,
}

#[async_trait::async_trait]
impl HttpService for CountingClient {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let op = match request.method().as_str() {
            "PUT" => &self.metrics.put,
            "DELETE" | "POST" => &self.metrics.delete,
            _ if request
                .uri()
                .query()
                .is_some_and(|q| q.contains("list-type")) =>
            {
                &self.metrics.list
            }
            _ => &self.metrics.get,
        };
        let response = self.inner.execute(request).await;
        let transient = match &response {
            Ok(response) => {
                let status = response.status();
                status.is_server_error() || matches!(status.as_u16(), 408 | 429)
            }
            Err(_) => true,
        };
        if transient {
            op.record_retry();
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use object_store::path::Path;

    use super::super::object::{ObjectStorage, StorageErrorKind};
    use crate::config::S3Config;

    /// An S3 endpoint on this machine that answers each PUT with the next
    /// status of `statuses` (the last one from then on), counting requests.
    async fn flaky_s3(statuses: Vec<u16>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                tokio::spawn(async move {
                    // Read the head and the body it announces, then answer
                    // and close (one request per connection).
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(read) = socket.read(&mut buf).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..read]);
                        let text = String::from_utf8_lossy(&got).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if got.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let reason = if status == 200 {
                        "OK"
                    } else {
                        "Service Unavailable"
                    };
                    let body = if status == 200 {
                        ""
                    } else {
                        "<Error><Code>SlowDown</Code></Error>"
                    };
                    let answer = format!(
                        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\nconnection: close\r\netag: \"e\"\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn s3_at(endpoint: &str) -> ObjectStorage {
        ObjectStorage::open(
            "s3://bucket/prefix",
            &S3Config {
                endpoint: Some(endpoint.to_string()),
                region: Some("us-east-1".into()),
                access_key_id: Some("k".into()),
                secret_access_key: Some("s".into()),
                allow_http: Some(true),
                path_style: Some(true),
                ca_file: None,
            },
        )
        .expect("open")
    }

    #[tokio::test]
    async fn slow_down_answers_are_retried_and_denials_are_not() {
        // Two 503 SlowDown answers, then success: one call, three attempts.
        let (endpoint, seen) = flaky_s3(vec![503, 503, 200]).await;
        let store = s3_at(&endpoint);
        store
            .put(&Path::from("wal/a"), Bytes::from_static(b"data"))
            .await
            .expect("succeeds on the third attempt");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(store.metrics().put.retries(), 2);
        assert_eq!(store.metrics().put.requests(), 1);
        assert_eq!(store.metrics().put.errors(), 0);
        // A 403 is not retried, and says so.
        let (endpoint, seen) = flaky_s3(vec![403]).await;
        let store = s3_at(&endpoint);
        let denied = store
            .put(&Path::from("wal/b"), Bytes::from_static(b"data"))
            .await
            .expect_err("denied");
        assert_eq!(denied.kind, StorageErrorKind::Invalid);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
