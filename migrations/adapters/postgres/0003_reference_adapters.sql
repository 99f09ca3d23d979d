-- The reference downstream systems of the order saga: stock, reservations, a payment ledger,
-- shipments and notifications. Every write is keyed by the activity's idempotency key, so a
-- retried step applies its effect once.

CREATE TABLE inventory (
    sku TEXT PRIMARY KEY,
    initial BIGINT NOT NULL,
    available BIGINT NOT NULL CHECK (available >= 0),
    reserved BIGINT NOT NULL CHECK (reserved >= 0),
    shipped BIGINT NOT NULL CHECK (shipped >= 0)
);

CREATE TABLE reservations (
    reservation_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    items TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE payments (
    payment_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0),
    currency TEXT NOT NULL,
    charge_key TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX payments_one_refund_per_charge ON payments (charge_key) WHERE kind = 'refund';
CREATE INDEX payments_by_order ON payments (order_id);

CREATE TABLE shipments (
    shipment_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    reservation_key TEXT NOT NULL,
    country TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE notifications (
    notification_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
