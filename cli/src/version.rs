//! `version`: the client's version, then the server's from `/version`.

use std::io::Write;

use crate::error::Error;
use crate::{ClientOptions, config};

#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// Print only the client version, without contacting the server.
    #[arg(long)]
    pub client: bool,
}

/// `Client Version: v0.1.0`, the form kubectl prints.
pub fn client_line() -> String {
    format!("Client Version: v{}", env!("CARGO_PKG_VERSION"))
}

/// Prints the client line first, so it shows even when the server cannot be reached (the error
/// then follows on stderr).
pub async fn run(args: &VersionArgs, options: &ClientOptions, out: &mut impl Write) -> Result<(), Error> {
    writeln!(out, "{}", client_line())?;
    out.flush()?;
    if args.client {
        return Ok(());
    }
    let cluster = config::connect(options).await?;
    let info = cluster.client.apiserver_version().await.map_err(|e| Error::request(&e))?;
    writeln!(out, "Server Version: {}", info.git_version)?;
    Ok(())
}
