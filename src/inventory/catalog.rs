//! The catalog: products by SKU, with a GTIN index so a register that scans barcodes finds the
//! same product. A GTIN belongs to at most one product (claimed with `Expect::Absent`).

use std::sync::Arc;

use crate::audit::{Action, Actor, Event};
use crate::clock::Clock;
use crate::domain::product::{self, Product, ProductInput};
use crate::store::{ChangeSet, Expect, Sealing, Store, Table};

use super::InventoryError;

pub const PRODUCTS: Table = Table::new("products");
pub const PRODUCT_GTINS: Table = Table::new("product_gtins");

/// Most products one list answer holds.
pub const MAX_PAGE: usize = 200;

/// The catalog service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Store,
    clock: Arc<dyn Clock>,
}

/// One page of the product list.
#[derive(Debug, Clone)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// The SKU to continue after, when there is more.
    pub next_cursor: Option<String>,
}

/// What the product list keeps; empty fields keep everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFilter {
    /// Part of the SKU, GTIN, name, brand or category, any case.
    pub query: String,
    /// The brand, whole, any case.
    pub brand: String,
    /// The category, whole, any case.
    pub category: String,
    /// Only protected (`Some(true)`) or only unprotected (`Some(false)`) products.
    pub protected: Option<bool>,
}

impl ProductFilter {
    fn normalised(&self) -> Self {
        Self {
            query: self.query.trim().to_lowercase(),
            brand: self.brand.trim().to_lowercase(),
            category: self.category.trim().to_lowercase(),
            protected: self.protected,
        }
    }

    /// Whether a product passes; `self` is normalised (trimmed, lower case).
    fn matches(&self, p: &Product) -> bool {
        let hay = [
            p.sku.as_str(),
            p.gtin.as_deref().unwrap_or_default(),
            p.name.as_str(),
            p.brand.as_str(),
            p.category.as_str(),
        ];
        (self.query.is_empty() || hay.iter().any(|h| h.to_lowercase().contains(&self.query)))
            && (self.brand.is_empty() || p.brand.to_lowercase() == self.brand)
            && (self.category.is_empty() || p.category.to_lowercase() == self.category)
            && self
                .protected
                .is_none_or(|protected| p.protected == protected)
    }
}

impl Catalog {
    #[must_use]
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    /// The product with this SKU.
    pub fn get(&self, sku: &str) -> Result<Option<Product>, InventoryError> {
        Ok(self.store.get_json(PRODUCTS, sku.as_bytes())?)
    }

    /// The SKU a register's item id stands for: the SKU itself, or the product holding it as
    /// GTIN (also tried without leading zeros padding, as GTIN-14).
    pub fn find_item(&self, item_id: &str) -> Result<Option<String>, InventoryError> {
        if self.store.contains(PRODUCTS, item_id.as_bytes())? {
            return Ok(Some(item_id.to_owned()));
        }
        if !item_id.is_empty() && item_id.bytes().all(|b| b.is_ascii_digit()) {
            let bare = item_id.trim_start_matches('0');
            for candidate in [8usize, 12, 13, 14]
                .iter()
                .filter(|len| **len >= bare.len())
                .map(|len| format!("{bare:0>len$}"))
            {
                if let Some(sku) = self.store.get(PRODUCT_GTINS, candidate.as_bytes())? {
                    return Ok(Some(String::from_utf8_lossy(&sku).into_owned()));
                }
            }
        }
        Ok(None)
    }

    /// Products whose SKU, GTIN, name, brand or category contains `query` (any case), by SKU,
    /// after the SKU `cursor`.
    pub fn list(
        &self,
        query: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ProductPage, InventoryError> {
        let filter = ProductFilter {
            query: query.to_owned(),
            ..ProductFilter::default()
        };
        self.list_matching(&filter, cursor, limit, |_| Ok(true))
    }

    /// Products that pass `filter` and `also` (a check the catalog cannot make itself, such as
    /// stock at a location), by SKU, after the SKU `cursor`.
    // Limitation: the list reads every product (no secondary index); fine for catalogs of some
    // ten thousand SKUs, slow beyond.
    pub fn list_matching(
        &self,
        filter: &ProductFilter,
        cursor: Option<&str>,
        limit: usize,
        mut also: impl FnMut(&Product) -> Result<bool, InventoryError>,
    ) -> Result<ProductPage, InventoryError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let filter = filter.normalised();
        let mut items = Vec::new();
        let mut next_cursor = None;
        for (_, p) in self.store.scan_json::<Product>(PRODUCTS)? {
            if cursor.is_some_and(|after| p.sku.as_str() <= after)
                || !filter.matches(&p)
                || !also(&p)?
            {
                continue;
            }
            if items.len() == limit {
                next_cursor = items.last().map(|p: &Product| p.sku.clone());
                break;
            }
            items.push(p);
        }
        Ok(ProductPage { items, next_cursor })
    }

    /// The brands and the categories in use, each sorted, for filter menus.
    pub fn facets(&self) -> Result<(Vec<String>, Vec<String>), InventoryError> {
        let mut brands = std::collections::BTreeSet::new();
        let mut categories = std::collections::BTreeSet::new();
        for (_, p) in self.store.scan_json::<Product>(PRODUCTS)? {
            if !p.brand.is_empty() {
                brands.insert(p.brand);
            }
            if !p.category.is_empty() {
                categories.insert(p.category);
            }
        }
        Ok((
            brands.into_iter().collect(),
            categories.into_iter().collect(),
        ))
    }

    /// Creates or replaces a product; returns it and whether it was new. The audit entry
    /// (`product.created`, or `product.updated` naming the changed fields) lands with it. An
    /// unchanged product writes nothing.
    pub async fn put(
        &self,
        sku: &str,
        input: ProductInput,
        actor: Actor,
    ) -> Result<(Product, bool), InventoryError> {
        let now = self.clock.now();
        let existing = self.get(sku.trim())?;
        let created_at = existing.as_ref().map_or(now, |p| p.created_at);
        let mut product = input
            .clean(sku, created_at, now)
            .map_err(InventoryError::Invalid)?;
        let mut set = ChangeSet::new();
        let (action, fields, expect) = match &existing {
            Some(old) => {
                let fields = product::changed_fields(old, &product);
                if fields.is_empty() {
                    return Ok((old.clone(), false));
                }
                (Action::ProductUpdated, fields, Expect::Present)
            }
            None => (Action::ProductCreated, Vec::new(), Expect::Absent),
        };
        let old_gtin = existing.as_ref().and_then(|p| p.gtin.clone());
        if product.gtin != old_gtin {
            if let Some(old) = &old_gtin {
                set.delete(PRODUCT_GTINS, old.as_bytes().to_vec());
            }
            if let Some(gtin) = &product.gtin {
                if let Some(owner) = self.store.get(PRODUCT_GTINS, gtin.as_bytes())? {
                    return Err(InventoryError::GtinTaken {
                        gtin: gtin.clone(),
                        sku: String::from_utf8_lossy(&owner).into_owned(),
                    });
                }
                set.insert_new(
                    PRODUCT_GTINS,
                    gtin.as_bytes().to_vec(),
                    product.sku.as_bytes().to_vec(),
                );
            }
        }
        product.updated_at = now;
        set.put_with(
            PRODUCTS,
            product.sku.as_bytes().to_vec(),
            Store::json(&product)?,
            Sealing::DataKey,
            expect,
        );
        Event::new(action)
            .by(actor)
            .target("product", &product.sku)
            .fields(fields)
            .add_to(&mut set);
        self.store.commit(set).await?;
        Ok((product, existing.is_none()))
    }
}
