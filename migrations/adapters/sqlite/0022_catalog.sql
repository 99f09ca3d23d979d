-- The catalogue: each SKU's unit price (`martix catalog import`). price_order refuses an order
-- whose item of a listed SKU carries another price or currency; unlisted SKUs keep theirs.
CREATE TABLE catalog (
    sku TEXT PRIMARY KEY,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    currency TEXT NOT NULL,
    tax_class TEXT NOT NULL
);
