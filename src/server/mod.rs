//! The API server: HTTPS, authentication, authorization, admission and the
//! Kubernetes REST API over the store.

pub mod authn;
pub mod authz;
pub mod bootstrap;
pub mod catalog;
pub mod certificate_cmd;
pub mod client;
pub mod component_status;
pub mod config;
pub mod conversion;
pub mod discovery;
pub mod error;
pub mod ha;
pub mod health;
pub mod impersonation;
pub mod join;
pub mod kinds;
pub mod kubeconfig;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod quota;
pub mod registry;
pub mod request_info;
pub mod resource_metrics;
pub mod rest;
pub mod reviews;
pub mod router;
pub mod selectors;
pub mod snapshot;
pub mod state;
pub mod table;
pub mod token;
pub mod token_bootstrap;
pub mod token_cmd;

pub use config::{ServerArgs, ServerConfig};

use anyhow::Context;
use pki::{Authority, Usage};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The names the serving certificate must carry.
fn serving_names(config: &ServerConfig) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
    {
        names.push(host.to_lowercase());
    }
    names.push(config.advertise_address.to_string());
    names.push(config.kubernetes_service_ip().to_string());
    for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
        names.push(name.to_string());
    }
    names.push(format!("kubernetes.default.svc.{}", config.cluster_domain));
    names.extend(config.tls_sans.iter().cloned());
    let mut unique = Vec::new();
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs `kube server` until a shutdown signal.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = ServerConfig::from_args(&args)?;
    if let (true, config::ClusterMode::Join { url, .. }) = (args.remove, &config.cluster) {
        return ha::removal::leave(&config, url, config.token.as_deref().unwrap_or_default()).await;
    }
    let tls_dir = config.data_dir.join("tls");
    std::fs::create_dir_all(&tls_dir).with_context(|| format!("cannot create {}", tls_dir.display()))?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
            shutdown_signal().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        }
    });
    let join_token = match &config.cluster {
        config::ClusterMode::Join { url, .. } => {
            let token = token::JoinToken::parse(config.token.as_deref().unwrap_or_default())?;
            if !ha::joiner::fetch_shared_keys(url, &token, &tls_dir, &shutdown).await? {
                return Ok(());
            }
            Some((url.clone(), token))
        }
        _ => None,
    };
    let ca = Authority::load_or_create(&tls_dir)?;
    let names = serving_names(&config);
    let serving = ca.load_or_issue(&tls_dir, "serving", "kube-apiserver", Usage::Server { names: &names }, |pem| {
        let have = pki::subject_alt_names(pem);
        names.iter().all(|n| have.contains(n))
    })?;
    let admin = ca.load_or_issue(
        &tls_dir,
        "client-admin",
        "system:admin",
        Usage::Client { user: "system:admin", groups: &["system:masters"] },
        |_| true,
    )?;
    let token = token::ServerToken::load_or_create(&config.data_dir, &ca.cert_pem, config.token.as_deref())?;
    tracing::info!(path = %token::token_path(&config.data_dir).display(), "wrote the join token");
    let url = format!("https://127.0.0.1:{}", config.listen.port());
    kubeconfig::write(&config.kubeconfig_path, &url, &ca.cert_pem, &admin, config.kubeconfig_mode)?;
    tracing::info!(kubeconfig = %config.kubeconfig_path.display(), "wrote admin kubeconfig");

    tracing::info!(dir = %config.data_dir.display(), "opening the store");
    let mut store_config = crate::store::StoreConfig::new(config.data_dir.join("db"));
    store_config.history_window = config.history_window;
    let peering = ha::peering(&config, &tls_dir)?;
    let peer_address = peering.as_ref().map(|p| p.peer.advertise_addr.clone());
    if let Some(p) = peering {
        tracing::info!(id = p.node_id, listen = %p.peer.listen_addr, "the store replicates with other servers");
        store_config.node_id = p.node_id;
        store_config.peer = Some(p.peer);
    }
    let store = crate::store::Store::open(store_config).await.context("cannot open the store")?;
    if let (Some((url, token)), Some(peer_address)) = (&join_token, peer_address)
        && !store.voters().contains(&store.id())
    {
        let request = ha::handoff::MemberRequest { id: store.id(), peer_address, name: config.node_name.clone() };
        if !ha::joiner::request_membership(url, &ca.cert_pem, token, &request, &shutdown).await? {
            return Ok(());
        }
    }
    store.ready().await.context("the store did not catch up with its group")?;
    let state = state::ApiState::new(registry::Registry::new(store), catalog::Catalog::builtin(), config.clone());
    bootstrap::run(&state).await.map_err(|err| anyhow::anyhow!("bootstrap failed: {}", err.message))?;
    state.bootstrapped.store(true, std::sync::atomic::Ordering::Release);

    let tls = listener::tls_config(&listener::TlsMaterial {
        ca_pem: &ca.cert_pem,
        cert_pem: &serving.cert_pem,
        key_pem: &serving.key_pem,
    })?;
    let signer = std::sync::Arc::new(authn::serviceaccount::TokenSigner::load_or_create(&tls_dir)?);
    let router = router::router(state.clone())
        .layer(axum::Extension(signer.clone()))
        .layer(axum::Extension(crate::agent::AgentConfig::for_server(&config).logs()))
        .layer(axum::Extension(crate::agent::AgentConfig::for_server(&config).streams()));
    let join_client = client::Client::new(router.clone(), authn::UserInfo::system_masters("system:kube-join"));
    let handoff = ha::handoff::Handoff { token_secret: token.secret.clone(), tls_dir: tls_dir.clone() };
    let join = join::JoinService::new(&tls_dir, token, join_client)?;
    let router =
        router.layer(axum::Extension(std::sync::Arc::new(join))).layer(axum::Extension(std::sync::Arc::new(handoff)));
    let controllers = crate::controllers::start(
        crate::controllers::Context {
            client: client::Client::new(
                router.clone(),
                authn::UserInfo::system_masters("system:kube-controller-manager"),
            ),
            catalog: state.catalog.clone(),
            ca_pem: ca.cert_pem.clone(),
            cluster_cidr: config.cluster_cidr,
        },
        shutdown.clone(),
    );
    let peers = !matches!(config.cluster, config::ClusterMode::Single);
    if peers {
        tokio::spawn(ha::removal::follow_node_deletions(state.registry.store().clone(), shutdown.clone()));
    }
    let endpoints = tokio::spawn(ha::endpoints::run(
        client::Client::new(router.clone(), authn::UserInfo::system_masters("system:apiserver")),
        ha::endpoints::ApiServer {
            node: config.node_name.clone(),
            address: config.advertise_address,
            port: config.listen.port(),
            store: peers.then(|| state.registry.store().clone()),
        },
        shutdown.clone(),
    ));
    let snapshots = config
        .snapshots
        .map(|schedule| tokio::spawn(snapshot::schedule::run(state.clone(), schedule, shutdown.clone())));
    let agent = config.run_agent.then(|| crate::agent::spawn_local(router.clone(), &config, shutdown.clone()));
    let tcp = listener::bind(config.listen).await?;
    tracing::info!(addr = %config.listen, "API server listening");
    let serving_task = tokio::spawn(listener::serve(tcp, tls, router, shutdown.clone(), Duration::from_secs(5)));
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    let _ = serving_task.await;
    let _ = endpoints.await;
    if let Some(snapshots) = snapshots {
        let _ = snapshots.await;
    }
    controllers.join_all().await;
    if let Some(agent) = agent {
        let _ = agent.await;
    }
    if let Err(err) = state.registry.store().shutdown().await {
        tracing::warn!(error = %err, "store shutdown failed");
    }
    Ok(())
}
