//! `runlog serve`: MLflow's tracking REST API over the store, on HTTP (`docs/SERVER.md`).
//!
//! Invariants: the line saying where the server listens is printed (and flushed) only once the
//! port is bound and the signal handlers are installed, so whoever waits for it can connect and
//! signal at once; on a graceful shutdown the store is flushed and closed before exit 0.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use runlog::mlflow::Service;
use runlog::server::{Server, ServerOptions};
use runlog::{Store, StoreOptions};

use crate::{Context, Failure, Outcome, eprintln_quiet};

/// How often sealed log segments are compacted in the background.
const COMPACTION_INTERVAL: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on. Anything but loopback exposes the store to the network, and the
    /// server has no access control.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (the printed line says which).
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// What an acknowledged (200) write survives: `buffered` (a crash of the server),
    /// `sync` (power loss too: synced before the answer), or a sync interval in ms.
    #[arg(long, default_value = "1000")]
    durability: String,
    /// Largest artifact upload in MiB; larger ones get 413. Uploads stream to disk, so this
    /// bounds disk, not memory.
    #[arg(long = "body-limit-mib", default_value_t = 16 * 1024)]
    body_limit_mib: usize,
    /// Largest body of every other (JSON) request in MiB; larger ones get 413.
    #[arg(long = "json-body-limit-mib", default_value_t = 8)]
    json_body_limit_mib: usize,
    /// Least average rate of a request body in KiB/s, enforced after a 5 s grace period; a
    /// slower upload is answered 408 and its connection closed. 0 turns the floor off.
    #[arg(long = "min-upload-rate-kib", default_value_t = 64)]
    min_upload_rate_kib: u64,
    /// `Host` header values accepted besides loopback, private-network addresses and the bound
    /// address, comma-separated (`*` matches any run of characters; a lone `*` accepts any);
    /// needed when clients reach the server by a DNS name.
    #[arg(long, env = "MLFLOW_SERVER_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// Origins (`https://host:port`) whose browser pages may send state-changing requests,
    /// comma-separated, besides this machine's (`*` as in --allowed-hosts).
    #[arg(
        long,
        env = "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    cors_allowed_origins: Vec<String>,
}

pub fn run(args: Args, context: &mut Context) -> Outcome {
    let durability = crate::ingest::parse_durability(&args.durability)?;
    let address = resolve(&args.host, args.port)?;
    let store = Store::open_with(
        &context.store_dir,
        StoreOptions {
            durability,
            compaction_interval: Some(COMPACTION_INTERVAL),
            ..StoreOptions::default()
        },
    )?;
    let options = ServerOptions {
        body_bytes_max: args.body_limit_mib.saturating_mul(1 << 20),
        json_body_bytes_max: args.json_body_limit_mib.saturating_mul(1 << 20),
        body_rate_min_bytes_per_second: args.min_upload_rate_kib.saturating_mul(1 << 10),
        allowed_hosts: args.allowed_hosts,
        cors_allowed_origins: args.cors_allowed_origins,
        ..ServerOptions::default()
    };
    // A writable open builds the catalog at its first read: read it now, so a damaged store
    // stops the server before it listens rather than failing every request.
    store.refresh()?;
    let service = Service::new(Arc::new(store.clone()));
    let server = Server::bind(address, service, options).map_err(server_failure)?;
    let bound = server.local_address().map_err(server_failure)?;
    let store_dir = context.store_dir.display().to_string();
    let out = &mut context.out;
    let mut printed = Ok(());
    server
        .run_until_signal(|| {
            if !bound.ip().is_loopback() {
                eprintln_quiet(&format!(
                    "runlog serve: warning: listening on {bound}, which is not loopback: anyone \
                     who can reach it can read and change the store (there is no access control)"
                ));
            }
            printed = writeln!(
                out,
                "runlog serve: listening on http://{bound} (store {store_dir}, durability {})",
                args.durability
            )
            .and_then(|()| out.flush());
        })
        .map_err(server_failure)?;
    printed?;
    store.flush()?;
    store.close()?;
    Ok(())
}

/// The socket address of `host` (a name or an IP address) and `port`.
fn resolve(host: &str, port: u16) -> Outcome<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| Failure::Message(format!("--host {host:?}: {e}")))?
        .next()
        .ok_or_else(|| Failure::Message(format!("--host {host:?}: no address")))
}

fn server_failure(error: runlog::server::ServerError) -> Failure {
    Failure::Message(error.to_string())
}
