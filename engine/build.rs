//! Embeds the engine's migrations (`martix_migrate::embedded!`).

include!("../migrations/embed.rs");

fn main() {
    embed_migrations(&[
        ("engine_postgres", "../migrations/engine/postgres"),
        ("engine_sqlite", "../migrations/engine/sqlite"),
    ]);
}
