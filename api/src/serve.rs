//! Serving the routes over plain HTTP or HTTPS (rustls, TLS 1.3), until shutdown.

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use std::{
    future::{Future, IntoFuture},
    sync::Arc,
};
use tokio::net::TcpListener;
use tracing::debug;

/// Serves `router` on `listener` until `shutdown` completes; with `tls`, every connection is
/// HTTPS (WebSocket upgrades included).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .into_future()
            .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let (acceptor, service) = (acceptor.clone(), service.clone());
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => {
                            let served = Builder::new(TokioExecutor::new())
                                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                .await;
                            if let Err(error) = served {
                                debug!(%peer, %error, "HTTPS connection ended with an error");
                            }
                        }
                        Err(error) => debug!(%peer, %error, "TLS handshake failed"),
                    }
                });
            }
            () = &mut shutdown => return Ok(()),
        }
    }
}
