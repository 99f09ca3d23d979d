-- The fraud velocity rule's order attempts are kept a day (a retried `price_order` within it
-- gets the same answer); each new attempt deletes up to two older than that, oldest first, so
-- the table holds about a day of orders at any steady rate. This index finds them.
CREATE INDEX order_attempts_by_time ON order_attempts (at);
