-- An operator's hold on a circuit breaker (`martix breaker open|close NAME --reason R`), over
-- what its workers report: one row per namespace and breaker while held; lifting the hold
-- deletes it. Workers learn the holds in the answer to their breaker reports.
CREATE TABLE breaker_holds (
    namespace TEXT NOT NULL,
    breaker TEXT NOT NULL,
    hold TEXT NOT NULL,
    reason TEXT NOT NULL,
    held_by TEXT NOT NULL,
    held_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, breaker)
);
