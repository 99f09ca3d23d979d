-- Search attributes: values a workflow sets (UpsertSearchAttributes) that ListWorkflows' query
-- finds runs by. One row per run and name, written with the change that set it; `kind` 1 is a
-- keyword (text_value), 2 an integer and 3 a time in ms (int_value). Deleted with the run.
CREATE TABLE search_attributes (
    run_id TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    kind SMALLINT NOT NULL,
    text_value TEXT,
    int_value BIGINT,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX search_attributes_by_text ON search_attributes (namespace, name, text_value);
CREATE INDEX search_attributes_by_int ON search_attributes (namespace, name, int_value);
