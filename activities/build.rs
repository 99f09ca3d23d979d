//! Embeds the reference adapters' migrations (`martix_migrate::embedded!`).

include!("../migrations/embed.rs");

fn main() {
    embed_migrations(&[
        ("adapters_postgres", "../migrations/adapters/postgres"),
        ("adapters_sqlite", "../migrations/adapters/sqlite"),
    ]);
}
