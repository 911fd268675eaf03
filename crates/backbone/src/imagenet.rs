//! The 1000 ImageNet-1k class names, in torchvision's order and spelling
//! (from torchvision's `_IMAGENET_CATEGORIES`, BSD-3-Clause).

use std::sync::OnceLock;

const RAW: &str = include_str!("imagenet_classes.txt");

/// The class names, index = ImageNet class id.
pub fn class_names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| RAW.lines().collect())
}

/// The name of one class, or `class N` for an index outside 0..1000.
pub fn class_name(index: usize) -> String {
    class_names()
        .get(index)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("class {index}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousand_names_with_daisy_at_985() {
        let names = super::class_names();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench");
        assert_eq!(names[985], "daisy");
    }
}
