//! Byte sizes in the configuration: an integer (bytes), or text with a binary unit as the
//! configuration reference (docs/configuration.md) writes the defaults (`"64 MiB"`,
//! `"512 KiB"`, `"1 GiB"`, `"300 B"`), so that a value copied from the documentation is accepted. Environment overrides arrive as text.

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Reads `text` as a size in bytes.
pub fn parse(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().map_err(|_| format!("\"{text}\" is not a size such as 65536 or \"64 MiB\""))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit \"{other}\" in \"{text}\": use B, KiB, MiB or GiB")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("\"{text}\" is too large"))
}

/// `#[serde(deserialize_with = "…")]` for a size field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Size;
    impl Visitor<'_> for Size {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a size in bytes, or text such as \"64 MiB\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("{v} is not a size")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            parse(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Size)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sizes_as_the_readme_writes_them() {
        assert_eq!(parse("64 MiB"), Ok(64 << 20));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("512 KiB"), Ok(512 << 10));
        assert_eq!(parse("65536"), Ok(65536));
        assert_eq!(parse("1 GiB"), Ok(1 << 30));
        assert_eq!(parse("10 MB"), Err("unknown unit \"MB\" in \"10 MB\": use B, KiB, MiB or GiB".into()));
        assert!(parse("MiB").is_err());
        assert!(parse("99999999999999999999 GiB").is_err());
    }
}
