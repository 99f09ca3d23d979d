-- How long a namespace keeps its closed runs (with their histories) before the engine deletes
-- them: 7 days unless set (`martix namespace create|update --retention`).
ALTER TABLE namespaces ADD COLUMN retention_ms BIGINT NOT NULL DEFAULT 604800000;
