-- Workflow tasks left on a sticky queue whose worker is gone, found by their run's own queue.
CREATE INDEX executions_wft_sticky ON executions (namespace, task_queue, wft_visible_at)
    WHERE wft_queue IS NOT NULL AND wft_queue <> task_queue;
