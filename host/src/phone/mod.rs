//! Phone numbers: parsing, validation, classification and risk scoring.
//!
//! Pure domain code with no I/O. This module is the only place that names the
//! libphonenumber port (`rlibphonenumber`); the rest of the host sees [`PhoneNumber`],
//! [`LineType`] and [`InvalidReason`]. ARCHITECTURE.md records why this port was chosen.

pub mod carrier;
pub mod countries;
pub mod risk;

use rlibphonenumber::{
    ParseError, PhoneNumberFormat, PhoneNumberType, Region, ValidationError, PHONE_NUMBER_UTIL,
};
use serde::{Deserialize, Serialize};

/// Line type of a number, in the vocabulary of the lookup API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineType {
    Mobile,
    Landline,
    Voip,
    TollFree,
    Premium,
    Virtual,
    SharedCost,
    Uan,
    Pager,
    Voicemail,
    Unknown,
}

impl LineType {
    /// The API spelling, e.g. `toll_free`.
    pub fn as_str(self) -> &'static str {
        match self {
            LineType::Mobile => "mobile",
            LineType::Landline => "landline",
            LineType::Voip => "voip",
            LineType::TollFree => "toll_free",
            LineType::Premium => "premium",
            LineType::Virtual => "virtual",
            LineType::SharedCost => "shared_cost",
            LineType::Uan => "uan",
            LineType::Pager => "pager",
            LineType::Voicemail => "voicemail",
            LineType::Unknown => "unknown",
        }
    }

    /// The coarse carrier type of the report (`mobile`, `landline`, `voip`, `unknown`).
    pub fn carrier_type(self) -> &'static str {
        match self {
            LineType::Mobile | LineType::Pager => "mobile",
            LineType::Landline => "landline",
            LineType::Voip | LineType::Virtual => "voip",
            _ => "unknown",
        }
    }
}

/// Why a number is not valid, in the vocabulary of the validation API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvalidReason {
    TooShort,
    TooLong,
    InvalidCountryCode,
    NotANumber,
    InvalidForRegion,
}

impl InvalidReason {
    /// A one-line explanation for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            InvalidReason::TooShort => "the number is too short",
            InvalidReason::TooLong => "the number is too long",
            InvalidReason::InvalidCountryCode => "the country calling code is not assigned",
            InvalidReason::NotANumber => "the input does not look like a phone number",
            InvalidReason::InvalidForRegion => {
                "the number does not match any numbering plan of its country"
            }
        }
    }
}

/// A parsed number with everything the host derives from it offline.
///
/// The national and international formats are computed on demand: choosing a
/// formatting pattern is the costliest step of libphonenumber and only validation
/// answers show them.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneNumber {
    /// E.164 form, e.g. `+14155551234`.
    pub e164: String,
    /// Country calling code, e.g. `1`.
    pub calling_code: u32,
    /// National significant number, e.g. `4155551234`.
    pub national_number: String,
    /// ISO 3166-1 alpha-2 region, `None` for non-geographic numbers (+800 …).
    pub region: Option<String>,
    /// Line type; `Unknown` when the number is not valid.
    pub line_type: LineType,
    /// `None` when valid, else why not.
    pub invalid_reason: Option<InvalidReason>,
    parsed: rlibphonenumber::PhoneNumber,
}

impl PhoneNumber {
    /// National format, e.g. `(415) 555-1234`.
    pub fn formatted_national(&self) -> String {
        PHONE_NUMBER_UTIL
            .format(&self.parsed, PhoneNumberFormat::National)
            .into_owned()
    }

    /// International format, e.g. `+1 415-555-1234`.
    pub fn formatted_international(&self) -> String {
        PHONE_NUMBER_UTIL
            .format(&self.parsed, PhoneNumberFormat::International)
            .into_owned()
    }

    /// Whether the number is valid for its numbering plan.
    pub fn is_valid(&self) -> bool {
        self.invalid_reason.is_none()
    }
}

/// Error for a `country` hint that is not an ISO 3166-1 alpha-2 region libphonenumber knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown country {0:?}: expected an ISO 3166-1 alpha-2 code such as \"US\"")]
pub struct UnknownCountry(pub String);

fn region_for(code: &str) -> Result<Region, UnknownCountry> {
    let upper = code.trim().to_ascii_uppercase();
    let region = Region::from_code(&upper).map_err(|_| UnknownCountry(code.to_owned()))?;
    if PHONE_NUMBER_UTIL
        .get_country_code_for_region(region)
        .is_none()
    {
        return Err(UnknownCountry(code.to_owned()));
    }
    Ok(region)
}

/// Checks that `code` names a region with a numbering plan; returns it upper-cased.
pub fn normalize_country(code: &str) -> Result<String, UnknownCountry> {
    region_for(code).map(|region| region.as_region_str().as_str().to_owned())
}

/// Parses `input` (international form, or national form when `country` is given).
///
/// Returns `Err` only when the input cannot be parsed at all; a parsed number that is
/// not valid comes back with [`PhoneNumber::invalid_reason`] set. When `country` is
/// given and the number belongs to another country, the reason is `InvalidForRegion`.
pub fn parse(
    input: &str,
    country: Option<&str>,
) -> Result<Result<PhoneNumber, InvalidReason>, UnknownCountry> {
    let region = country.map(region_for).transpose()?;
    let number = match PHONE_NUMBER_UTIL.parse(input, region) {
        Ok(number) => number,
        Err(err) => return Ok(Err(parse_error_reason(&err))),
    };
    let util = &*PHONE_NUMBER_UTIL;
    // One type match decides validity too: libphonenumber's `isValidNumber` is exactly
    // "the number matches a type of its region's plan", so asking for validity and
    // then for the type would match the same patterns twice.
    let kind = util.get_number_type(&number);
    let valid = kind != PhoneNumberType::Unknown;
    let number_region = util
        .get_region_for_number(&number)
        .filter(|r| *r != Region::World)
        .map(|r| r.as_region_str().as_str().to_owned());
    let e164 = util.format(&number, PhoneNumberFormat::E164).into_owned();
    let mut invalid_reason = if valid {
        None
    } else {
        Some(match util.is_possible_number_with_reason(&number) {
            Err(ValidationError::TooShort) => InvalidReason::TooShort,
            Err(ValidationError::TooLong) => InvalidReason::TooLong,
            Err(ValidationError::InvalidCountryCode) => InvalidReason::InvalidCountryCode,
            _ => InvalidReason::InvalidForRegion,
        })
    };
    // The port's `is_valid_number_for_region` skips libphonenumber's check that the
    // number's calling code belongs to the region (so +44 20 7946 0000 passes as a US
    // number); comparing the number's own region is the check libphonenumber makes.
    if let (Some(wanted), None) = (region, invalid_reason) {
        if number_region.as_deref() != Some(wanted.as_region_str().as_str()) {
            invalid_reason = Some(InvalidReason::InvalidForRegion);
        }
    }
    let line_type = if invalid_reason.is_none() {
        classify(kind, &e164)
    } else {
        LineType::Unknown
    };
    Ok(Ok(PhoneNumber {
        calling_code: u32::try_from(number.country_code).unwrap_or_default(),
        national_number: rlibphonenumber::get_national_significant_number_owned(&number),
        region: number_region,
        e164,
        line_type,
        invalid_reason,
        parsed: number,
    }))
}

fn parse_error_reason(err: &ParseError) -> InvalidReason {
    match err {
        ParseError::InvalidCountryCode => InvalidReason::InvalidCountryCode,
        ParseError::NotANumber(_) => InvalidReason::NotANumber,
        ParseError::TooShortAfterIdd | ParseError::TooShortNsn => InvalidReason::TooShort,
        ParseError::TooLongNsn => InvalidReason::TooLong,
    }
}

/// Maps libphonenumber's type to the API's line types.
///
/// `FIXED_LINE_OR_MOBILE` (the whole North American plan, among others) cannot be told
/// apart from the number alone. libphonenumber's carrier tables list the ranges allocated
/// to mobile operators, so a number in such a range is reported as `mobile`; otherwise
/// the honest answer is `unknown`.
fn classify(kind: PhoneNumberType, e164: &str) -> LineType {
    match kind {
        PhoneNumberType::Mobile => LineType::Mobile,
        PhoneNumberType::FixedLine => LineType::Landline,
        PhoneNumberType::FixedLineOrMobile => {
            if carrier::original_operator(e164).is_some() {
                LineType::Mobile
            } else {
                LineType::Unknown
            }
        }
        PhoneNumberType::TollFree => LineType::TollFree,
        PhoneNumberType::PremiumRate => LineType::Premium,
        PhoneNumberType::SharedCost => LineType::SharedCost,
        PhoneNumberType::VoIP => LineType::Voip,
        PhoneNumberType::PersonalNumber => LineType::Virtual,
        PhoneNumberType::Pager => LineType::Pager,
        PhoneNumberType::UAN => LineType::Uan,
        PhoneNumberType::VoiceMail => LineType::Voicemail,
        PhoneNumberType::Unknown => LineType::Unknown,
    }
}

/// Normalises `input` to E.164, or says why it cannot be.
pub fn to_e164(input: &str) -> Result<String, InvalidReason> {
    match parse(input, None) {
        Ok(Ok(number)) if number.is_valid() => Ok(number.e164),
        Ok(Ok(number)) => Err(number
            .invalid_reason
            .unwrap_or(InvalidReason::InvalidForRegion)),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err(InvalidReason::NotANumber),
    }
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
