//! `doppel serve`: opens the store, starts the actors, the device side (built-in MQTT
//! endpoint or external-broker bridge) and the HTTP API, and on SIGTERM or Ctrl-C stops taking
//! messages, flushes every pending commit and exits 0.

use crate::config::{Devices, ServeConfig};
use actors::{
    Node,
    directory::Directory,
    hub::ChangeHub,
    mqtt::{
        Sessions,
        bridge::{self, Bridge, BrokerUrl, SwitchOutbox},
        endpoint,
    },
};
use anyhow::Context;
use std::sync::Arc;
use storage::Repos;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Runs a node until it is told to stop.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the tokio runtime starts")
    });
    system.block_on(serve(config))
}

/// Lines on stdout that scripts (and the tests) read: where the node listens, and when it is
/// ready.
fn announce(line: std::fmt::Arguments<'_>) {
    println!("doppel: {line}");
}

async fn serve(mut config: ServeConfig) -> anyhow::Result<()> {
    // Installed first, so that a SIGTERM during start-up also stops the node cleanly.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Every device connection is a descriptor: take what the system allows, and keep 2,048
    // of them for the store's files and the HTTP API.
    let descriptors = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1_024);
    if config.node.mqtt.max_connections == 0 {
        config.node.mqtt.max_connections = (descriptors.saturating_sub(2_048) as usize).max(1_024);
    }
    info!(
        descriptors,
        max_device_connections = config.node.mqtt.max_connections,
        "file descriptors"
    );
    // The store, the directory and the admin token are reached through blocking calls: off the
    // async threads (a database client runs its own runtime).
    let store_url = config.store.clone();
    let operator_ca = config.ca.clone();
    let chosen = std::env::var("DOPPEL_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let (directory, generated) = tokio::task::spawn_blocking(move || {
        let store = store_url
            .open()
            .with_context(|| format!("opening the store {store_url}"))?;
        let ca = match &operator_ca {
            Some((cert, key)) => Some(actors::pki::StoredCa {
                cert_pem: std::fs::read_to_string(cert)
                    .with_context(|| format!("reading the CA certificate {}", cert.display()))?,
                key_pem: std::fs::read_to_string(key)
                    .with_context(|| format!("reading the CA key {}", key.display()))?,
            }),
            None => None,
        };
        let directory = Arc::new(Directory::load_with_ca(store, Repos::default(), ca)?);
        // The bootstrap admin token: DOPPEL_ADMIN_TOKEN, else the one stored at the first
        // start, else (first start) a new one, printed this once.
        let generated = directory.bootstrap_admin(chosen.as_deref(), actors::now_ms())?;
        anyhow::Ok((directory, generated))
    })
    .await??;
    if let Some(token) = generated {
        announce(format_args!(
            "generated admin token {token} (shown once; `doppel admin rotate-key` replaces it, DOPPEL_ADMIN_TOKEN sets it)"
        ));
    }
    let hub = ChangeHub::new();
    let metrics = install_metrics()?;
    // HTTPS asks for a client certificate of the deployment's CA too, optionally: devices
    // present theirs to the device API, apps and browsers present none.
    let tls = match &config.tls {
        Some(tls) => Some(actors::tls::server_config_with(
            &tls.cert,
            &tls.key,
            Some(directory.pki().client_verifier(false)?),
        )?),
        None => None,
    };
    // The MQTT TLS listener also asks devices for certificates of the deployment's CA.
    let mqtt_tls = match &config.tls {
        Some(tls) => {
            let clients = match config.node.mqtt.tls_auth {
                actors::TlsAuth::Token => None,
                actors::TlsAuth::Either => Some(directory.pki().client_verifier(false)?),
                actors::TlsAuth::Certificate => Some(directory.pki().client_verifier(true)?),
            };
            Some(actors::tls::server_config_with(
                &tls.cert, &tls.key, clients,
            )?)
        }
        None => None,
    };
    let shutdown = CancellationToken::new();
    if config.node.mqtt.dev {
        warn!(
            "DEV MODE: unknown devices are registered on first connect without credentials; never use this in production"
        );
    }

    // A cluster node binds its peers' port first: its advertised address may be the bound one.
    let cluster = match &config.cluster {
        Some(settings) => {
            let listener = std::net::TcpListener::bind(settings.listen)
                .with_context(|| format!("binding the cluster port to {}", settings.listen))?;
            let cluster = settings.resolve(listener.local_addr()?);
            announce(format_args!(
                "cluster node {} listening on {} (advertised as {})",
                cluster.name,
                listener.local_addr()?,
                cluster.advertise
            ));
            Some((cluster, listener))
        }
        None => None,
    };
    let start = move |directory, node_config, outbox, hub| match cluster {
        Some((cluster, listener)) => {
            Node::start_in_cluster(directory, node_config, outbox, hub, cluster, listener)
        }
        None => Node::start(directory, node_config, outbox, hub),
    };
    let mut broker_subscribed = None;
    let (node, devices) = match config.devices {
        Devices::Endpoint(addr) => {
            let sessions = Sessions::new();
            let node = start(directory, config.node, sessions.clone(), hub);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the MQTT endpoint to {addr}"))?;
            announce(format_args!(
                "mqtt endpoint listening on {}",
                listener.local_addr()?
            ));
            if let (Some(tls), Some(tls_config)) = (&config.tls, &mqtt_tls) {
                let tls_listener = TcpListener::bind(tls.mqtt_listen)
                    .await
                    .with_context(|| format!("binding the MQTT TLS port to {}", tls.mqtt_listen))?;
                announce(format_args!(
                    "mqtt endpoint (tls) listening on {}",
                    tls_listener.local_addr()?
                ));
                tokio::spawn(endpoint::serve(
                    tls_listener,
                    node.clone(),
                    sessions.clone(),
                    Some(tls_config.clone()),
                    shutdown.clone(),
                ));
            }
            let task = tokio::spawn(endpoint::serve(
                listener,
                node.clone(),
                sessions,
                None,
                shutdown.clone(),
            ));
            (node, task)
        }
        Devices::Broker(url) if config.cluster.is_some() && !url.contains("share=") => {
            // One persistent session for the cluster, run by the owner of shard 0.
            let url = BrokerUrl::parse(&url).map_err(anyhow::Error::msg)?;
            let outbox = SwitchOutbox::default();
            let node = start(directory, config.node, Arc::new(outbox.clone()), hub);
            announce(format_args!(
                "bridging the broker at {}:{} from whichever node owns shard 0",
                url.host, url.port
            ));
            let task = tokio::spawn(bridge::follow_leader(
                url,
                node.config().mqtt.max_packet_size,
                node.clone(),
                outbox,
                shutdown.clone(),
            ));
            (node, task)
        }
        Devices::Broker(url) => {
            let url = BrokerUrl::parse(&url).map_err(anyhow::Error::msg)?;
            let (bridge, outbox, subscribed) =
                Bridge::new(url.clone(), config.node.mqtt.max_packet_size);
            let node = start(directory, config.node, Arc::new(outbox), hub);
            announce(format_args!(
                "bridging the broker at {}:{}",
                url.host, url.port
            ));
            let task = tokio::spawn(bridge.run(node.clone(), shutdown.clone()));
            broker_subscribed = Some(subscribed);
            (node, task)
        }
    };

    let state =
        api::AppState::new(node.clone(), Some(metrics), config.ws).with_cors(config.cors.clone());
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.http_listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http_addr = http.local_addr()?;
    announce(format_args!("{scheme} listening on {http_addr}"));
    let http_task = tokio::spawn(api::serve(
        http,
        api::router(state.clone()),
        tls,
        config.http,
        shutdown.clone().cancelled_owned(),
    ));
    let signal = wait_for_signal(&mut term);
    tokio::pin!(signal);
    if let Some(mut subscribed) = broker_subscribed {
        // Ready means devices are heard: in broker mode, once the subscriptions are acknowledged.
        tokio::select! {
            result = subscribed.wait_for(|s| *s) => { result?; }
            result = &mut signal => { result?; return stop(&state, &shutdown, devices, &node, http_task).await; }
        }
    }
    state.set_ready(true);
    info!(store = %config.store, http = %http_addr, "node ready");
    announce(format_args!("ready"));
    signal.await?;
    stop(&state, &shutdown, devices, &node, http_task).await
}

async fn stop(
    state: &api::AppState,
    shutdown: &CancellationToken,
    devices: tokio::task::JoinHandle<()>,
    node: &Node,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
) -> anyhow::Result<()> {
    info!("stopping: closing device connections, flushing commits");
    state.set_ready(false);
    shutdown.cancel();
    let flushed = tokio::time::timeout(STOP_TIMEOUT, async {
        let _ = devices.await;
        node.flush().await;
        // In a cluster: hand every shard over, so that peers take them at once.
        node.leave().await;
        let _ = http_task.await;
    })
    .await;
    if flushed.is_err() {
        // A store that does not answer must not keep the process alive: what was not
        // committed was not acknowledged either.
        error!(timeout = ?STOP_TIMEOUT, "commits did not complete in time; exiting without them");
        std::process::exit(1);
    }
    node.stop();
    info!("stopped");
    Ok(())
}

/// Longest a stop waits for device connections to close and commits to complete.
const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The Prometheus recorder that `/metrics` renders.
fn install_metrics() -> anyhow::Result<api::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let seconds = [
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let sizes = [1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0];
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("doppel_commit_seconds".into()), &seconds)?
        .set_buckets_for_metric(Matcher::Full("doppel_stage_seconds".into()), &seconds)?
        .set_buckets_for_metric(Matcher::Full("doppel_commit_twins".into()), &sizes)?
        .set_buckets_for_metric(Matcher::Full("doppel_commit_samples".into()), &sizes)?
        .install_recorder()?)
}

async fn wait_for_signal(term: &mut tokio::signal::unix::Signal) -> anyhow::Result<()> {
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        result = tokio::signal::ctrl_c() => { result?; info!("interrupted"); }
    }
    Ok(())
}
