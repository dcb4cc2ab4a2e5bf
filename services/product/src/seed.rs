//! The demo catalog behind `shopmesh seed`: a category tree with a few hundred products with
//! generated but plausible names, descriptions, prices and stock levels.
//!
//! Generation is deterministic (a fixed pseudo-random sequence per category), and products are
//! upserted by SKU through the import use case, so a second run finds every product unchanged
//! and writes nothing. Stock is only set when a product is created.

use std::fmt;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::domain::{Actor, ProductDraft};
use crate::service::{BatchOutcome, CatalogService, ImportRowDraft};

/// What a seed run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub categories: usize,
    pub products_created: usize,
    pub products_updated: usize,
    pub products_unchanged: usize,
}

impl SeedReport {
    pub fn products(&self) -> usize {
        self.products_created + self.products_updated + self.products_unchanged
    }
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} categories, {} products ({} created, {} updated, {} unchanged)",
            self.categories,
            self.products(),
            self.products_created,
            self.products_updated,
            self.products_unchanged
        )
    }
}

/// A leaf category and what its products look like.
struct Leaf {
    name: &'static str,
    slug: &'static str,
    /// SKU prefix.
    code: &'static str,
    count: usize,
    brands: &'static [&'static str],
    adjectives: &'static [&'static str],
    nouns: &'static [&'static str],
    features: &'static [&'static str],
    /// Price range in cents.
    price: (i64, i64),
}

struct Root {
    name: &'static str,
    slug: &'static str,
    leaves: &'static [Leaf],
}

const COLOURS: &[&str] = &[
    "black",
    "white",
    "slate grey",
    "navy",
    "forest green",
    "crimson",
    "sand",
    "ocean blue",
];

const CATALOG: &[Root] = &[
    Root {
        name: "Electronics",
        slug: "electronics",
        leaves: &[
            Leaf {
                name: "Headphones",
                slug: "headphones",
                code: "HEAD",
                count: 24,
                brands: &["Sonora", "Auralis", "Beatwave", "Quietline"],
                adjectives: &[
                    "Wireless",
                    "Noise-Cancelling",
                    "Over-Ear",
                    "Studio",
                    "Sport",
                ],
                nouns: &["Headphones", "Earbuds", "Headset"],
                features: &[
                    "Up to 30 hours of battery life on a single charge",
                    "Active noise cancellation that adapts to your surroundings",
                    "Memory-foam ear cushions for all-day comfort",
                    "Bluetooth 5.3 with multipoint pairing",
                    "Fast charging: ten minutes gives three hours of playback",
                ],
                price: (2999, 34999),
            },
            Leaf {
                name: "Smartphones",
                slug: "smartphones",
                code: "PHON",
                count: 18,
                brands: &["Nimbus", "Corefone", "Pixelon"],
                adjectives: &["Pro", "Lite", "Max", "Mini", "Ultra"],
                nouns: &["Smartphone", "Phone"],
                features: &[
                    "A 6.1-inch OLED display with a 120 Hz refresh rate",
                    "Triple camera with optical zoom and night mode",
                    "All-day battery and 45 W wired charging",
                    "Water and dust resistant to IP68",
                ],
                price: (19999, 129999),
            },
            Leaf {
                name: "Laptops",
                slug: "laptops",
                code: "LAPT",
                count: 16,
                brands: &["Vertex", "Orbit", "Lumen"],
                adjectives: &["Ultrabook", "Gaming", "Business", "Convertible", "Creator"],
                nouns: &["Laptop", "Notebook"],
                features: &[
                    "A 14-inch display with accurate colours",
                    "16 GB of memory and a fast 1 TB SSD",
                    "A backlit keyboard and a glass trackpad",
                    "Weighs just 1.2 kg",
                ],
                price: (49999, 249999),
            },
            Leaf {
                name: "Smart Home",
                slug: "smart-home",
                code: "SMRT",
                count: 20,
                brands: &["Homely", "Brightnest", "Casa"],
                adjectives: &["Smart", "Wi-Fi", "Voice-Controlled", "Motion-Sensing"],
                nouns: &[
                    "Speaker",
                    "Plug",
                    "Bulb",
                    "Thermostat",
                    "Doorbell",
                    "Camera",
                ],
                features: &[
                    "Works with every major voice assistant",
                    "Set up in minutes from the app",
                    "Schedules and scenes that run on their own",
                    "Energy reports that help you save",
                ],
                price: (1499, 24999),
            },
        ],
    },
    Root {
        name: "Home & Kitchen",
        slug: "home-kitchen",
        leaves: &[
            Leaf {
                name: "Cookware",
                slug: "cookware",
                code: "COOK",
                count: 22,
                brands: &["Ferro", "Chefline", "Copperleaf"],
                adjectives: &["Cast-Iron", "Non-Stick", "Stainless Steel", "Enamelled"],
                nouns: &["Frying Pan", "Saucepan", "Dutch Oven", "Wok", "Stockpot"],
                features: &[
                    "Even heating on gas, electric and induction hobs",
                    "Oven safe up to 260 °C",
                    "A stay-cool riveted handle",
                    "Dishwasher safe",
                ],
                price: (1999, 19999),
            },
            Leaf {
                name: "Coffee & Tea",
                slug: "coffee-tea",
                code: "COFF",
                count: 20,
                brands: &["Barista Co", "Morning Ritual", "Kettleworks"],
                adjectives: &["Pour-Over", "Espresso", "Electric", "Glass", "Cold Brew"],
                nouns: &[
                    "Coffee Maker",
                    "Grinder",
                    "Kettle",
                    "Teapot",
                    "French Press",
                ],
                features: &[
                    "Brews a full carafe in under five minutes",
                    "Precise temperature control for tea and coffee",
                    "Conical burrs with 40 grind settings",
                    "Borosilicate glass that will not stain",
                ],
                price: (1499, 59999),
            },
            Leaf {
                name: "Furniture",
                slug: "furniture",
                code: "FURN",
                count: 14,
                brands: &["Nordholm", "Oakridge", "Loft & Co"],
                adjectives: &["Oak", "Walnut", "Minimalist", "Upholstered", "Folding"],
                nouns: &["Desk", "Bookshelf", "Armchair", "Side Table", "Bench"],
                features: &[
                    "Solid wood from sustainably managed forests",
                    "Assembles in twenty minutes with one tool",
                    "Scratch-resistant lacquered finish",
                ],
                price: (4999, 89999),
            },
        ],
    },
    Root {
        name: "Sports & Outdoors",
        slug: "sports-outdoors",
        leaves: &[
            Leaf {
                name: "Running",
                slug: "running",
                code: "RUNN",
                count: 24,
                brands: &["Stride", "Trailblaze", "Pacer"],
                adjectives: &["Trail", "Road", "Lightweight", "Cushioned", "Racing"],
                nouns: &[
                    "Running Shoes",
                    "Running Jacket",
                    "Running Shorts",
                    "Hydration Vest",
                ],
                features: &[
                    "Breathable mesh upper",
                    "Responsive foam midsole for long runs",
                    "Reflective details for running after dark",
                    "Grippy outsole for wet and rocky trails",
                ],
                price: (2499, 18999),
            },
            Leaf {
                name: "Camping",
                slug: "camping",
                code: "CAMP",
                count: 18,
                brands: &["Basecamp", "Northstar", "Wildroot"],
                adjectives: &["Ultralight", "Waterproof", "Four-Season", "Compact"],
                nouns: &[
                    "Tent",
                    "Sleeping Bag",
                    "Camping Stove",
                    "Headlamp",
                    "Backpack",
                ],
                features: &[
                    "Packs down smaller than a water bottle",
                    "Rated for nights down to -5 °C",
                    "Pitches in under three minutes",
                    "Seam-sealed against heavy rain",
                ],
                price: (1999, 49999),
            },
            Leaf {
                name: "Cycling",
                slug: "cycling",
                code: "CYCL",
                count: 16,
                brands: &["Velo", "Chainline", "Spoke & Co"],
                adjectives: &["Carbon", "Aero", "Commuter", "Gravel", "LED"],
                nouns: &[
                    "Helmet",
                    "Bike Light",
                    "Cycling Jersey",
                    "Saddle",
                    "Bike Lock",
                ],
                features: &[
                    "Certified to EN 1078",
                    "USB-C rechargeable",
                    "Aerodynamic shape tested in the wind tunnel",
                    "Fits every standard seat post",
                ],
                price: (1499, 29999),
            },
        ],
    },
    Root {
        name: "Clothing",
        slug: "clothing",
        leaves: &[
            Leaf {
                name: "Jackets",
                slug: "jackets",
                code: "JACK",
                count: 18,
                brands: &["Harbour", "Fjellwear", "Urbanite"],
                adjectives: &["Down", "Rain", "Softshell", "Quilted", "Denim"],
                nouns: &["Jacket", "Parka", "Anorak", "Gilet"],
                features: &[
                    "Windproof and water repellent",
                    "Recycled insulation that stays warm when wet",
                    "Two zipped hand pockets and an inner pocket",
                    "Packs into its own pocket",
                ],
                price: (4999, 39999),
            },
            Leaf {
                name: "T-Shirts",
                slug: "t-shirts",
                code: "TSHI",
                count: 20,
                brands: &["Basics Lab", "Cotton Club", "Everyday"],
                adjectives: &[
                    "Organic Cotton",
                    "Merino",
                    "Oversized",
                    "Slim-Fit",
                    "Striped",
                ],
                nouns: &["T-Shirt", "Long-Sleeve Tee", "Polo Shirt", "Tank Top"],
                features: &[
                    "Soft, pre-shrunk organic cotton",
                    "Odour-resistant merino wool",
                    "Reinforced seams that keep their shape",
                ],
                price: (999, 5999),
            },
            Leaf {
                name: "Footwear",
                slug: "footwear",
                code: "SHOE",
                count: 18,
                brands: &["Cobbler & Sons", "Sidewalk", "Alpine Step"],
                adjectives: &["Leather", "Suede", "Canvas", "Waterproof", "Hiking"],
                nouns: &["Boots", "Sneakers", "Loafers", "Sandals"],
                features: &[
                    "Full-grain leather upper",
                    "Removable cushioned insole",
                    "Vibram rubber outsole",
                    "Hand-stitched in Portugal",
                ],
                price: (3999, 24999),
            },
        ],
    },
    Root {
        name: "Books",
        slug: "books",
        leaves: &[
            Leaf {
                name: "Fiction",
                slug: "fiction",
                code: "FICT",
                count: 16,
                brands: &["Harrow Press", "Lantern Books", "Quill House"],
                adjectives: &[
                    "The Silent",
                    "The Last",
                    "A Distant",
                    "The Hidden",
                    "The Long",
                ],
                nouns: &["Harbour", "Winter", "Garden", "River", "Kingdom", "Summer"],
                features: &[
                    "A gripping debut novel",
                    "Winner of a national book prize",
                    "Now in paperback with a new afterword",
                ],
                price: (899, 2999),
            },
            Leaf {
                name: "Cookbooks",
                slug: "cookbooks",
                code: "CKBK",
                count: 12,
                brands: &["Harrow Press", "Saffron Books"],
                adjectives: &[
                    "Weeknight",
                    "Plant-Based",
                    "Mediterranean",
                    "One-Pot",
                    "Baking",
                ],
                nouns: &["Cookbook", "Kitchen Handbook", "Recipe Collection"],
                features: &[
                    "More than 100 tested recipes",
                    "Step-by-step photographs for every dish",
                    "Meals ready in 30 minutes or less",
                ],
                price: (1499, 4499),
            },
        ],
    },
    Root {
        name: "Toys & Games",
        slug: "toys-games",
        leaves: &[
            Leaf {
                name: "Board Games",
                slug: "board-games",
                code: "GAME",
                count: 18,
                brands: &["Meeple Works", "Dice Tower", "Tabletop Co"],
                adjectives: &[
                    "Strategy",
                    "Cooperative",
                    "Family",
                    "Party",
                    "Deck-Building",
                ],
                nouns: &["Board Game", "Card Game", "Dice Game"],
                features: &[
                    "For 2 to 5 players, ages 10 and up",
                    "Games last 30 to 60 minutes",
                    "Easy to learn, hard to master",
                ],
                price: (1499, 7999),
            },
            Leaf {
                name: "Building Sets",
                slug: "building-sets",
                code: "BILD",
                count: 14,
                brands: &["Brickhaus", "Constructo"],
                adjectives: &["Space", "Castle", "City", "Robot", "Pirate Ship"],
                nouns: &["Building Set", "Construction Kit"],
                features: &[
                    "Over 500 pieces",
                    "Compatible with all major brick brands",
                    "Illustrated step-by-step instructions",
                ],
                price: (1999, 14999),
            },
        ],
    },
];

/// SplitMix64: a tiny, stable pseudo-random sequence (the demo data must not change when a
/// dependency's generator does).
struct SplitMix(u64);

impl SplitMix {
    fn for_slug(slug: &str) -> Self {
        let seed = slug.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        let index = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        items[index]
    }
}

/// The demo products of one leaf category.
fn leaf_products(leaf: &Leaf, category_id: Uuid) -> Vec<ImportRowDraft> {
    let mut rng = SplitMix::for_slug(leaf.slug);
    (1..=leaf.count)
        .map(|n| {
            let brand = rng.pick(leaf.brands);
            let adjective = rng.pick(leaf.adjectives);
            let noun = rng.pick(leaf.nouns);
            let colour = rng.pick(COLOURS);
            let name = format!("{brand} {adjective} {noun}");
            let first = rng.pick(leaf.features);
            let second = rng.pick(leaf.features);
            let description = if first == second {
                format!("The {name} in {colour}. {first}.")
            } else {
                format!("The {name} in {colour}. {first}. {second}.")
            };
            let (low, high) = leaf.price;
            let span = u64::try_from(high - low).unwrap_or(1);
            let raw = low + i64::try_from(rng.below(span)).unwrap_or(0);
            // Shop prices end in .99.
            let price = (raw / 100) * 100 + 99;
            // One product in ten is sold out, the rest have between 1 and 250 units.
            let stock = if rng.below(10) == 0 {
                0
            } else {
                1 + i32::try_from(rng.below(250)).unwrap_or(0)
            };
            let sku = format!("{}-{n:04}", leaf.code);
            let mut attributes = Map::new();
            attributes.insert("brand".into(), Value::String(brand.into()));
            attributes.insert("colour".into(), Value::String(colour.into()));
            ImportRowDraft {
                row_number: i64::try_from(n).unwrap_or(0),
                draft: ProductDraft {
                    image_urls: vec![format!(
                        "https://images.shopmesh.example/products/{}.jpg",
                        sku.to_lowercase()
                    )],
                    sku,
                    name,
                    description,
                    category_id: category_id.to_string(),
                    price_amount_minor: price,
                    price_currency: "USD".into(),
                    attributes,
                    active: true,
                },
                initial_stock: stock,
                edge_errors: Vec::new(),
            }
        })
        .collect()
}

/// How many products the demo catalog holds.
pub fn demo_product_count() -> usize {
    CATALOG
        .iter()
        .flat_map(|root| root.leaves.iter())
        .map(|leaf| leaf.count)
        .sum()
}

/// Loads the demo catalog through the import use case, showing a progress bar.
pub async fn seed_catalog(catalog: &Arc<CatalogService>) -> anyhow::Result<SeedReport> {
    let actor = Actor {
        user_id: None,
        correlation_id: "seed".into(),
    };
    let bar = ProgressBar::new(demo_product_count() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} seeding {msg:<14} [{bar:40}] {pos}/{len}")
            .map_err(|err| anyhow::anyhow!("progress bar template: {err}"))?
            .progress_chars("=> "),
    );
    let mut report = SeedReport::default();
    for root in CATALOG {
        let parent = catalog.ensure_category(root.name, root.slug, None).await?;
        report.categories += 1;
        for leaf in root.leaves {
            bar.set_message(leaf.name);
            let category = catalog
                .ensure_category(leaf.name, leaf.slug, Some(parent.id))
                .await?;
            report.categories += 1;
            let rows = leaf_products(leaf, category.id);
            match catalog.import_batch(&rows, &actor).await? {
                BatchOutcome::Committed(counts) => {
                    report.products_created += counts.created;
                    report.products_updated += counts.updated;
                    report.products_unchanged += counts.unchanged;
                }
                BatchOutcome::Rejected(errors) => {
                    bar.abandon();
                    anyhow::bail!("demo data for {} was rejected: {errors:?}", leaf.slug);
                }
            }
            bar.inc(rows.len() as u64);
        }
    }
    bar.finish_with_message("done");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, ProductFields, Sku};

    #[test]
    fn demo_data_is_valid_deterministic_and_unique() {
        let mut skus = std::collections::HashSet::new();
        for leaf in CATALOG.iter().flat_map(|root| root.leaves.iter()) {
            let id = Uuid::nil();
            let first = leaf_products(leaf, id);
            let again = leaf_products(leaf, id);
            for (a, b) in first.iter().zip(&again) {
                assert_eq!(a.draft.name, b.draft.name);
                assert_eq!(a.draft.price_amount_minor, b.draft.price_amount_minor);
                assert!(skus.insert(Sku::parse(&a.draft.sku).unwrap()));
                ProductFields::parse(&a.draft, Currency::USD).unwrap();
                assert_eq!(a.draft.price_amount_minor % 100, 99);
            }
        }
        assert_eq!(skus.len(), demo_product_count());
        assert!((300..=500).contains(&demo_product_count()));
    }
}
