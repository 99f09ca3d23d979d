-- Order attempts per customer, for the velocity rule of the fraud checks (price_order): one
-- row per order, recorded once, so a retried check counts the same orders.
CREATE TABLE order_attempts (
    order_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX order_attempts_by_customer ON order_attempts (customer_id, at);
