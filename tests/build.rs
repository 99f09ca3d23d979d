//! Rebuild when a migration of the subscriptions read model is added: `sqlx::migrate!` embeds
//! the directory at compile time.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
