//! `martix namespace create|list` (admin).

use super::{Conn, client};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum NamespaceCmd {
    /// Create a namespace (an admin token); an existing one is left as it is.
    Create { name: String },
    /// List the namespaces.
    List,
}

/// Runs one `martix namespace` command.
pub(crate) async fn namespace(conn: Conn, cmd: NamespaceCmd) -> Result<()> {
    let c = client(&conn).await?;
    match cmd {
        NamespaceCmd::Create { name } => {
            if c.create_namespace(&name).await? {
                println!("namespace '{name}' created");
            } else {
                println!("namespace '{name}' exists already");
            }
        }
        NamespaceCmd::List => {
            for n in c.list_namespaces().await? {
                println!("{n}");
            }
        }
    }
    Ok(())
}
