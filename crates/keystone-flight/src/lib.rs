//! # keystone-flight
//!
//! Arrow Flight SQL for BI and activation tools: every Keystone table, view
//! and segment, streamed as Arrow.
//!
//! ```text
//!  client ──gRPC (TLS optional)──▶ KeystoneFlight
//!                                   ├─ auth      Bearer key | Basic handshake → token
//!                                   ├─ policy    read-only SQL; tables by role
//!                                   ├─ Engine::served_context(masked?) ─▶ DataFusion plan
//!                                   │     └─ Engine::task_context(memory limit)
//!                                   │           ─▶ batches on the query's own threads (deadline)
//!                                   │           ─▶ FlightData (streamed)
//!                                   └─ ingest    DoPut(CommandStatementIngest) ─▶ keystone ingest
//! ```
//!
//! Implemented: the handshake, `GetSqlInfo`, `GetXdbcTypeInfo`,
//! `GetCatalogs`, `GetDbSchemas`, `GetTables` (with schemas),
//! `GetTableTypes`, statement queries, prepared statements (create, bind
//! parameters, query, close), `CloseSession`, bulk ingest into `events`, and
//! path descriptors (`["segments", NAME]`) for plain Flight clients.

pub mod auth;
pub mod config;
mod ingest;
pub mod policy;
pub mod service;
pub mod sql;

use std::future::Future;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use keystone_engine::Engine;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use config::FlightConfig;
pub use service::KeystoneFlight;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("flight: {0}")]
    Config(String),
    #[error(transparent)]
    Lake(#[from] keystone_lake::Error),
    #[error("flight: reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("flight: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// `Result` of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The gRPC server, with TLS when the config names a certificate: errors
/// (unreadable or invalid certificate) come before anything listens.
pub fn server(config: &FlightConfig) -> Result<Server> {
    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        // Several TLS backends are linked (object stores use their own):
        // name the one the Flight service uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| Error::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Config(format!("TLS certificate or key refused: {e}")))?;
    }
    Ok(builder)
}

/// Serve Flight SQL on `listener` until `shutdown` resolves.
pub async fn serve(
    service: KeystoneFlight,
    config: &FlightConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut builder = server(config)?;
    let svc = FlightServiceServer::new(service)
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(usize::MAX);
    builder
        .add_service(svc)
        // TCP_NODELAY: without it, Nagle's algorithm holds a response's last
        // small frame until the client's delayed ACK (~40 ms on Linux) —
        // measured: `SELECT 1` took 48 ms over loopback.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}

/// A service over `engine` (convenience for callers that hold the engine).
pub async fn service(engine: Arc<Engine>, config: FlightConfig) -> Result<KeystoneFlight> {
    KeystoneFlight::new(engine, config).await
}
