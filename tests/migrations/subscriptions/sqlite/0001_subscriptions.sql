-- The subscriptions read model (the tests crate's second domain): one row per subscription,
-- folded from the events of the `subscription` workflow by the `subscriptions` projection,
-- and the ids of the events folded, so that an event delivered again is skipped.
CREATE TABLE subscriptions (
    namespace TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    customer TEXT NOT NULL,
    plan TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    status TEXT NOT NULL,
    renewals INTEGER NOT NULL,
    charged_cents INTEGER NOT NULL,
    last_charge_id TEXT,
    reason TEXT,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_event_id TEXT NOT NULL,
    last_sequence INTEGER NOT NULL,
    PRIMARY KEY (namespace, subscription_id)
);

CREATE TABLE subscription_events (
    event_id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_type TEXT NOT NULL
);

CREATE INDEX subscription_events_by_subscription
    ON subscription_events (namespace, subscription_id, sequence);
