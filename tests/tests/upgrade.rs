//! Upgrading a database made before each owner kept its own migrations: the shared history
//! 1 to 15 in `_sqlx_migrations` (kept in `tests/fixtures/migrations_v15`). The engine, the
//! orders read model and the reference adapters each adopt their part of it (their files up to
//! 15 marked applied, not run again), what the database held stays, and orders run on it.

use martix_activities::random_order;
use martix_engine::events::EventsConfig;
use martix_order_contract::{ORDER_WORKFLOW_TYPE, OrderOutcome};
use martix_tests::{OrderShop, TestEngine, fast_config};
use rand::SeedableRng;
use sqlx::Row;
use std::time::Duration;

/// Rows of the read model and the stock as a v15 database held them.
const LEGACY_ORDER: &str = "INSERT INTO orders (namespace, order_id, customer_id, status, step, \
     currency, items, subtotal_cents, discount_cents, tax_cents, total_cents, charged_cents, \
     refunded_cents, shipment, last_error, created_at, updated_at, last_sequence) VALUES \
     ('default', 'legacy-1', 'c-legacy', 'completed', 'order.completed', 'EUR', '[]', 100, 0, \
     0, 100, 100, 0, 'ship-1', NULL, 1, 2, 9)";
const LEGACY_STOCK: &str = "INSERT INTO inventory (sku, initial, available, reserved, shipped) \
     VALUES ('legacy-sku', 7, 7, 0, 0)";

/// Places `n` orders through `shop` and waits for each outcome.
async fn place(shop: &OrderShop, n: usize) -> Vec<OrderOutcome> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut outcomes = Vec::new();
    for i in 0..n {
        let order = random_order(&mut rng, &shop.prefix, i, 4);
        let run = shop
            .client
            .start_workflow(
                martix_sdk::StartOptions::new(ORDER_WORKFLOW_TYPE, &order.order_id, &shop.queue),
                &order,
            )
            .await
            .unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(60), run.result::<OrderOutcome>())
            .await
            .expect("the order ends")
            .unwrap();
        outcomes.push(outcome);
    }
    outcomes
}

/// Runs orders on the upgraded database at `url` and checks what each owner recorded.
async fn orders_run_on_the_upgraded_database(url: &str) {
    let engine = TestEngine::start_on(url, fast_config(), EventsConfig::default()).await;
    let shop = OrderShop::open(
        engine,
        martix_activities::Faults::default(),
        martix_activities::BreakerSettings::default(),
        "up",
        |_| 1_000,
    )
    .await;
    let outcomes = place(&shop, 6).await;
    assert!(
        outcomes.iter().all(
            |o| ["completed", "compensated", "rejected", "failed"].contains(&o.status.as_str())
        ),
        "{outcomes:?}"
    );
    // The read model folds the new orders beside the row the old database held.
    let read_model = martix_orders::ReadModel::new(shop.engine.engine.store().pools());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = read_model.all_orders().await.unwrap();
        let ours = rows
            .iter()
            .filter(|r| r.order_id.starts_with(&shop.prefix))
            .count();
        if ours == outcomes.len() {
            let legacy = rows
                .iter()
                .find(|r| r.order_id == "legacy-1")
                .expect("kept");
            assert_eq!(
                (legacy.status.as_str(), legacy.charged_cents),
                ("completed", 100)
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ours} of {} folded",
            outcomes.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        shop.adapters.stock("legacy-sku").await.unwrap().available,
        7,
        "the stock the old database held"
    );
    each_owner_adopted_its_part(url).await;
}

/// The versions `owner` recorded as applied, in order.
async fn applied(pool: &sqlx::AnyPool, owner: &str) -> Vec<i64> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM martix_migrations_{owner} WHERE success = TRUE ORDER BY version"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<i64, _>(0))
    .collect()
}

async fn each_owner_adopted_its_part(url: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    assert_eq!(
        applied(&pool, "engine").await,
        [
            1, 2, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 27
        ]
    );
    assert_eq!(applied(&pool, "orders").await, [7]);
    assert_eq!(applied(&pool, "adapters").await, [3, 6, 22, 25]);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v15_postgres_database_upgrades_in_place_and_runs_orders() {
    let url = martix_tests::fresh_postgres_url().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    martix_engine::martix_migrate::embedded!("v15_postgres")
        .migrator()
        .run(&pool)
        .await
        .unwrap();
    for row in [LEGACY_ORDER, LEGACY_STOCK] {
        sqlx::query(row).execute(&pool).await.unwrap();
    }
    pool.close().await;
    orders_run_on_the_upgraded_database(&url).await;
    martix_tests::drop_postgres_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v15_sqlite_database_upgrades_in_place_and_runs_orders() {
    use std::str::FromStr;
    let url = martix_tests::sqlite_url();
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    martix_engine::martix_migrate::embedded!("v15_sqlite")
        .migrator()
        .run(&pool)
        .await
        .unwrap();
    for row in [LEGACY_ORDER, LEGACY_STOCK] {
        sqlx::query(row).execute(&pool).await.unwrap();
    }
    pool.close().await;
    orders_run_on_the_upgraded_database(&url).await;
}

/// A fresh database: every owner runs its files, each tracked apart, none in sqlx's table.
#[tokio::test]
async fn a_fresh_database_gets_each_owners_tables_tracked_apart() {
    let url = martix_tests::fresh_postgres_url().await;
    let store = martix_engine::store::connect(&url).await.unwrap();
    martix_engine::events::projection::migrate(&store.pools(), &martix_orders::MIGRATIONS)
        .await
        .unwrap();
    martix_activities::ReferenceAdapters::connect(&url)
        .await
        .unwrap();
    // Again: nothing to do, no error.
    martix_activities::ReferenceAdapters::connect(&url)
        .await
        .unwrap();
    drop(store);
    each_owner_adopted_its_part(&url).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let shared: bool = sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert!(!shared, "no owner writes sqlx's shared table");
    pool.close().await;
    martix_tests::drop_postgres_database(&url).await;
}

/// Makes a v15 database at a fresh PostgreSQL URL (the shared history, nothing else).
async fn v15_postgres() -> String {
    let url = martix_tests::fresh_postgres_url().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    martix_engine::martix_migrate::embedded!("v15_postgres")
        .migrator()
        .run(&pool)
        .await
        .unwrap();
    pool.close().await;
    url
}

/// An owner that was never part of the shared history (a domain added later) runs all of its
/// files on an upgraded database, not adopting versions it never had.
#[tokio::test]
async fn a_new_owner_on_an_upgraded_database_runs_its_own_files() {
    let url = v15_postgres().await;
    let store = martix_engine::store::connect(&url).await.unwrap();
    martix_engine::events::projection::migrate(
        &store.pools(),
        &martix_tests::subscriptions::MIGRATIONS,
    )
    .await
    .unwrap();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    assert_eq!(applied(&pool, "subscriptions").await, [1]);
    let rows: i64 = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM subscriptions")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "its table exists");
    pool.close().await;
    drop(store);
    martix_tests::drop_postgres_database(&url).await;
}

/// A shared history with a failed migration is refused, as sqlx's own migrator refuses it,
/// and nothing of the engine's is adopted.
#[tokio::test]
async fn a_shared_history_with_a_failed_migration_is_refused() {
    let url = v15_postgres().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET success = FALSE WHERE version = 14")
        .execute(&pool)
        .await
        .unwrap();
    let err = martix_engine::store::connect(&url)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("14"), "{err}");
    let adopted: Option<String> =
        sqlx::query_scalar("SELECT CAST(to_regclass('martix_migrations_engine') AS TEXT)")
            .fetch_one(&pool)
            .await
            .unwrap();
    let recorded: i64 = if adopted.is_some() {
        sqlx::query_scalar("SELECT COUNT(*) FROM martix_migrations_engine")
            .fetch_one(&pool)
            .await
            .unwrap()
    } else {
        0
    };
    assert_eq!(recorded, 0, "nothing adopted");
    pool.close().await;
    martix_tests::drop_postgres_database(&url).await;
}

/// The migrations every owner embeds are the ones `sqlx::migrate!` embedded before (the same
/// versions, descriptions, checksums and transaction mode), so a database migrated by an
/// earlier build finds nothing changed.
#[test]
fn embedded_migrations_are_what_sqlx_resolves_from_the_files() {
    use martix_engine::martix_migrate::Owner;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let owners: [(&Owner, &str); 4] = [
        (&martix_engine::store::MIGRATIONS, "migrations/engine"),
        (
            &martix_activities::reference::MIGRATIONS,
            "migrations/adapters",
        ),
        (&martix_orders::MIGRATIONS, "migrations/orders"),
        (
            &martix_tests::subscriptions::MIGRATIONS,
            "tests/migrations/subscriptions",
        ),
    ];
    let mut compared = 0;
    for (owner, dir) in owners {
        for (embedded, backend) in [(&owner.postgres, "postgres"), (&owner.sqlite, "sqlite")] {
            let path = root.join(dir).join(backend);
            let resolved: Vec<_> = sqlx::migrate::resolve_blocking(&path)
                .unwrap()
                .into_iter()
                .map(|(m, _)| m)
                .collect();
            let ours = embedded.migrator();
            assert_eq!(ours.migrations.len(), resolved.len(), "{}", path.display());
            assert!(!resolved.is_empty(), "{}", path.display());
            for (a, b) in ours.migrations.iter().zip(&resolved) {
                assert_eq!(
                    (
                        a.version,
                        &a.description,
                        a.migration_type,
                        &a.checksum,
                        a.no_tx
                    ),
                    (
                        b.version,
                        &b.description,
                        b.migration_type,
                        &b.checksum,
                        b.no_tx
                    ),
                    "{}",
                    path.display()
                );
                assert_eq!(a.sql.as_str(), b.sql.as_str());
                compared += 1;
            }
        }
    }
    assert!(compared >= 40, "{compared}");
}
