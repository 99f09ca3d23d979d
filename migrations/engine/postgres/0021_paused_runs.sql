-- Pausing a run parks its tasks; resuming releases them. The batch function is the one of
-- 0018 with one more statement kind: 12 sets when an activity task's next attempt becomes
-- available (o_c) if no worker holds it, and leaves a held or missing row as it is. Nodes of
-- the version before never send it.
CREATE OR REPLACE FUNCTION martix_write_batch_v1(
    c_change INTEGER[], c_run TEXT[], c_expected BIGINT[], c_fresh BOOLEAN[],
    c_namespace TEXT[], c_workflow_id TEXT[], c_workflow_type TEXT[], c_task_queue TEXT[],
    c_status INTEGER[], c_start BIGINT[], c_close BIGINT[], c_next BIGINT[],
    c_wft_queue TEXT[], c_wft_attempt INTEGER[], c_wft_sched BIGINT[], c_wft_visible BIGINT[],
    c_lease_id TEXT[], c_lease_until BIGINT[], c_state BYTEA[], c_wft_timeout BIGINT[],
    o_checkpoint INTEGER[], o_kind SMALLINT[], o_text TEXT[], o_a BIGINT[], o_b BIGINT[],
    o_c BIGINT[],
    h_checkpoint INTEGER[], h_first BIGINT[], h_last BIGINT[], h_data BYTEA[],
    x_checkpoint INTEGER[], x_event_id TEXT[], x_shard INTEGER[], x_subject TEXT[],
    x_workflow_type TEXT[], x_run TEXT[], x_sequence BIGINT[], x_event_type TEXT[],
    x_occurred BIGINT[], x_body TEXT[],
    t_checkpoint INTEGER[], t_in_place BOOLEAN[], t_sched BIGINT[], t_queue TEXT[],
    t_attempt INTEGER[], t_visible BIGINT[], t_lease_id TEXT[], t_lease_until BIGINT[],
    t_lease_ms BIGINT[], t_info BYTEA[], t_details BYTEA[], t_heartbeat_ms BIGINT[],
    t_started BIGINT[]
) RETURNS INTEGER[]
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER := coalesce(array_length(c_run, 1), 0);
    outcome INTEGER[] := array_fill(0, ARRAY[n]);
    op INTEGER := 1;
    ops INTEGER := coalesce(array_length(o_kind, 1), 0);
    refused INTEGER := -1;
    k INTEGER;
    done BOOLEAN;
    failed TEXT;
BEGIN
    FOR i IN 1 .. n LOOP
        IF c_change[i] = refused THEN
            -- The continued run of a refused change.
            outcome[i] := outcome[i - 1];
            WHILE op <= ops AND o_checkpoint[op] = i LOOP
                op := op + 1;
            END LOOP;
            CONTINUE;
        END IF;
        IF c_expected[i] IS NULL THEN
            IF c_fresh[i] THEN
                INSERT INTO executions (run_id, namespace, workflow_id, workflow_type, task_queue,
                    status, start_time, close_time, next_event_id, version, wft_queue,
                    wft_attempt, wft_scheduled_event_id, wft_visible_at, wft_lease_id,
                    wft_lease_until, state, wft_timeout_ms)
                SELECT c_run[i], c_namespace[i], c_workflow_id[i], c_workflow_type[i],
                    c_task_queue[i], c_status[i], c_start[i], c_close[i], c_next[i], 1,
                    c_wft_queue[i], c_wft_attempt[i], c_wft_sched[i], c_wft_visible[i],
                    c_lease_id[i], c_lease_until[i], c_state[i], c_wft_timeout[i]
                WHERE NOT EXISTS (SELECT 1 FROM executions
                    WHERE namespace = c_namespace[i] AND workflow_id = c_workflow_id[i]);
            ELSE
                INSERT INTO executions (run_id, namespace, workflow_id, workflow_type, task_queue,
                    status, start_time, close_time, next_event_id, version, wft_queue,
                    wft_attempt, wft_scheduled_event_id, wft_visible_at, wft_lease_id,
                    wft_lease_until, state, wft_timeout_ms)
                VALUES (c_run[i], c_namespace[i], c_workflow_id[i], c_workflow_type[i],
                    c_task_queue[i], c_status[i], c_start[i], c_close[i], c_next[i], 1,
                    c_wft_queue[i], c_wft_attempt[i], c_wft_sched[i], c_wft_visible[i],
                    c_lease_id[i], c_lease_until[i], c_state[i], c_wft_timeout[i]);
            END IF;
            done := FOUND;
            IF NOT done THEN
                outcome[i] := 2;
            END IF;
        ELSE
            UPDATE executions SET status = c_status[i], close_time = c_close[i],
                next_event_id = c_next[i], version = c_expected[i] + 1,
                wft_queue = c_wft_queue[i], wft_attempt = c_wft_attempt[i],
                wft_scheduled_event_id = c_wft_sched[i], wft_visible_at = c_wft_visible[i],
                wft_lease_id = c_lease_id[i], wft_lease_until = c_lease_until[i],
                state = c_state[i]
            WHERE run_id = c_run[i] AND version = c_expected[i];
            done := FOUND;
            IF NOT done THEN
                outcome[i] := 1;
            END IF;
        END IF;
        IF NOT done THEN
            IF i > 1 AND c_change[i - 1] = c_change[i] THEN
                -- The change's first run is written already.
                RAISE EXCEPTION USING ERRCODE = 'MX001', MESSAGE = 'martix: change refused',
                    DETAIL = c_change[i] || CASE outcome[i] WHEN 1 THEN ' conflict' ELSE ' id_used' END;
            END IF;
            refused := c_change[i];
            WHILE op <= ops AND o_checkpoint[op] = i LOOP
                op := op + 1;
            END LOOP;
            CONTINUE;
        END IF;
        WHILE op <= ops AND o_checkpoint[op] = i LOOP
            failed := NULL;
            CASE o_kind[op]
            WHEN 1 THEN
                PERFORM pg_notify('martix_tasks', o_text[op]);
            WHEN 2 THEN
                INSERT INTO signal_requests (namespace, request_id, received_at, fingerprint)
                VALUES (c_namespace[i], o_text[op], o_a[op], o_b[op])
                ON CONFLICT (namespace, request_id) DO NOTHING;
                IF NOT FOUND THEN failed := 'duplicate'; END IF;
            WHEN 3 THEN
                DELETE FROM timers WHERE run_id = c_run[i] AND timer_key = o_text[op];
                IF NOT FOUND THEN failed := 'stale_task'; END IF;
            WHEN 4 THEN
                k := o_a[op];
                INSERT INTO activity_tasks (run_id, scheduled_event_id, namespace, task_queue,
                    attempt, visible_at, lease_id, lease_until, lease_ms, info,
                    heartbeat_details, heartbeat_ms, started_at)
                VALUES (c_run[i], t_sched[k], c_namespace[i], t_queue[k], t_attempt[k],
                    t_visible[k], t_lease_id[k], t_lease_until[k], t_lease_ms[k], t_info[k],
                    t_details[k], t_heartbeat_ms[k], t_started[k]);
            WHEN 5 THEN
                UPDATE activity_tasks SET attempt = o_b[op], visible_at = o_c[op],
                    lease_id = NULL, lease_until = NULL, started_at = NULL
                WHERE run_id = c_run[i] AND scheduled_event_id = o_a[op]
                    AND lease_id = o_text[op];
                IF NOT FOUND THEN failed := 'stale_task'; END IF;
            WHEN 6 THEN
                UPDATE activity_tasks SET attempt = o_b[op], visible_at = o_c[op]
                WHERE run_id = c_run[i] AND scheduled_event_id = o_a[op] AND lease_id IS NULL;
                IF NOT FOUND THEN failed := 'stale_task'; END IF;
            WHEN 7 THEN
                DELETE FROM activity_tasks
                WHERE run_id = c_run[i] AND scheduled_event_id = o_a[op] AND lease_id = o_text[op];
                IF NOT FOUND THEN failed := 'stale_task'; END IF;
            WHEN 8 THEN
                DELETE FROM activity_tasks WHERE run_id = c_run[i] AND scheduled_event_id = o_a[op];
            WHEN 9 THEN
                INSERT INTO timers (run_id, timer_key, fire_at) VALUES (c_run[i], o_text[op], o_a[op]);
            WHEN 10 THEN
                DELETE FROM timers WHERE run_id = c_run[i] AND timer_key = o_text[op];
            WHEN 12 THEN
                UPDATE activity_tasks SET visible_at = o_c[op]
                WHERE run_id = c_run[i] AND scheduled_event_id = o_a[op] AND lease_id IS NULL;
            WHEN 11 THEN
                DELETE FROM activity_tasks WHERE run_id = c_run[i];
                DELETE FROM timers WHERE run_id = c_run[i];
            END CASE;
            IF failed IS NOT NULL THEN
                RAISE EXCEPTION USING ERRCODE = 'MX001', MESSAGE = 'martix: change refused',
                    DETAIL = c_change[i] || ' ' || failed;
            END IF;
            op := op + 1;
        END LOOP;
    END LOOP;
    -- Arrays are unnested in the select list (a ProjectSet), not in FROM: a multi-argument
    -- unnest in FROM fills a tuplestore, whose allocation and release made glibc grow and trim
    -- the backend's heap on every call.
    IF cardinality(h_checkpoint) > 0 THEN
        INSERT INTO history_events (run_id, event_id, last_event_id, data)
        SELECT c_run[u.cp], u.f, u.l, u.d
        FROM (SELECT unnest(h_checkpoint) AS cp, unnest(h_first) AS f, unnest(h_last) AS l,
            unnest(h_data) AS d) AS u
        WHERE outcome[u.cp] = 0;
    END IF;
    IF cardinality(x_checkpoint) > 0 THEN
        INSERT INTO outbox (event_id, shard, namespace, subject, workflow_type, run_id, sequence,
            event_type, occurred_at, body)
        SELECT u.e, u.s, c_namespace[u.cp], u.subj, u.wt, u.r, u.seq, u.et, u.o, u.b
        FROM (SELECT unnest(x_checkpoint) AS cp, unnest(x_event_id) AS e, unnest(x_shard) AS s,
            unnest(x_subject) AS subj, unnest(x_workflow_type) AS wt, unnest(x_run) AS r,
            unnest(x_sequence) AS seq, unnest(x_event_type) AS et, unnest(x_occurred) AS o,
            unnest(x_body) AS b) AS u
        WHERE outcome[u.cp] = 0;
    END IF;
    IF cardinality(t_checkpoint) > 0 THEN
        INSERT INTO activity_tasks (run_id, scheduled_event_id, namespace, task_queue, attempt,
            visible_at, lease_id, lease_until, lease_ms, info, heartbeat_details, heartbeat_ms,
            started_at)
        SELECT c_run[u.cp], u.sched, c_namespace[u.cp], u.q, u.a, u.v, u.li, u.lu, u.lm, u.info,
            u.det, u.hb, u.st
        FROM (SELECT unnest(t_checkpoint) AS cp, unnest(t_in_place) AS ip,
            unnest(t_sched) AS sched, unnest(t_queue) AS q, unnest(t_attempt) AS a,
            unnest(t_visible) AS v, unnest(t_lease_id) AS li, unnest(t_lease_until) AS lu,
            unnest(t_lease_ms) AS lm, unnest(t_info) AS info, unnest(t_details) AS det,
            unnest(t_heartbeat_ms) AS hb, unnest(t_started) AS st) AS u
        WHERE NOT u.ip AND outcome[u.cp] = 0;
    END IF;
    RETURN outcome;
END
$$;
