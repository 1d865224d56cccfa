//! Country names and ISO 3166-1 alpha-3 codes for the regions libphonenumber knows.

use isocountry::CountryCode;

/// A country as the report presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code, e.g. `US`.
    pub alpha2: &'static str,
    /// ISO 3166-1 alpha-3 code, e.g. `USA`; `None` for territories without one.
    pub alpha3: Option<&'static str>,
    /// English short name, e.g. `United States of America`.
    pub name: &'static str,
}

/// Territories libphonenumber has metadata for that ISO 3166-1 does not assign.
const EXTRA: &[(&str, &str)] = &[
    ("AC", "Ascension Island"),
    ("TA", "Tristan da Cunha"),
    ("XK", "Kosovo"),
];

/// Looks up a country by its alpha-2 code (case-insensitive).
pub fn by_alpha2(code: &str) -> Option<Country> {
    let upper = code.to_ascii_uppercase();
    if let Ok(country) = CountryCode::for_alpha2(&upper) {
        return Some(Country {
            alpha2: country.alpha2(),
            alpha3: Some(country.alpha3()),
            name: country.name(),
        });
    }
    EXTRA
        .iter()
        .find(|(alpha2, _)| *alpha2 == upper)
        .map(|(alpha2, name)| Country {
            alpha2,
            alpha3: None,
            name,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha2_maps_to_alpha3_and_name() {
        let us = by_alpha2("us").expect("US is a country");
        assert_eq!(us.alpha2, "US");
        assert_eq!(us.alpha3, Some("USA"));
        assert!(us.name.contains("United States"));
        assert_eq!(by_alpha2("UZ").and_then(|c| c.alpha3), Some("UZB"));
    }

    #[test]
    fn libphonenumber_only_regions_have_names() {
        assert_eq!(by_alpha2("XK").map(|c| c.name), Some("Kosovo"));
        assert!(by_alpha2("ZZ").is_none());
    }
}
