// The build-script half of `martix_migrate::embedded!`: a build script `include!`s this file and
// calls `embed_migrations`, which writes, for each (key, directory), `$OUT_DIR/<key>.rs` holding
// the directory's `*.sql` files as `&[(file name, include_str!(...))]`, sorted by name, and tells
// cargo to run again when the directory changes. Plain std: no crate is built for the host, where
// `sqlx::migrate!` built sqlx and SQLite a second time (docs/performance.md, "The first build").

/// Embeds each `(key, directory)`; the crate reads one with `martix_migrate::embedded!("key")`.
#[allow(dead_code)]
fn embed_migrations(dirs: &[(&str, &str)]) {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest"));
    for (key, dir) in dirs {
        let dir = root.join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read migrations {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, p.canonicalize().expect("a migration's path"))
            })
            .collect();
        files.sort();
        let mut code = String::from("&[\n");
        for (name, path) in &files {
            code.push_str(&format!("    ({name:?}, include_str!({:?})),\n", path.display().to_string()));
        }
        code.push(']');
        std::fs::write(out.join(format!("{key}.rs")), code).expect("write the embedded migrations");
    }
}
