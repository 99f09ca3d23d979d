//! The SQL both backends share. PostgreSQL and SQLite (through sqlx) both take `$N`
//! placeholders, so one text serves both; `impl_store!` expands the same method bodies for
//! each backend's types, with the claim clause as the dialect difference. Each backend module
//! writes its own group-commit batches (`write_batch`), which the shared committer calls.

/// The execution columns, in the order `run_from_row` reads them.
macro_rules! run_cols {
    () => {
        "run_id, namespace, workflow_id, workflow_type, task_queue, status, start_time, \
         close_time, next_event_id, version, wft_queue, wft_attempt, wft_scheduled_event_id, \
         wft_visible_at, wft_lease_id, wft_lease_until, state"
    };
}

macro_rules! activity_cols {
    () => {
        "run_id, scheduled_event_id, namespace, task_queue, attempt, visible_at, lease_id, \
         lease_until, lease_ms, info, heartbeat_details, heartbeat_ms, started_at"
    };
}

macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal, $skip_locked:literal) => {
        use crate::clock::Millis;
        use crate::history::{
            ActivityTask, Lease, Run, RunCommit, RunState, ScheduledActivity, TaskOp, TimerOp,
            WorkflowTask,
        };
        use crate::ids::RunId;
        use crate::store::{
            classify, ActivityLease, Backlog, BreakerReport, BreakerStore, DueTimer,
            Introspection, ListQuery, NamespaceStore, OpenBreaker, RunStore, StoreError, TaskKind,
            TaskStore, TimerStore,
        };
        use martix_proto::v1 as pb;
        use prost::Message as _;
        use sqlx::Row as _;

        type DbRow = <$db as sqlx::Database>::Row;

        /// A store without row locks to skip (SQLite, one writer for everything) looks for a
        /// task with a read before it claims, so that an empty queue takes no turn on the
        /// writer; PostgreSQL claims at once (an update of no row writes nothing).
        const READ_BEFORE_CLAIM: bool = $skip_locked.is_empty();

        fn corrupt(e: impl std::fmt::Display) -> StoreError {
            StoreError::Corrupt(e.to_string())
        }

        fn run_from_row(row: &DbRow) -> Result<Run, StoreError> {
            let run_id: String = row.try_get(0).map_err(corrupt)?;
            let status: i32 = row.try_get(5).map_err(corrupt)?;
            let wft_queue: Option<String> = row.try_get(10).map_err(corrupt)?;
            let lease_id: Option<String> = row.try_get(14).map_err(corrupt)?;
            let lease_until: Option<i64> = row.try_get(15).map_err(corrupt)?;
            let state: Vec<u8> = row.try_get(16).map_err(corrupt)?;
            let wft = match wft_queue {
                None => None,
                Some(queue) => Some(WorkflowTask {
                    queue,
                    attempt: row.try_get(11).map_err(corrupt)?,
                    scheduled_event_id: row.try_get(12).map_err(corrupt)?,
                    visible_at: row.try_get(13).map_err(corrupt)?,
                    lease: lease_id.map(|id| Lease {
                        id,
                        until: lease_until.unwrap_or(0),
                    }),
                }),
            };
            Ok(Run {
                run_id: RunId::parse("run_id", &run_id).map_err(corrupt)?,
                namespace: row.try_get(1).map_err(corrupt)?,
                workflow_id: row.try_get(2).map_err(corrupt)?,
                workflow_type: row.try_get(3).map_err(corrupt)?,
                task_queue: row.try_get(4).map_err(corrupt)?,
                status: pb::WorkflowStatus::try_from(status).map_err(corrupt)?,
                start_time: row.try_get(6).map_err(corrupt)?,
                close_time: row.try_get(7).map_err(corrupt)?,
                next_event_id: row.try_get(8).map_err(corrupt)?,
                version: row.try_get(9).map_err(corrupt)?,
                wft,
                state: RunState::decode(&state[..]).map_err(corrupt)?,
            })
        }

        fn activity_from_row(row: &DbRow) -> Result<ActivityTask, StoreError> {
            let run_id: String = row.try_get(0).map_err(corrupt)?;
            let lease_id: Option<String> = row.try_get(6).map_err(corrupt)?;
            let lease_until: Option<i64> = row.try_get(7).map_err(corrupt)?;
            Ok(ActivityTask {
                run_id: RunId::parse("run_id", &run_id).map_err(corrupt)?,
                scheduled_event_id: row.try_get(1).map_err(corrupt)?,
                namespace: row.try_get(2).map_err(corrupt)?,
                task_queue: row.try_get(3).map_err(corrupt)?,
                attempt: row.try_get(4).map_err(corrupt)?,
                visible_at: row.try_get(5).map_err(corrupt)?,
                lease: lease_id.map(|id| Lease {
                    id,
                    until: lease_until.unwrap_or(0),
                }),
                lease_ms: row.try_get(8).map_err(corrupt)?,
                activity: ScheduledActivity::decode(row.try_get::<&[u8], _>(9).map_err(corrupt)?)
                    .map_err(corrupt)?,
                heartbeat_details: row.try_get(10).map_err(corrupt)?,
                heartbeat_ms: row.try_get(11).map_err(corrupt)?,
                started_at: row.try_get(12).map_err(corrupt)?,
            })
        }

        /// The events of a `history_events` row: several, length-delimited, when it has a
        /// `last_event_id`; one, not delimited, in a row written before rows held several.
        fn events_from_row(
            last_event_id: Option<i64>,
            data: &[u8],
        ) -> Result<Vec<pb::HistoryEvent>, StoreError> {
            if last_event_id.is_none() {
                return Ok(vec![pb::HistoryEvent::decode(data).map_err(corrupt)?]);
            }
            let mut buf = data;
            let mut out = Vec::new();
            while !buf.is_empty() {
                out.push(pb::HistoryEvent::decode_length_delimited(&mut buf).map_err(corrupt)?);
            }
            Ok(out)
        }

        /// A change's events as `history_events` rows `(run id, first event id, last event
        /// id, events length-delimited)`, up to `EVENTS_PER_ROW` events each.
        fn event_rows(
            run_id: &str,
            events: &[pb::HistoryEvent],
        ) -> impl Iterator<Item = (String, i64, i64, Vec<u8>)> {
            events.chunks($crate::store::EVENTS_PER_ROW).map(move |chunk| {
                let mut data = Vec::new();
                for e in chunk {
                    e.encode_length_delimited(&mut data).expect("a Vec grows as needed");
                }
                let first = chunk[0].event_id;
                let last = chunk[chunk.len() - 1].event_id;
                (run_id.to_owned(), first, last, data)
            })
        }


        /// One run's change, and where its outcome goes.
        pub(crate) type Pending = (
            std::sync::Arc<RunCommit>,
            tokio::sync::oneshot::Sender<Result<(), StoreError>>,
        );

        /// Group commit: one task writes every change of this store. What queued up while a
        /// transaction ran goes into the next one together (up to `MAX_BATCH`), so changes to
        /// different runs share a commit (and its fsync), each still all or nothing
        /// (`write_batch`). Nothing waits to fill a batch.
        pub(crate) fn spawn_committer(
            pool: sqlx::Pool<$db>,
            notify_as: Option<String>,
            writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
            writers: usize,
            hold_connection: bool,
        ) -> tokio::sync::mpsc::UnboundedSender<Pending> {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Pending>();
            let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..writers.max(1) {
                let (pool, notify_as, writes, rx) =
                    (pool.clone(), notify_as.clone(), writes.clone(), rx.clone());
                tokio::spawn(async move {
                    let mut batch = Vec::with_capacity($crate::store::MAX_BATCH);
                    // With `hold_connection` a writer keeps its connection from batch to
                    // batch: sqlx pings a connection (a round trip) each time one goes back to
                    // the pool and again before it hands it out. A held connection that died
                    // (the database restarted) fails its batch as `Unavailable`, which callers
                    // retry, and is closed. SQLite's one write connection is shared with
                    // claims and the relay, so its writer takes it per batch.
                    let mut held: Option<sqlx::pool::PoolConnection<$db>> = None;
                    loop {
                        // Take what is queued (waiting for at least one), then let the next
                        // writer take what queues up meanwhile.
                        let n = rx.lock().await.recv_many(&mut batch, $crate::store::MAX_BATCH).await;
                        if n == 0 {
                            return;
                        }
                        let mut conn = match held.take() {
                            Some(conn) => conn,
                            None => match pool.acquire().await {
                                Ok(conn) => conn,
                                Err(e) => {
                                    let why = classify(e).to_string();
                                    for (_, done) in batch.drain(..) {
                                        let _ = done.send(Err(StoreError::Unavailable(why.clone())));
                                    }
                                    continue;
                                }
                            },
                        };
                        writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // One lock order for every batch: no deadlocks between them.
                        batch.sort_by_key(|(c, _)| c.run.run_id);
                        let commits: Vec<&RunCommit> = batch.iter().map(|(c, _)| &**c).collect();
                        let groups = write_batch(&mut conn, &commits, notify_as.as_deref()).await;
                        if groups.broken && hold_connection {
                            // Maybe a lost connection: never reuse it. (SQLite's is never
                            // closed: an in-memory database lives only in its connection.)
                            conn.close_on_drop();
                        } else if hold_connection {
                            held = Some(conn);
                        }
                        for ((_, done), outcome) in batch.drain(..).zip(groups.outcomes()) {
                            let _ = done.send(outcome);
                        }
                    }
                });
            }
            tx
        }

        /// A statement with its arguments bound.
        type Bound<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments>;

        impl $store {
            /// Claims a task with `claim`, an update returning the row it leased. On SQLite
            /// `probe` looks first, so that an empty queue takes no turn on the single writer;
            /// PostgreSQL claims at once (an update of no row writes nothing). A claim counts
            /// as a write transaction when it claimed, and on SQLite whenever it ran (it took
            /// the writer's turn even if it lost the race).
            async fn claim(
                &self,
                probe: Bound<'_>,
                claim: Bound<'_>,
            ) -> Result<Option<DbRow>, StoreError> {
                if READ_BEFORE_CLAIM
                    && probe.fetch_optional(&self.read).await.map_err(classify)?.is_none()
                {
                    return Ok(None);
                }
                let row = claim.fetch_optional(&self.write).await.map_err(classify)?;
                if row.is_some() || READ_BEFORE_CLAIM {
                    self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(row)
            }
        }

        #[async_trait::async_trait]
        impl RunStore for $store {
            async fn commit(&self, commit: &RunCommit) -> Result<(), StoreError> {
                self.commit_shared(std::sync::Arc::new(commit.clone())).await
            }

            async fn commit_shared(&self, commit: std::sync::Arc<RunCommit>) -> Result<(), StoreError> {
                let (done, outcome) = tokio::sync::oneshot::channel();
                self.committer
                    .send((commit, done))
                    .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
                outcome
                    .await
                    .map_err(|_| StoreError::Unavailable("the commit writer stopped".into()))?
            }

            async fn load_run(&self, run_id: RunId) -> Result<Option<Run>, StoreError> {
                let row = sqlx::query(concat!("SELECT ", $crate::store::sql::run_cols!(), " FROM executions WHERE run_id = $1"))
                    .bind(run_id.to_text())
                    .fetch_optional(&self.read)
                    .await
                    .map_err(classify)?;
                row.as_ref().map(run_from_row).transpose()
            }

            async fn latest_run(
                &self,
                namespace: &str,
                workflow_id: &str,
            ) -> Result<Option<Run>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ", $crate::store::sql::run_cols!(), " FROM executions WHERE namespace = $1 AND workflow_id = $2 ",
                    "ORDER BY start_time DESC, run_id DESC LIMIT 1"
                ))
                .bind(namespace)
                .bind(workflow_id)
                .fetch_optional(&self.read)
                .await
                .map_err(classify)?;
                row.as_ref().map(run_from_row).transpose()
            }

            async fn history(
                &self,
                run_id: RunId,
                from_event_id: i64,
                limit: usize,
            ) -> Result<Vec<pb::HistoryEvent>, StoreError> {
                // The row holding `from_event_id` (the last row starting at or before it) and
                // those after it, up to the row holding the last event asked for (event ids
                // have no gaps); `limit` rows hold at least `limit` events.
                let limit_rows = limit.min(i64::MAX as usize) as i64;
                let rows = sqlx::query(
                    "SELECT last_event_id, data FROM history_events WHERE run_id = $1 \
                     AND event_id >= (SELECT COALESCE(MAX(event_id), 0) FROM history_events \
                     WHERE run_id = $1 AND event_id <= $2) AND event_id < $3 \
                     ORDER BY event_id LIMIT $4",
                )
                .bind(run_id.to_text())
                .bind(from_event_id)
                .bind(from_event_id.saturating_add(limit_rows))
                .bind(limit_rows)
                .fetch_all(&self.read)
                .await
                .map_err(classify)?;
                let mut out = Vec::new();
                for r in &rows {
                    let last: Option<i64> = r.try_get(0).map_err(corrupt)?;
                    let data: Vec<u8> = r.try_get(1).map_err(corrupt)?;
                    out.extend(
                        events_from_row(last, &data)?
                            .into_iter()
                            .filter(|e| e.event_id >= from_event_id),
                    );
                    if out.len() >= limit {
                        break;
                    }
                }
                out.truncate(limit);
                Ok(out)
            }

            async fn last_event(
                &self,
                run_id: RunId,
            ) -> Result<Option<pb::HistoryEvent>, StoreError> {
                let row = sqlx::query(
                    "SELECT last_event_id, data FROM history_events WHERE run_id = $1 \
                     ORDER BY event_id DESC LIMIT 1",
                )
                .bind(run_id.to_text())
                .fetch_optional(&self.read)
                .await
                .map_err(classify)?;
                match row {
                    None => Ok(None),
                    Some(r) => {
                        let last: Option<i64> = r.try_get(0).map_err(corrupt)?;
                        let data: Vec<u8> = r.try_get(1).map_err(corrupt)?;
                        Ok(events_from_row(last, &data)?.pop())
                    }
                }
            }

            async fn list_runs(&self, q: &ListQuery) -> Result<Vec<Run>, StoreError> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ", $crate::store::sql::run_cols!(), " FROM executions WHERE namespace = "
                ));
                qb.push_bind(q.namespace.clone());
                if !q.statuses.is_empty() {
                    qb.push(" AND status IN (");
                    let mut sep = qb.separated(", ");
                    for s in &q.statuses {
                        sep.push_bind(*s as i32);
                    }
                    qb.push(")");
                }
                if let Some(t) = &q.workflow_type {
                    qb.push(" AND workflow_type = ").push_bind(t.clone());
                }
                if let Some(t) = &q.task_queue {
                    qb.push(" AND task_queue = ").push_bind(t.clone());
                }
                if let Some(p) = &q.workflow_id_prefix {
                    qb.push(" AND substr(workflow_id, 1, ")
                        .push_bind(p.chars().count() as i32)
                        .push(") = ")
                        .push_bind(p.clone());
                }
                if let Some(from) = q.start_time_from {
                    qb.push(" AND start_time >= ").push_bind(from);
                }
                if let Some(to) = q.start_time_to {
                    qb.push(" AND start_time < ").push_bind(to);
                }
                if let Some(after) = &q.after {
                    qb.push(" AND (start_time < ")
                        .push_bind(after.start_time)
                        .push(" OR (start_time = ")
                        .push_bind(after.start_time)
                        .push(" AND run_id < ")
                        .push_bind(after.run_id.clone())
                        .push("))");
                }
                qb.push(" ORDER BY start_time DESC, run_id DESC LIMIT ")
                    .push_bind(q.limit as i64);
                let rows = qb.build().fetch_all(&self.read).await.map_err(classify)?;
                rows.iter().map(run_from_row).collect()
            }

            async fn request_recorded(
                &self,
                namespace: &str,
                request_id: &str,
            ) -> Result<bool, StoreError> {
                let found: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM signal_requests WHERE namespace = $1 AND request_id = $2",
                )
                .bind(namespace)
                .bind(request_id)
                .fetch_optional(&self.read)
                .await
                .map_err(classify)?;
                Ok(found.is_some())
            }
        }

        #[async_trait::async_trait]
        impl TaskStore for $store {
            fn subscribe_tasks(
                &self,
            ) -> Option<tokio::sync::broadcast::Receiver<$crate::store::TaskNotice>> {
                self.notices().map(|n| n.subscribe())
            }

            async fn claim_workflow_task(
                &self,
                namespace: &str,
                queue: &str,
                lease_id: &str,
                now: Millis,
            ) -> Result<Option<Run>, StoreError> {
                let probe = sqlx::query(
                    "SELECT 1 FROM executions WHERE namespace = $1 AND wft_queue = $2 \
                     AND wft_visible_at <= $3 AND (wft_lease_until IS NULL OR wft_lease_until <= $3) LIMIT 1",
                )
                .bind(namespace)
                .bind(queue)
                .bind(now);
                let claim = sqlx::query(concat!(
                    "UPDATE executions SET wft_lease_id = $1, wft_lease_until = $2 + wft_timeout_ms, ",
                    "version = version + 1 WHERE run_id = (SELECT run_id FROM executions ",
                    "WHERE namespace = $3 AND wft_queue = $4 AND wft_visible_at <= $2 ",
                    "AND (wft_lease_until IS NULL OR wft_lease_until <= $2) ",
                    "ORDER BY wft_visible_at LIMIT 1", $skip_locked, ") RETURNING ", $crate::store::sql::run_cols!()
                ))
                .bind(lease_id)
                .bind(now)
                .bind(namespace)
                .bind(queue);
                self.claim(probe, claim).await?.as_ref().map(run_from_row).transpose()
            }

            async fn release_workflow_task(
                &self,
                run_id: RunId,
                lease_id: &str,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "UPDATE executions SET wft_lease_id = NULL, wft_lease_until = NULL, \
                     version = version + 1 WHERE run_id = $1 AND wft_lease_id = $2",
                )
                .bind(run_id.to_text())
                .bind(lease_id)
                .execute(&self.write)
                .await
                .map_err(classify)?;
                self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(done.rows_affected() == 1)
            }

            async fn claim_expired_sticky(
                &self,
                namespace: &str,
                queue: &str,
                lease_id: &str,
                now: Millis,
                stale_before: Millis,
            ) -> Result<Option<Run>, StoreError> {
                let probe = sqlx::query(
                    "SELECT 1 FROM executions WHERE namespace = $1 AND task_queue = $2 \
                     AND wft_queue IS NOT NULL AND wft_queue <> task_queue AND wft_visible_at <= $3 LIMIT 1",
                )
                .bind(namespace)
                .bind(queue)
                .bind(stale_before);
                let claim = sqlx::query(concat!(
                    "UPDATE executions SET wft_queue = task_queue, wft_lease_id = $1, ",
                    "wft_lease_until = $2 + wft_timeout_ms, version = version + 1 ",
                    "WHERE run_id = (SELECT run_id FROM executions ",
                    "WHERE namespace = $3 AND task_queue = $4 AND wft_queue IS NOT NULL ",
                    "AND wft_queue <> task_queue AND wft_visible_at <= $5 ",
                    "AND (wft_lease_until IS NULL OR wft_lease_until <= $2) ",
                    "ORDER BY wft_visible_at LIMIT 1", $skip_locked, ") RETURNING ",
                    $crate::store::sql::run_cols!()
                ))
                .bind(lease_id)
                .bind(now)
                .bind(namespace)
                .bind(queue)
                .bind(stale_before);
                self.claim(probe, claim).await?.as_ref().map(run_from_row).transpose()
            }

            async fn claim_activity_task(
                &self,
                namespace: &str,
                queue: &str,
                lease_id: &str,
                now: Millis,
            ) -> Result<Option<ActivityTask>, StoreError> {
                let probe = sqlx::query(
                    "SELECT 1 FROM activity_tasks WHERE namespace = $1 AND task_queue = $2 \
                     AND visible_at <= $3 AND lease_id IS NULL LIMIT 1",
                )
                .bind(namespace)
                .bind(queue)
                .bind(now);
                let claim = sqlx::query(concat!(
                    // An expired lease is not claimed here: the engine's reaper records the
                    // timed-out attempt and schedules the retry per the retry policy.
                    "UPDATE activity_tasks SET lease_id = $1, started_at = $2, lease_until = $2 + ",
                    "CASE WHEN heartbeat_ms > 0 AND heartbeat_ms < lease_ms THEN heartbeat_ms ELSE lease_ms END ",
                    "WHERE (run_id, scheduled_event_id) = (SELECT run_id, scheduled_event_id ",
                    "FROM activity_tasks WHERE namespace = $3 AND task_queue = $4 ",
                    "AND visible_at <= $2 AND lease_id IS NULL ",
                    "ORDER BY visible_at LIMIT 1", $skip_locked, ") RETURNING ", $crate::store::sql::activity_cols!()
                ))
                .bind(lease_id)
                .bind(now)
                .bind(namespace)
                .bind(queue);
                self.claim(probe, claim).await?.as_ref().map(activity_from_row).transpose()
            }

            async fn heartbeat_activity(
                &self,
                run_id: RunId,
                scheduled_event_id: i64,
                lease_id: &str,
                details: Option<&[u8]>,
                now: Millis,
            ) -> Result<bool, StoreError> {
                self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let done = sqlx::query(
                    "UPDATE activity_tasks SET heartbeat_details = COALESCE($1, heartbeat_details), \
                     lease_until = CASE WHEN heartbeat_ms = 0 THEN lease_until \
                       WHEN started_at + lease_ms < $5 + heartbeat_ms THEN started_at + lease_ms \
                       ELSE $5 + heartbeat_ms END \
                     WHERE run_id = $2 AND scheduled_event_id = $3 AND lease_id = $4 AND lease_until > $5",
                )
                .bind(details)
                .bind(run_id.to_text())
                .bind(scheduled_event_id)
                .bind(lease_id)
                .bind(now)
                .execute(&self.write)
                .await
                .map_err(classify)?;
                Ok(done.rows_affected() == 1)
            }

            async fn expired_activity_leases(
                &self,
                now: Millis,
                limit: usize,
            ) -> Result<Vec<$crate::store::ExpiredLease>, StoreError> {
                let rows = sqlx::query(
                    "SELECT run_id, scheduled_event_id, attempt, lease_id, started_at, lease_ms, \
                     lease_until, namespace FROM activity_tasks WHERE lease_id IS NOT NULL AND lease_until <= $1 \
                     ORDER BY lease_until LIMIT $2",
                )
                .bind(now)
                .bind(limit as i64)
                .fetch_all(&self.read)
                .await
                .map_err(classify)?;
                rows.iter()
                    .map(|r| {
                        let run_id: String = r.try_get(0).map_err(corrupt)?;
                        let started_at: Option<i64> = r.try_get(4).map_err(corrupt)?;
                        let lease_ms: i64 = r.try_get(5).map_err(corrupt)?;
                        let lease_until: Option<i64> = r.try_get(6).map_err(corrupt)?;
                        Ok($crate::store::ExpiredLease {
                            run_id: RunId::parse("run_id", &run_id).map_err(corrupt)?,
                            namespace: r.try_get(7).map_err(corrupt)?,
                            scheduled_event_id: r.try_get(1).map_err(corrupt)?,
                            attempt: r.try_get(2).map_err(corrupt)?,
                            lease_id: r.try_get(3).map_err(corrupt)?,
                            heartbeat: match (started_at, lease_until) {
                                (Some(s), Some(u)) => u < s + lease_ms,
                                _ => false,
                            },
                        })
                    })
                    .collect()
            }

            async fn activity_leases(&self, run_id: RunId) -> Result<Vec<ActivityLease>, StoreError> {
                let rows = sqlx::query(
                    "SELECT scheduled_event_id, attempt, lease_until FROM activity_tasks \
                     WHERE run_id = $1 ORDER BY scheduled_event_id",
                )
                .bind(run_id.to_text())
                .fetch_all(&self.read)
                .await
                .map_err(classify)?;
                rows.iter()
                    .map(|r| {
                        Ok(ActivityLease {
                            scheduled_event_id: r.try_get(0).map_err(corrupt)?,
                            attempt: r.try_get(1).map_err(corrupt)?,
                            lease_until: r.try_get(2).map_err(corrupt)?,
                        })
                    })
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl TimerStore for $store {
            async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<DueTimer>, StoreError> {
                let rows = sqlx::query(
                    "SELECT run_id, timer_key, fire_at FROM timers WHERE fire_at <= $1 \
                     ORDER BY fire_at LIMIT $2",
                )
                .bind(now)
                .bind(limit as i64)
                .fetch_all(&self.read)
                .await
                .map_err(classify)?;
                rows.iter()
                    .map(|r| {
                        let run_id: String = r.try_get(0).map_err(corrupt)?;
                        Ok(DueTimer {
                            run_id: RunId::parse("run_id", &run_id).map_err(corrupt)?,
                            key: r.try_get(1).map_err(corrupt)?,
                            fire_at: r.try_get(2).map_err(corrupt)?,
                        })
                    })
                    .collect()
            }

            async fn delete_timer(&self, run_id: RunId, key: &str) -> Result<(), StoreError> {
                self.writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                sqlx::query("DELETE FROM timers WHERE run_id = $1 AND timer_key = $2")
                    .bind(run_id.to_text())
                    .bind(key)
                    .execute(&self.write)
                    .await
                    .map_err(classify)?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl NamespaceStore for $store {
            async fn namespace_exists(&self, namespace: &str) -> Result<bool, StoreError> {
                let row = sqlx::query("SELECT 1 FROM namespaces WHERE name = $1")
                    .bind(namespace)
                    .fetch_optional(&self.read)
                    .await
                    .map_err(classify)?;
                Ok(row.is_some())
            }

            async fn create_namespace(&self, namespace: &str, now: Millis) -> Result<bool, StoreError> {
                let done = sqlx::query(
                    "INSERT INTO namespaces (name, created_at) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(namespace)
                .bind(now)
                .execute(&self.write)
                .await
                .map_err(classify)?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_namespaces(&self) -> Result<Vec<String>, StoreError> {
                sqlx::query_scalar("SELECT name FROM namespaces ORDER BY name")
                    .fetch_all(&self.read)
                    .await
                    .map_err(classify)
            }
        }

        #[async_trait::async_trait]
        impl BreakerStore for $store {
            async fn record_breakers(
                &self,
                worker: &str,
                reports: &[BreakerReport],
                now: Millis,
            ) -> Result<(), StoreError> {
                let mut tx = self.write.begin().await.map_err(classify)?;
                for report in reports {
                    sqlx::query(
                        "INSERT INTO breakers (worker, adapter, state, changed_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (worker, adapter) DO UPDATE \
                         SET state = excluded.state, changed_at = excluded.changed_at \
                         WHERE breakers.state <> excluded.state",
                    )
                    .bind(worker)
                    .bind(&report.adapter)
                    .bind(report.state.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                }
                tx.commit().await.map_err(classify)
            }

            async fn open_breakers(&self) -> Result<Vec<OpenBreaker>, StoreError> {
                let rows = sqlx::query(
                    "SELECT worker, adapter, changed_at FROM breakers WHERE state = 'open' \
                     ORDER BY changed_at DESC LIMIT 100",
                )
                .fetch_all(&self.read)
                .await
                .map_err(classify)?;
                rows.iter()
                    .map(|r| {
                        Ok(OpenBreaker {
                            worker: r.try_get(0).map_err(corrupt)?,
                            adapter: r.try_get(1).map_err(corrupt)?,
                            since: r.try_get(2).map_err(corrupt)?,
                        })
                    })
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl Introspection for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            fn write_transactions(&self) -> u64 {
                self.writes.load(std::sync::atomic::Ordering::Relaxed)
            }

            async fn database_transactions(&self) -> Result<Option<i64>, StoreError> {
                self.count_transactions().await
            }

            async fn backlog(
                &self,
                now: Millis,
            ) -> Result<Vec<Backlog>, StoreError> {
                let rows = sqlx::query(
                    "SELECT namespace, wft_queue, 'workflow', COUNT(*) FROM executions \
                     WHERE wft_queue IS NOT NULL AND wft_visible_at <= $1 \
                       AND (wft_lease_until IS NULL OR wft_lease_until <= $1) \
                     GROUP BY namespace, wft_queue \
                     UNION ALL \
                     SELECT namespace, task_queue, 'activity', COUNT(*) FROM activity_tasks \
                     WHERE visible_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) \
                     GROUP BY namespace, task_queue",
                )
                .bind(now)
                .fetch_all(&self.read)
                .await
                .map_err(classify)?;
                rows.iter()
                    .map(|r| {
                        let kind: String = r.try_get(2).map_err(corrupt)?;
                        Ok(Backlog {
                            namespace: r.try_get(0).map_err(corrupt)?,
                            queue: r.try_get(1).map_err(corrupt)?,
                            kind: match kind.as_str() {
                                "workflow" => TaskKind::Workflow,
                                "activity" => TaskKind::Activity,
                                other => return Err(corrupt(format!("a backlog of kind {other:?}"))),
                            },
                            tasks: r.try_get(3).map_err(corrupt)?,
                        })
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use {activity_cols, impl_store, run_cols};
