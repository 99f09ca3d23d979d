//! Embeds the test migrations (`embedded!`).

include!("embed.rs");

fn main() {
    embed_migrations(&[("race", "testdata/race")]);
}
