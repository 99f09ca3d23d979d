//! `martix catalog import|list`: the catalogue of the reference adapters, in their database
//! (the engine's). An import reads the whole file first and writes nothing if any line is
//! bad; then every line is added or replaces its SKU's price, in one transaction.

use anyhow::{Context, Result};
use clap::Subcommand;
use martix_activities::{ReferenceAdapters, parse_csv};
use martix_order_contract::pricing::money;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum CatalogCmd {
    /// Add or replace the prices of a CSV file's SKUs (header `sku,price,currency,tax_class`,
    /// price in units like 15.00); a bad line refuses the whole file.
    Import {
        file: PathBuf,
        /// The database of the reference adapters (the engine's).
        #[arg(long, env = "MARTIX_DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
    /// Every SKU's price.
    List {
        /// The database of the reference adapters (the engine's).
        #[arg(long, env = "MARTIX_DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

/// The reference adapters on the database `url` names.
pub(crate) async fn connect(url: &str) -> Result<ReferenceAdapters> {
    ReferenceAdapters::connect(url)
        .await
        .with_context(|| format!("cannot open the database {}", crate::redact(url)))
}

/// Runs one `martix catalog` command.
pub(crate) async fn catalog(cmd: CatalogCmd) -> Result<()> {
    match cmd {
        CatalogCmd::Import { file, database_url } => {
            let shown = file.display();
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {shown}"))?;
            let entries =
                parse_csv(&text).map_err(|e| anyhow::anyhow!("{shown}: {e}; nothing imported"))?;
            let adapters = connect(&database_url).await?;
            adapters.import_catalog(&entries).await?;
            println!("{} prices imported from {shown}", entries.len());
        }
        CatalogCmd::List { database_url } => {
            let adapters = connect(&database_url).await?;
            println!("{:<28} {:>16}  tax class", "SKU", "PRICE");
            for e in adapters.catalog().await? {
                println!(
                    "{:<28} {:>16}  {}",
                    e.sku,
                    money(e.price_cents, &e.currency),
                    e.tax_class
                );
            }
        }
    }
    Ok(())
}

/// What `martix dev` puts in a new database: a few SKUs to place orders with by hand.
const STARTER: &str = "sku,price,currency,tax_class
mug,15.00,EUR,standard
t-shirt,25.00,EUR,standard
notebook,8.50,EUR,reduced
poster,12.00,EUR,standard
";

/// Units of each starter SKU.
const STARTER_UNITS: i64 = 100;

/// Seeds the starter catalogue and its stock into a database that has neither (a new one), so
/// that an order placed by hand on `martix dev` succeeds; returns the line to print, or `None`
/// when the database already had a catalogue or stock.
pub(crate) async fn seed_starter(adapters: &ReferenceAdapters) -> Result<Option<String>> {
    if !adapters.catalog().await?.is_empty() || !adapters.stock_levels("").await?.is_empty() {
        return Ok(None);
    }
    let entries = parse_csv(STARTER).expect("the starter catalogue parses");
    adapters.import_catalog(&entries).await?;
    for e in &entries {
        adapters.set_stock(&e.sku, STARTER_UNITS).await?;
    }
    let listed: Vec<String> = entries
        .iter()
        .map(|e| format!("{} {}", e.sku, money(e.price_cents, &e.currency)))
        .collect();
    Ok(Some(format!(
        "  seeded a starter catalogue, {STARTER_UNITS} units each: {} (--empty: none)",
        listed.join(", ")
    )))
}
