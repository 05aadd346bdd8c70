//! The `kube` executable: parses the command line and hands over to a role.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kube", version, about = "A whole Kubernetes cluster in one executable")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (and, unless --disable-agent, a local agent).
    Server(kube::server::ServerArgs),
    /// Run a node agent that joins a server by token (like `k3s agent`).
    Agent(kube::agent::args::AgentArgs),
    /// Manage bootstrap tokens agents can join with.
    Token(kube::server::token_cmd::TokenArgs),
    /// Check the cluster's certificates or rotate them (server stopped).
    Certificate(kube::server::certificate_cmd::CertificateArgs),
    /// Import image archives into the node's store and list its images.
    Image(kube::agent::image::cmd::ImageArgs),
    /// Internal: create and start one container (run by the agent).
    #[command(name = "container-start", hide = true)]
    ContainerStart(kube::agent::runtime_start::StartArgs),
    /// Internal: start one process in a running container (run by the agent).
    #[command(name = "container-exec", hide = true)]
    ContainerExec(kube::agent::exec::tenant::TenantArgs),
    /// Save, list, delete, prune and restore snapshots of the store (like `k3s etcd-snapshot`).
    Snapshot(kube::server::snapshot::cmd::SnapshotArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread exists: libcontainer clones this process.
    if let Command::ContainerStart(args) = &cli.command {
        return match kube::agent::runtime_start::run_helper(args) {
            Ok(pid) => {
                println!("{pid}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot start container {}: {err}", args.id);
                ExitCode::FAILURE
            }
        };
    }
    if let Command::ContainerExec(args) = &cli.command {
        return if kube::agent::exec::tenant::run_helper(args) { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=off,hickory_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kube: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => kube::server::run(args).await,
            Command::Agent(args) => kube::agent::remote::run(args).await,
            Command::Token(args) => kube::server::token_cmd::run(args).await,
            Command::Certificate(args) => kube::server::certificate_cmd::run(args).await,
            Command::Snapshot(args) => kube::server::snapshot::cmd::run(args).await,
            Command::Image(args) => kube::agent::image::cmd::run(args).await,
            Command::ContainerStart(_) | Command::ContainerExec(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kube: {err:#}");
            ExitCode::FAILURE
        }
    }
}
