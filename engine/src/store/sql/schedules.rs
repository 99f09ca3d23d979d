//! `ScheduleStore` on both backends, with the same statements.

use super::{Backend, Column, SqlStore};
use crate::clock::Millis;
use crate::store::schedules::{ScheduleRow, ScheduleStore};
use crate::store::{StoreError, classify};

type Row = (String, String, Vec<u8>, Vec<u8>, i64, i64);

fn row((namespace, schedule_id, spec, state, next_fire_at, version): Row) -> ScheduleRow {
    ScheduleRow {
        namespace,
        schedule_id,
        spec,
        state,
        next_fire_at,
        version,
    }
}

#[async_trait::async_trait]
impl<DB> ScheduleStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    String: Column<DB>,
    i64: Column<DB>,
    i32: Column<DB>,
    bool: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'r> &'r [u8]: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    async fn create_schedule(&self, r: &ScheduleRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO schedules (namespace, schedule_id, spec, state, next_fire_at, version) \
             VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (namespace, schedule_id) DO NOTHING",
        )
        .bind(r.namespace.as_str())
        .bind(r.schedule_id.as_str())
        .bind(r.spec.as_slice())
        .bind(r.state.as_slice())
        .bind(r.next_fire_at)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn load_schedule(
        &self,
        namespace: &str,
        schedule_id: &str,
    ) -> Result<Option<ScheduleRow>, StoreError> {
        let found: Option<Row> = sqlx::query_as(
            "SELECT namespace, schedule_id, spec, state, next_fire_at, version FROM schedules \
             WHERE namespace = $1 AND schedule_id = $2",
        )
        .bind(namespace)
        .bind(schedule_id)
        .fetch_optional(&self.write)
        .await
        .map_err(classify)?;
        Ok(found.map(row))
    }

    async fn save_schedule(&self, r: &ScheduleRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE schedules SET spec = $1, state = $2, next_fire_at = $3, version = version + 1 \
             WHERE namespace = $4 AND schedule_id = $5 AND version = $6",
        )
        .bind(r.spec.as_slice())
        .bind(r.state.as_slice())
        .bind(r.next_fire_at)
        .bind(r.namespace.as_str())
        .bind(r.schedule_id.as_str())
        .bind(r.version)
        .execute(&self.write)
        .await
        .map_err(classify)?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn delete_schedule(
        &self,
        namespace: &str,
        schedule_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM schedules WHERE namespace = $1 AND schedule_id = $2")
            .bind(namespace)
            .bind(schedule_id)
            .execute(&self.write)
            .await
            .map_err(classify)?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn list_schedules(
        &self,
        namespace: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT namespace, schedule_id, spec, state, next_fire_at, version FROM schedules \
             WHERE namespace = $1 AND schedule_id > $2 ORDER BY schedule_id LIMIT $3",
        )
        .bind(namespace)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        Ok(rows.into_iter().map(row).collect())
    }

    async fn due_schedules(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as(
            "SELECT namespace, schedule_id FROM schedules WHERE next_fire_at <= $1 \
             ORDER BY next_fire_at LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.write)
        .await
        .map_err(classify)
    }

    async fn next_schedule_at(&self) -> Result<Option<Millis>, StoreError> {
        let next: Option<(i64,)> =
            sqlx::query_as("SELECT next_fire_at FROM schedules ORDER BY next_fire_at LIMIT 1")
                .fetch_optional(&self.read)
                .await
                .map_err(classify)?;
        Ok(next.map(|(t,)| t))
    }
}
