//! Serving the routes over plain HTTP or HTTPS (rustls, TLS 1.3), until shutdown. Every
//! connection is bounded in time and number: a client has `header_timeout` to send a request's
//! head (an idle keep-alive connection included, so idle sockets are closed), a TLS handshake
//! must finish within the same time, and one source address holds at most
//! `max_connections_per_ip` connections (more are closed at once).

use crate::slots::Slots;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use std::{future::Future, net::IpAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

/// Bounds on the clients of the HTTP listener (the `[http]` table of the configuration file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeLimits {
    /// Time allowed for a request's head (and for the TLS handshake); an idle keep-alive
    /// connection is closed after it.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections one source address may hold at once.
    pub max_connections_per_ip: usize,
    /// Connections the HTTP listener holds at once, from every address.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections_per_ip: 64,
            max_connections: 1_024,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in progress
/// finish for up to five seconds (HTTP/1.1, as the router is built); with `tls`, every connection is HTTPS (WebSocket upgrades
/// included).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let service = TowerToHyperService::new(router.clone());
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    let per_ip = Slots::<IpAddr>::default();
    let all = Slots::<()>::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(overall) = all.take(&(), limits.max_connections) else {
            metrics::counter!("doppel_http_refused_total", "reason" => "connections").increment(1);
            debug!(%peer, "refused an HTTP connection: the listener holds its maximum");
            continue;
        };
        let Some(slot) = per_ip.take(&peer.ip(), limits.max_connections_per_ip) else {
            metrics::counter!("doppel_http_refused_total", "reason" => "connections_per_ip")
                .increment(1);
            debug!(%peer, "refused an HTTP connection: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, service, builder) = (acceptor.clone(), service.clone(), builder.clone());
        let router = router.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            let _slot = (slot, overall);
            let served = match acceptor {
                None => serve_one(&builder, stream, service, stopping).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            // A device's client certificate (verified by the handshake) goes
                            // with every request of the connection, for the device API.
                            let cert = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|c| actors::pki::certificate_id(c));
                            let service = match cert {
                                None => service,
                                Some(id) => TowerToHyperService::new(router.layer(
                                    axum::Extension(crate::device::DeviceCertificate(id.into())),
                                )),
                            };
                            serve_one(&builder, tls, service, stopping).await
                        }
                        Ok(Err(error)) => return debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => return debug!(%peer, "TLS handshake timed out"),
                    }
                }
            };
            if let Err(error) = served {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(Duration::from_secs(5), connections.wait())
        .await
        .is_err()
    {
        debug!("requests still in progress at shutdown were dropped");
    }
    Ok(())
}

/// Serves one connection (HTTP/1.1, upgrades allowed) until it ends; once `stopping`, it
/// finishes the request in progress and closes.
async fn serve_one<S>(
    builder: &http1::Builder,
    io: S,
    service: TowerToHyperService<Router>,
    stopping: CancellationToken,
) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        served = conn.as_mut() => return served,
        () = stopping.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    conn.await
}
