//! The catalogue: what each SKU costs, so that an order's unit prices are the shop's and not
//! whatever the client sent. Pure: reading a catalogue file ([`parse_csv`]) and checking an
//! order against the prices of its SKUs ([`check_prices`]); where the prices are kept is the
//! `Catalog` adapter's business (`reference` keeps them in table `catalog`).
//!
//! The catalogue is open: an item whose SKU it does not list keeps the client's price, so a
//! shop without a catalogue (or with part of one) prices orders as before. An item whose SKU
//! it lists must carry the catalogue's price in the catalogue's currency, else the order is
//! refused (`PriceMismatch`) before anything is reserved or charged.

use crate::fraud::Rejection;
use martix_order_contract::pricing::{MAX_UNIT_PRICE_CENTS, money};
use martix_order_contract::{Order, failures};
use std::collections::BTreeMap;

/// One SKU's line of the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    pub sku: String,
    /// Price of one, in cents.
    pub price_cents: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    /// The SKU's tax class (`standard`, `reduced`, ...), kept with the price for the tax
    /// rules to come; today's pricing taxes by destination country alone.
    pub tax_class: String,
}

/// A row `SELECT sku, price_cents, currency, tax_class` read.
pub(crate) type CatalogRow = (String, i64, String, String);

impl From<CatalogRow> for CatalogEntry {
    fn from((sku, price_cents, currency, tax_class): CatalogRow) -> Self {
        Self {
            sku,
            price_cents,
            currency,
            tax_class,
        }
    }
}

/// The columns of a catalogue file, in order: its header line.
pub const CSV_HEADER: [&str; 4] = ["sku", "price", "currency", "tax_class"];

/// Why a catalogue file is refused: the line (1 is the header) and the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field} {message}")]
pub struct CsvError {
    pub line: usize,
    /// The column at fault (`price`), or `line` for the line as a whole.
    pub field: &'static str,
    pub message: String,
}

/// Reads a catalogue file: a header line `sku,price,currency,tax_class`, then one SKU per
/// line. Fields are separated by commas and trimmed; quotes are not read (no field needs
/// them), so a field holding `"` is refused. A price is in units with at most two decimals
/// (`15`, `15.5`, `15.00`). Blank lines are skipped. The first fault refuses the whole file.
pub fn parse_csv(text: &str) -> Result<Vec<CatalogEntry>, CsvError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    let bad = |line, field, message: String| CsvError {
        line,
        field,
        message,
    };
    let Some((n, header)) = lines.next() else {
        return Err(bad(
            1,
            "line",
            "is missing: expected the header line".into(),
        ));
    };
    let columns: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase().replace(' ', "_"))
        .collect();
    if columns != CSV_HEADER {
        return Err(bad(
            n,
            "line",
            format!(
                "is '{header}', expected the header '{}'",
                CSV_HEADER.join(",")
            ),
        ));
    }
    let mut entries: Vec<CatalogEntry> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [sku, price, currency, tax_class] = fields[..] else {
            return Err(bad(
                n,
                "line",
                format!(
                    "has {} fields, expected 4 ({})",
                    fields.len(),
                    CSV_HEADER.join(",")
                ),
            ));
        };
        for (field, value) in CSV_HEADER.iter().zip(&fields) {
            if value.is_empty() {
                return Err(bad(n, field, "is empty".into()));
            }
            if value.contains('"') {
                return Err(bad(
                    n,
                    field,
                    "holds a quote; quoted fields are not read".into(),
                ));
            }
            if value.len() > 200 || value.chars().any(char::is_control) {
                return Err(bad(
                    n,
                    field,
                    "is longer than 200 bytes or holds control characters".into(),
                ));
            }
        }
        let price_cents = parse_price(price).ok_or_else(|| {
            bad(
                n,
                "price",
                format!("'{price}' is not an amount from 0 to 1000000 with at most two decimals"),
            )
        })?;
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(bad(
                n,
                "currency",
                format!("'{currency}' is not an ISO 4217 code (like EUR)"),
            ));
        }
        if let Some(first) = seen.insert(sku.to_owned(), n) {
            return Err(bad(
                n,
                "sku",
                format!("'{sku}' is listed on line {first} too"),
            ));
        }
        entries.push(CatalogEntry {
            sku: sku.to_owned(),
            price_cents,
            currency: currency.to_owned(),
            tax_class: tax_class.to_owned(),
        });
    }
    Ok(entries)
}

/// `15`, `15.5`, `15.05` in cents, if it is one and a unit price an order may carry (at most
/// [`MAX_UNIT_PRICE_CENTS`]).
fn parse_price(raw: &str) -> Option<i64> {
    let (units, decimals) = match raw.split_once('.') {
        Some((_, "")) => return None,
        Some(split) => split,
        None => (raw, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if units.is_empty() || units.len() > 7 || !digits(units) {
        return None;
    }
    if decimals.len() > 2 || !digits(decimals) {
        return None;
    }
    let cents = format!("{decimals:0<2}").parse::<i64>().ok()?;
    let price = units.parse::<i64>().ok()? * 100 + cents;
    (price <= MAX_UNIT_PRICE_CENTS).then_some(price)
}

/// Refuses an order with an item whose SKU the catalogue lists at another price or in another
/// currency (`PriceMismatch`, naming the first such item). Items of SKUs the catalogue does
/// not list keep their price, unless the catalogue is `closed`: then they are refused
/// (`UnknownSku`).
pub fn check_prices(
    order: &Order,
    catalog: &BTreeMap<String, CatalogEntry>,
    closed: bool,
) -> Result<(), Rejection> {
    for item in &order.items {
        let Some(listed) = catalog.get(&item.sku) else {
            if closed {
                return Err(Rejection {
                    kind: failures::UNKNOWN_SKU,
                    message: format!("sku {} is not in the catalogue", item.sku),
                });
            }
            continue;
        };
        if listed.price_cents != item.unit_price_cents || listed.currency != order.currency {
            return Err(Rejection {
                kind: failures::PRICE_MISMATCH,
                message: format!(
                    "sku {} costs {} in the catalogue, the order says {}",
                    item.sku,
                    money(listed.price_cents, &listed.currency),
                    money(item.unit_price_cents, &order.currency),
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use martix_order_contract::{Address, Item};

    fn entry(sku: &str, price_cents: i64, currency: &str) -> CatalogEntry {
        CatalogEntry {
            sku: sku.into(),
            price_cents,
            currency: currency.into(),
            tax_class: "standard".into(),
        }
    }

    #[test]
    fn a_catalogue_file_is_read_line_by_line() {
        let text = "sku,price,currency,tax class\r\n\
                    mug, 15.00 ,EUR,standard\n\
                    \n\
                    book,9.5,EUR,reduced\n\
                    pen,2,USD,standard\n";
        assert_eq!(
            parse_csv(text).unwrap(),
            [
                entry("mug", 1_500, "EUR"),
                CatalogEntry {
                    tax_class: "reduced".into(),
                    ..entry("book", 950, "EUR")
                },
                entry("pen", 200, "USD"),
            ]
        );
        assert_eq!(parse_csv("sku,price,currency,tax_class\n").unwrap(), []);
    }

    #[test]
    fn the_first_bad_line_is_named_with_its_field() {
        let header = "sku,price,currency,tax_class\n";
        let cases = [
            ("", "line 1: line is missing: expected the header line"),
            (
                "sku,price,currency\nmug,1,EUR\n",
                "line 1: line is 'sku,price,currency', expected the header \
                 'sku,price,currency,tax_class'",
            ),
            (
                "mug,1,EUR,standard,x\n",
                "line 2: line has 5 fields, expected 4 (sku,price,currency,tax_class)",
            ),
            ("mug,15,00,EUR,standard\n", "line 2: line has 5 fields"),
            ("mug,,EUR,standard\n", "line 2: price is empty"),
            ("\"mug\",1,EUR,standard\n", "line 2: sku holds a quote"),
            (
                "mug,1.5.0,EUR,standard\n",
                "line 2: price '1.5.0' is not an amount",
            ),
            (
                "mug,1.555,EUR,standard\n",
                "line 2: price '1.555' is not an amount",
            ),
            (
                "mug,-1,EUR,standard\n",
                "line 2: price '-1' is not an amount",
            ),
            (
                "mug,1.,EUR,standard\n",
                "line 2: price '1.' is not an amount",
            ),
            (
                "mug,.5,EUR,standard\n",
                "line 2: price '.5' is not an amount",
            ),
            (
                "mug,1e3,EUR,standard\n",
                "line 2: price '1e3' is not an amount",
            ),
            (
                "mug,1000000.01,EUR,standard\n",
                "line 2: price '1000000.01' is not",
            ),
            (
                "mug,1,eur,standard\n",
                "line 2: currency 'eur' is not an ISO 4217 code",
            ),
            (
                "mug,1,EUR,standard\npen,1,EUR,standard\nmug,2,EUR,standard\n",
                "line 4: sku 'mug' is listed on line 2 too",
            ),
        ];
        for (body, want) in cases {
            let text = if body.starts_with("sku,") || body.is_empty() {
                body.to_owned()
            } else {
                format!("{header}{body}")
            };
            let e = parse_csv(&text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{body:?}: {e}");
        }
        assert_eq!(parse_price("1000000"), Some(MAX_UNIT_PRICE_CENTS));
        assert_eq!(parse_price("0.05"), Some(5));
    }

    #[test]
    fn a_listed_sku_must_carry_the_catalogue_price_and_currency() {
        let catalog: BTreeMap<String, CatalogEntry> = [entry("mug", 1_500, "EUR")]
            .into_iter()
            .map(|e| (e.sku.clone(), e))
            .collect();
        let order = |currency: &str, price| Order {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            currency: currency.into(),
            items: vec![
                Item {
                    sku: "unlisted".into(),
                    qty: 1,
                    unit_price_cents: 1,
                },
                Item {
                    sku: "mug".into(),
                    qty: 2,
                    unit_price_cents: price,
                },
            ],
            shipping_address: Address::default(),
            discount_code: None,
            placed_by: None,
        };
        assert_eq!(check_prices(&order("EUR", 1_500), &catalog, false), Ok(()));
        let e = check_prices(&order("EUR", 1_400), &catalog, false).unwrap_err();
        assert_eq!(e.kind, "PriceMismatch");
        assert_eq!(
            e.message,
            "sku mug costs 15.00 EUR in the catalogue, the order says 14.00 EUR"
        );
        let e = check_prices(&order("USD", 1_500), &catalog, false).unwrap_err();
        assert_eq!(
            e.message,
            "sku mug costs 15.00 EUR in the catalogue, the order says 15.00 USD"
        );
        // Open, an unlisted SKU keeps the client's price; closed, it is refused.
        assert_eq!(
            check_prices(&order("USD", 1), &BTreeMap::new(), false),
            Ok(())
        );
        let e = check_prices(&order("EUR", 1_500), &catalog, true).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            ("UnknownSku", "sku unlisted is not in the catalogue")
        );
    }
}
