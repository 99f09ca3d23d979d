-- The orders read model (CQRS), kept by the orders projection from the events the order saga
-- publishes; the write side never reads it. (Version 7: it was part of the engine's 0007
-- before each owner kept its own migrations.)
CREATE TABLE orders (
    namespace TEXT NOT NULL,
    order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    step TEXT NOT NULL,
    currency TEXT NOT NULL,
    items TEXT NOT NULL,
    subtotal_cents INTEGER NOT NULL,
    discount_cents INTEGER NOT NULL,
    tax_cents INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    charged_cents INTEGER NOT NULL,
    refunded_cents INTEGER NOT NULL,
    shipment TEXT,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    PRIMARY KEY (namespace, order_id)
);
CREATE INDEX orders_by_created ON orders (namespace, created_at DESC, order_id DESC);
CREATE INDEX orders_by_customer ON orders (namespace, customer_id, created_at DESC, order_id DESC);
CREATE INDEX orders_by_status ON orders (namespace, status, created_at DESC, order_id DESC);

CREATE TABLE order_events (
    event_id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    order_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX order_events_by_order ON order_events (namespace, order_id, sequence);
