//! Unit tests for parsing and classification, including agreement with
//! libphonenumber's own example numbers for every region and type.

use super::*;
use rlibphonenumber::PHONE_NUMBER_UTIL;
use strum::IntoEnumIterator;

fn ok(input: &str, country: Option<&str>) -> PhoneNumber {
    parse(input, country)
        .expect("country is known")
        .expect("input parses")
}

#[test]
fn us_number_formats_like_the_seed() {
    let number = ok("+1 (415) 555-1234", None);
    assert_eq!(number.e164, "+14155551234");
    assert_eq!(number.formatted_national(), "(415) 555-1234");
    assert_eq!(number.formatted_international(), "+1 415-555-1234");
    assert_eq!(number.calling_code, 1);
    assert_eq!(number.region.as_deref(), Some("US"));
}

#[test]
fn russian_toll_free_keeps_its_digits() {
    // A regression elsewhere turned +78005553535 into the invalid +7005553535.
    let number = ok("+78005553535", None);
    assert_eq!(number.e164, "+78005553535");
    assert!(number.is_valid());
    assert_eq!(number.line_type, LineType::TollFree);
}

#[test]
fn national_form_needs_a_country() {
    let number = ok("90 123 45 67", Some("uz"));
    assert_eq!(number.e164, "+998901234567");
    assert_eq!(number.line_type, LineType::Mobile);
    assert_eq!(
        parse("90 123 45 67", None),
        Ok(Err(InvalidReason::InvalidCountryCode))
    );
}

#[test]
fn invalid_inputs_name_their_reason() {
    assert_eq!(parse("hello", None), Ok(Err(InvalidReason::NotANumber)));
    assert_eq!(
        parse("+999 123456", None),
        Ok(Err(InvalidReason::InvalidCountryCode))
    );
    assert_eq!(
        ok("+1 415", None).invalid_reason,
        Some(InvalidReason::TooShort)
    );
    assert_eq!(
        ok("+1 415 555 1234 5678", None).invalid_reason,
        Some(InvalidReason::TooLong)
    );
    // Right length, but 555-01xx style ranges outside any plan.
    assert_eq!(
        ok("+1 123 555 1234", None).invalid_reason,
        Some(InvalidReason::InvalidForRegion)
    );
}

#[test]
fn a_number_of_another_country_is_invalid_for_the_requested_one() {
    // The national digits 2079460000 also form a valid US number (area code 207).
    let number = ok("+442079460000", Some("US"));
    assert_eq!(number.invalid_reason, Some(InvalidReason::InvalidForRegion));
    let canada = ok("+14165550123", Some("US"));
    assert_eq!(canada.region.as_deref(), Some("CA"));
    assert_eq!(canada.invalid_reason, Some(InvalidReason::InvalidForRegion));
    assert!(ok("+14155552671", Some("us")).is_valid());
}

#[test]
fn unknown_country_hint_is_an_error() {
    assert!(parse("+14155551234", Some("XX")).is_err());
    assert!(normalize_country("Narnia").is_err());
    assert_eq!(normalize_country("gb"), Ok("GB".to_owned()));
}

#[test]
fn non_geographic_numbers_have_no_region() {
    let number = ok("+80012345678", None);
    assert!(number.is_valid());
    assert_eq!(number.region, None);
    assert_eq!(number.line_type, LineType::TollFree);
}

#[test]
fn to_e164_normalises_spacing_and_punctuation() {
    assert_eq!(
        to_e164("+998 (90) 123-45-67"),
        Ok("+998901234567".to_owned())
    );
    assert_eq!(to_e164("12"), Err(InvalidReason::InvalidCountryCode));
}

/// The requested type and the type the port reports for libphonenumber's example of
/// it must agree; fixed-line and mobile examples may come back as the combined type in
/// plans that cannot tell them apart, exactly as libphonenumber itself reports them.
fn agrees(requested: PhoneNumberType, reported: PhoneNumberType) -> bool {
    requested == reported
        || (matches!(
            requested,
            PhoneNumberType::FixedLine | PhoneNumberType::Mobile
        ) && reported == PhoneNumberType::FixedLineOrMobile)
}

#[test]
fn agrees_with_libphonenumber_examples_for_every_region_and_type() {
    let util = &*PHONE_NUMBER_UTIL;
    let mut checked = 0;
    let mut failures = Vec::new();
    for region in util.get_supported_regions() {
        let code = region.as_region_str().as_str().to_owned();
        if let Ok(invalid) = util.get_invalid_example_number(region) {
            let e164 = util.format(&invalid, PhoneNumberFormat::E164).into_owned();
            if let Ok(Ok(ours)) = parse(&e164, None) {
                if ours.is_valid() != util.is_valid_number(&invalid) {
                    failures.push(format!("{code} invalid example {e164}: {ours:?}"));
                }
            }
        }
        for kind in PhoneNumberType::iter() {
            if matches!(
                kind,
                PhoneNumberType::FixedLineOrMobile | PhoneNumberType::Unknown
            ) {
                continue;
            }
            let Ok(example) = util.get_example_number_for_type_and_region(region, kind) else {
                continue;
            };
            let e164 = util.format(&example, PhoneNumberFormat::E164).into_owned();
            let ours = ok(&e164, None);
            let reported = util.get_number_type(&example);
            checked += 1;
            if !ours.is_valid() || ours.e164 != e164 || !agrees(kind, reported) {
                failures.push(format!(
                    "{code} {kind:?} {e164}: {ours:?} reported {reported:?}"
                ));
            }
            if ours.is_valid() && reported != PhoneNumberType::FixedLineOrMobile {
                assert_eq!(
                    ours.line_type,
                    classify(kind, &e164),
                    "{code} {kind:?} {e164}"
                );
            }
        }
    }
    assert!(checked > 1_000, "only {checked} examples checked");
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

proptest::proptest! {
    #[test]
    fn parsing_arbitrary_input_never_panics(input in "\\PC{0,40}", country in "[A-Za-z]{0,3}") {
        let _ = parse(&input, None);
        let _ = parse(&input, Some(&country));
        let _ = to_e164(&input);
    }

    #[test]
    fn parsing_digit_strings_never_panics(digits in "\\+?[0-9 ()\\-]{0,30}") {
        if let Ok(Ok(number)) = parse(&digits, None) {
            let _ = number.formatted_national();
            let _ = number.formatted_international();
        }
    }
}
