//! Embeds the subscriptions read model's migrations and the fixtures of a version-15 database
//! (`martix_migrate::embedded!`).

include!("../migrations/embed.rs");

fn main() {
    embed_migrations(&[
        (
            "subscriptions_postgres",
            "migrations/subscriptions/postgres",
        ),
        ("subscriptions_sqlite", "migrations/subscriptions/sqlite"),
        ("v15_postgres", "fixtures/migrations_v15/postgres"),
        ("v15_sqlite", "fixtures/migrations_v15/sqlite"),
    ]);
}
