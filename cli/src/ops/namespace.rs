//! `martix namespace create|list` (admin).

use super::{Conn, workflow_client};
use anyhow::Result;
use clap::Subcommand;
use martix_proto::v1 as pb;

#[derive(Subcommand)]
pub(crate) enum NamespaceCmd {
    /// Create a namespace (an admin token); an existing one is left as it is.
    Create { name: String },
    /// List the namespaces.
    List,
}

/// Runs one `martix namespace` command.
pub(crate) async fn namespace(conn: Conn, cmd: NamespaceCmd) -> Result<()> {
    let mut c = workflow_client(&conn).await?;
    match cmd {
        NamespaceCmd::Create { name } => {
            let r = c
                .create_namespace(pb::CreateNamespaceRequest {
                    namespace: name.clone(),
                })
                .await?
                .into_inner();
            if r.created {
                println!("namespace '{name}' created");
            } else {
                println!("namespace '{name}' exists already");
            }
        }
        NamespaceCmd::List => {
            for n in c
                .list_namespaces(pb::ListNamespacesRequest {})
                .await?
                .into_inner()
                .namespaces
            {
                println!("{n}");
            }
        }
    }
    Ok(())
}
