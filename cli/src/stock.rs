//! `martix stock set|list`: the stock of the reference adapters, in their database (the
//! engine's), so an order placed by hand on `martix dev` can find its goods.

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum StockCmd {
    /// Set how many units of a SKU are available to new orders (what a stock count says;
    /// reserved and shipped units stay as they are).
    Set {
        sku: String,
        /// 0 to 1,000,000,000.
        available: i64,
        /// The database of the reference adapters (the engine's).
        #[arg(long, env = "MARTIX_DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// The stock of every SKU (or those starting with `--prefix`), at most 1,000.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        /// The database of the reference adapters (the engine's).
        #[arg(long, env = "MARTIX_DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

/// Runs one `martix stock` command.
pub(crate) async fn stock(cmd: StockCmd) -> Result<()> {
    match cmd {
        StockCmd::Set {
            sku,
            available,
            database_url,
        } => {
            let adapters = crate::catalog::connect(&database_url).await?;
            adapters.set_stock(&sku, available).await?;
            println!("{sku}: {available} available");
        }
        StockCmd::List {
            prefix,
            database_url,
        } => {
            let adapters = crate::catalog::connect(&database_url).await?;
            println!(
                "{:<28} {:>12} {:>12} {:>12}",
                "SKU", "AVAILABLE", "RESERVED", "SHIPPED"
            );
            for (sku, available, reserved, shipped) in adapters.stock_levels(&prefix).await? {
                println!("{sku:<28} {available:>12} {reserved:>12} {shipped:>12}");
            }
        }
    }
    Ok(())
}
