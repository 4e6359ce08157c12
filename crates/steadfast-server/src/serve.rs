//! Accepting connections: plain HTTP/1.1 or TLS terminated here, with
//! bounds on how many connections are open and how long a client may take
//! to send a request, so slow or idle clients cannot exhaust the server.
//!
//! Each request carries the client's address as
//! `axum::extract::ConnectInfo<SocketAddr>`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use steadfast_protocol::tls::{TlsError, provider};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;
use tower_http::timeout::DeadlineBody;

/// Bounds on connections (documented in `docs/limits.md`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; further clients wait in the kernel's
    /// accept queue until one closes.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when
    /// the server starts waiting for them (idle keep-alive included), and to
    /// finish the TLS handshake.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body once its headers are in
    /// (`408 request_timeout`).
    pub body_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// How `serve` listens.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Terminate TLS with this configuration; plain HTTP when `None`.
    pub tls: Option<Arc<ServerConfig>>,
    pub limits: ConnectionLimits,
}

/// A TLS configuration from a PEM certificate chain (leaf first) and its
/// PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn tls_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let unreadable = |path: &Path, detail: String| TlsError::Certificates {
        path: path.display().to_string(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| unreadable(cert_file, error.to_string()))?;
    if chain.is_empty() {
        return Err(unreadable(cert_file, "no certificate in it".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| unreadable(key_file, error.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| {
            TlsError::Config(format!(
                "the certificate and the key do not make a TLS identity: {error}"
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and waits for open requests to finish (the caller bounds the
/// wait).
pub async fn serve(listener: TcpListener, app: Router, options: ServeOptions, shutdown: impl Future<Output = ()>) {
    let acceptor = options.tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(options.limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: past the cap, clients queue
        // in the kernel instead of holding memory here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small requests and answers: do not hold them back for coalescing.
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            client,
            limits: options.limits,
            watcher: graceful.watcher(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => connection.run(stream, Transport { tls: false }).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(connection.limits.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => connection.run(stream, Transport { tls: true }).await,
                        Ok(Err(error)) => tracing::debug!(%error, %client, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// How a request arrived, as a request extension: the dashboard marks its
/// cookies `Secure` when the connection is TLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transport {
    pub tls: bool,
}

/// One accepted connection, before its transport is known.
struct Connection {
    app: Router,
    client: SocketAddr,
    limits: ConnectionLimits,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S, transport: Transport) {
        let client = self.client;
        let body_timeout = self.limits.body_read_timeout;
        let service = self.app.map_request(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(client));
            request.extensions_mut().insert(transport);
            // A body not whole in time (stalled, or trickled) fails its read,
            // and the request with it.
            request.map(|body| axum::body::Body::new(DeadlineBody::new(body_timeout, body)))
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        if let Err(error) = self.watcher.watch(connection).await {
            tracing::debug!(%error, %client, "connection ended with an error");
        }
    }
}
