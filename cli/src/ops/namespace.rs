//! `martix namespace create|list|update` (admin).

use super::{Conn, client};
use anyhow::Result;
use clap::Subcommand;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum NamespaceCmd {
    /// Create a namespace (an admin token); an existing one is left as it is.
    Create {
        name: String,
        /// How long closed runs are kept, with their histories, before they are deleted
        /// (`7days`, `12h`, `90s`; 1 second to 10 years).
        #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
        retention: Duration,
    },
    /// List the namespaces and their retention.
    List,
    /// Change a namespace's settings.
    Update {
        name: String,
        /// How long closed runs are kept from now on (runs already past it go at the next pass).
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Duration,
    },
}

/// Runs one `martix namespace` command.
pub(crate) async fn namespace(conn: Conn, cmd: NamespaceCmd) -> Result<()> {
    let c = client(&conn).await?;
    match cmd {
        NamespaceCmd::Create { name, retention } => {
            if c.create_namespace_with_retention(&name, Some(retention))
                .await?
            {
                println!(
                    "namespace '{name}' created (retention {})",
                    humantime::format_duration(retention)
                );
            } else {
                println!("namespace '{name}' exists already (unchanged)");
            }
        }
        NamespaceCmd::List => {
            for n in c.namespaces().await? {
                println!(
                    "{}  retention {}",
                    n.name,
                    humantime::format_duration(n.retention)
                );
            }
        }
        NamespaceCmd::Update { name, retention } => {
            let n = c.set_retention(&name, retention).await?;
            println!(
                "namespace '{}': retention {}",
                n.name,
                humantime::format_duration(n.retention)
            );
        }
    }
    Ok(())
}
