//! The product catalogue: 10 categories × 20 products = 200 products.
//!
//! The catalogue is the same whatever the seed (it is built from a fixed
//! internal seed), so product ids and SKUs are stable across data sets.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct CategorySpec {
    name: &'static str,
    slug: &'static str,
    code: &'static str,
    /// Price range in whole currency units.
    min_price: u32,
    max_price: u32,
    adjectives: [&'static str; 4],
    nouns: [&'static str; 5],
}

const CATEGORIES: [CategorySpec; 10] = [
    CategorySpec {
        name: "Electronics",
        slug: "electronics",
        code: "ELE",
        min_price: 19,
        max_price: 899,
        adjectives: ["Wireless", "Smart", "Compact", "Pro"],
        nouns: ["Headphones", "Speaker", "Charger", "Smartwatch", "Camera"],
    },
    CategorySpec {
        name: "Home & Kitchen",
        slug: "home-kitchen",
        code: "HOM",
        min_price: 9,
        max_price: 349,
        adjectives: ["Ceramic", "Stainless", "Nordic", "Classic"],
        nouns: ["Kettle", "Pan Set", "Knife Block", "Coffee Maker", "Lamp"],
    },
    CategorySpec {
        name: "Beauty",
        slug: "beauty",
        code: "BEA",
        min_price: 5,
        max_price: 120,
        adjectives: ["Organic", "Hydrating", "Matte", "Radiant"],
        nouns: ["Face Cream", "Lipstick", "Serum", "Shampoo", "Perfume"],
    },
    CategorySpec {
        name: "Sports & Outdoors",
        slug: "sports-outdoors",
        code: "SPO",
        min_price: 12,
        max_price: 499,
        adjectives: ["Trail", "Ultralight", "Waterproof", "Team"],
        nouns: [
            "Backpack",
            "Tent",
            "Yoga Mat",
            "Bike Helmet",
            "Water Bottle",
        ],
    },
    CategorySpec {
        name: "Books",
        slug: "books",
        code: "BOO",
        min_price: 6,
        max_price: 45,
        adjectives: ["Illustrated", "Pocket", "Collector's", "Annotated"],
        nouns: ["Novel", "Cookbook", "Travel Guide", "Comic", "Biography"],
    },
    CategorySpec {
        name: "Toys & Games",
        slug: "toys-games",
        code: "TOY",
        min_price: 8,
        max_price: 150,
        adjectives: ["Wooden", "Magnetic", "Family", "Deluxe"],
        nouns: ["Puzzle", "Board Game", "Building Set", "Plush", "Train Set"],
    },
    CategorySpec {
        name: "Fashion",
        slug: "fashion",
        code: "FAS",
        min_price: 15,
        max_price: 260,
        adjectives: ["Linen", "Wool", "Slim", "Oversized"],
        nouns: ["Shirt", "Sweater", "Jacket", "Dress", "Jeans"],
    },
    CategorySpec {
        name: "Shoes",
        slug: "shoes",
        code: "SHO",
        min_price: 29,
        max_price: 220,
        adjectives: ["Leather", "Running", "Canvas", "Suede"],
        nouns: ["Sneakers", "Boots", "Loafers", "Sandals", "Trainers"],
    },
    CategorySpec {
        name: "Grocery",
        slug: "grocery",
        code: "GRO",
        min_price: 2,
        max_price: 40,
        adjectives: ["Fair Trade", "Artisan", "Gluten-Free", "Premium"],
        nouns: ["Coffee Beans", "Olive Oil", "Chocolate", "Tea Box", "Honey"],
    },
    CategorySpec {
        name: "Garden",
        slug: "garden",
        code: "GAR",
        min_price: 7,
        max_price: 399,
        adjectives: ["Solar", "Foldable", "Heavy-Duty", "Terracotta"],
        nouns: ["Planter", "Hose", "Garden Chair", "Lantern", "Pruner"],
    },
];

/// Number of categories in the catalogue.
pub(crate) const CATEGORY_COUNT: usize = CATEGORIES.len();

/// One catalogue product.
#[derive(Debug, Clone)]
pub(crate) struct Product {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub slug: String,
    pub category: usize,
    pub price_cents: u64,
}

impl Product {
    pub(crate) fn category_name(&self) -> &'static str {
        CATEGORIES[self.category].name
    }
}

/// The fixed product catalogue.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    pub products: Vec<Product>,
}

pub(crate) const PER_CATEGORY: usize = 20;

impl Catalog {
    pub(crate) fn new() -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(0x0C47_A106);
        let mut products = Vec::with_capacity(CATEGORIES.len() * PER_CATEGORY);
        for (c, spec) in CATEGORIES.iter().enumerate() {
            for j in 0..PER_CATEGORY {
                let adjective = spec.adjectives[j % 4];
                let noun = spec.nouns[j / 4];
                let name = format!("{adjective} {noun}");
                let n = products.len() + 1;
                let slug = format!(
                    "{}-{n}",
                    name.to_ascii_lowercase()
                        .replace(['\'', ' '], "-")
                        .replace("--", "-")
                );
                let whole = rng.random_range(spec.min_price..=spec.max_price);
                let cents = [99u64, 90, 49, 0, 95][rng.random_range(0..5usize)];
                products.push(Product {
                    id: format!("prd_{n:04}"),
                    sku: format!("KS-{}-{:04}", spec.code, 1000 + n),
                    name,
                    slug,
                    category: c,
                    price_cents: u64::from(whole) * 100 + cents,
                });
            }
        }
        Self { products }
    }

    pub(crate) fn category_name(category: usize) -> &'static str {
        CATEGORIES[category].name
    }

    pub(crate) fn category_slug(category: usize) -> &'static str {
        CATEGORIES[category].slug
    }

    /// Nouns of a category, used as search queries.
    pub(crate) fn category_nouns(category: usize) -> &'static [&'static str; 5] {
        &CATEGORIES[category].nouns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_ten_categories_and_two_hundred_unique_products() {
        let c = Catalog::new();
        assert_eq!(c.products.len(), 200);
        let skus: std::collections::BTreeSet<_> = c.products.iter().map(|p| &p.sku).collect();
        let ids: std::collections::BTreeSet<_> = c.products.iter().map(|p| &p.id).collect();
        assert_eq!(skus.len(), 200);
        assert_eq!(ids.len(), 200);
        let cats: std::collections::BTreeSet<_> = c.products.iter().map(|p| p.category).collect();
        assert_eq!(cats.len(), 10);
        assert!(c.products.iter().all(|p| p.price_cents > 0));
    }

    #[test]
    fn catalog_is_independent_of_anything_else() {
        let a = Catalog::new();
        let b = Catalog::new();
        assert_eq!(
            a.products.iter().map(|p| p.price_cents).collect::<Vec<_>>(),
            b.products.iter().map(|p| p.price_cents).collect::<Vec<_>>()
        );
    }
}
