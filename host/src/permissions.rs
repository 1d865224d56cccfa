//! Delivery permissions: where a tenant's codes may be sent, per channel, by country,
//! E.164 prefix and number type. A send the permissions refuse never reaches a
//! provider; it is declined with `DESTINATION_NOT_PERMITTED`, whose data names the
//! reason.
//!
//! Number types that cost the sender money or carry no person (premium rate, shared
//! cost, UAN, pager, satellite and the international networks +882 and +883) are
//! refused by default: they are where artificially inflated traffic goes. Each is
//! allowed again by leaving it out of `refused_number_types`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Channel, PhoneFacts};
use crate::phone::LineType;
use crate::settings::InvalidSetting;

/// A kind of destination that may be refused: a line type of the numbering plan, or a
/// network of the international calling codes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    Mobile,
    Landline,
    Voip,
    TollFree,
    /// Premium rate (`premium` in lookups).
    #[serde(alias = "premium")]
    PremiumRate,
    Virtual,
    SharedCost,
    Uan,
    Pager,
    Voicemail,
    Unknown,
    /// Satellite networks: +870 (Inmarsat) and +881 (the global mobile satellite
    /// system: Iridium, Globalstar, …).
    Satellite,
    /// International networks without a country: +882 and +883.
    InternationalNetwork,
}

impl NumberType {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NumberType::Mobile => "mobile",
            NumberType::Landline => "landline",
            NumberType::Voip => "voip",
            NumberType::TollFree => "toll_free",
            NumberType::PremiumRate => "premium_rate",
            NumberType::Virtual => "virtual",
            NumberType::SharedCost => "shared_cost",
            NumberType::Uan => "uan",
            NumberType::Pager => "pager",
            NumberType::Voicemail => "voicemail",
            NumberType::Unknown => "unknown",
            NumberType::Satellite => "satellite",
            NumberType::InternationalNetwork => "international_network",
        }
    }

    /// The types of a number: its line type, and its network's when its calling code
    /// is one of the satellite or international networks.
    pub fn of(phone: &PhoneFacts) -> Vec<NumberType> {
        let line = match phone.line_type {
            LineType::Mobile => NumberType::Mobile,
            LineType::Landline => NumberType::Landline,
            LineType::Voip => NumberType::Voip,
            LineType::TollFree => NumberType::TollFree,
            LineType::Premium => NumberType::PremiumRate,
            LineType::Virtual => NumberType::Virtual,
            LineType::SharedCost => NumberType::SharedCost,
            LineType::Uan => NumberType::Uan,
            LineType::Pager => NumberType::Pager,
            LineType::Voicemail => NumberType::Voicemail,
            LineType::Unknown => NumberType::Unknown,
        };
        let mut types = vec![line];
        match phone.calling_code {
            870 | 881 => types.push(NumberType::Satellite),
            882 | 883 => types.push(NumberType::InternationalNetwork),
            _ => {}
        }
        types
    }
}

/// The types refused by default.
pub fn default_refused_types() -> Vec<NumberType> {
    vec![
        NumberType::PremiumRate,
        NumberType::SharedCost,
        NumberType::Uan,
        NumberType::Pager,
        NumberType::Satellite,
        NumberType::InternationalNetwork,
    ]
}

/// One channel's permissions; a field left out of a channel's entry (or null) is the
/// default's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelPermissions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_countries: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_countries: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_prefixes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_number_types: Option<Vec<NumberType>>,
}

/// Where a tenant's codes may be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryPermissions {
    /// The only countries codes may go to (ISO 3166-1 alpha-2); null for every one.
    pub allowed_countries: Option<Vec<String>>,
    /// Countries no code goes to.
    pub blocked_countries: Vec<String>,
    /// E.164 prefixes (`+4470`) no code goes to.
    pub blocked_prefixes: Vec<String>,
    pub refused_number_types: Vec<NumberType>,
    /// Per channel, what differs from the fields above.
    pub channels: BTreeMap<Channel, ChannelPermissions>,
}

impl Default for DeliveryPermissions {
    fn default() -> Self {
        Self {
            allowed_countries: None,
            blocked_countries: Vec::new(),
            blocked_prefixes: Vec::new(),
            refused_number_types: default_refused_types(),
            channels: BTreeMap::new(),
        }
    }
}

/// Entries a list may hold.
const MAX_ENTRIES: usize = 1_000;

fn invalid(field: String, message: &str) -> InvalidSetting {
    InvalidSetting {
        field,
        message: message.to_owned(),
    }
}

fn check_countries(list: &[String], field: &str) -> Result<(), InvalidSetting> {
    if list.len() > MAX_ENTRIES {
        return Err(invalid(field.to_owned(), "at most 1000 entries"));
    }
    for (i, code) in list.iter().enumerate() {
        if crate::phone::normalize_country(code).ok().as_deref() != Some(code.as_str()) {
            return Err(invalid(
                format!("{field}[{i}]"),
                "must be an upper-case ISO 3166-1 alpha-2 country code such as \"GB\"",
            ));
        }
    }
    Ok(())
}

fn check_prefixes(prefixes: &[String], field: &str) -> Result<(), InvalidSetting> {
    if prefixes.len() > MAX_ENTRIES {
        return Err(invalid(field.to_owned(), "at most 1000 entries"));
    }
    for (i, prefix) in prefixes.iter().enumerate() {
        let digits = prefix.strip_prefix('+').unwrap_or("");
        if !(1..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                format!("{field}[{i}]"),
                "must be an E.164 prefix such as \"+4470\"",
            ));
        }
    }
    Ok(())
}

impl DeliveryPermissions {
    /// Checks every list, naming the first bad entry.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let base = "delivery_permissions";
        if let Some(allowed) = &self.allowed_countries {
            check_countries(allowed, &format!("{base}.allowed_countries"))?;
        }
        check_countries(
            &self.blocked_countries,
            &format!("{base}.blocked_countries"),
        )?;
        check_prefixes(&self.blocked_prefixes, &format!("{base}.blocked_prefixes"))?;
        for (channel, entry) in &self.channels {
            let field = format!("{base}.channels.{}", channel.as_str());
            if let Some(allowed) = &entry.allowed_countries {
                check_countries(allowed, &format!("{field}.allowed_countries"))?;
            }
            if let Some(blocked) = &entry.blocked_countries {
                check_countries(blocked, &format!("{field}.blocked_countries"))?;
            }
            if let Some(prefixes) = &entry.blocked_prefixes {
                check_prefixes(prefixes, &format!("{field}.blocked_prefixes"))?;
            }
        }
        Ok(())
    }

    /// Why a code may not go to `phone` on `channel`, or `None` when it may.
    pub fn refusal(&self, phone: &PhoneFacts, channel: Channel) -> Option<String> {
        let entry = self.channels.get(&channel);
        let allowed = entry
            .and_then(|entry| entry.allowed_countries.as_deref())
            .or(self.allowed_countries.as_deref());
        let blocked = entry
            .and_then(|entry| entry.blocked_countries.as_deref())
            .unwrap_or(&self.blocked_countries);
        let prefixes = entry
            .and_then(|entry| entry.blocked_prefixes.as_deref())
            .unwrap_or(&self.blocked_prefixes);
        let refused = entry
            .and_then(|entry| entry.refused_number_types.as_deref())
            .unwrap_or(&self.refused_number_types);
        let on = channel.as_str();
        if let Some(prefix) = prefixes
            .iter()
            .find(|prefix| phone.e164.starts_with(prefix.as_str()))
        {
            return Some(format!("prefix {prefix} is blocked for {on}"));
        }
        if let Some(kind) = NumberType::of(phone)
            .into_iter()
            .find(|kind| refused.contains(kind))
        {
            return Some(format!("number type {} is refused for {on}", kind.as_str()));
        }
        let country = phone.region.as_deref();
        let listed = |list: &[String]| country.is_some_and(|c| list.iter().any(|l| l == c));
        let shown = country.unwrap_or("(none)");
        if listed(blocked) {
            return Some(format!("country {shown} is blocked for {on}"));
        }
        match allowed {
            Some(list) if !listed(list) => Some(format!(
                "country {shown} is not among the allowed countries for {on}"
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(e164: &str, calling_code: u32, region: Option<&str>, line: LineType) -> PhoneFacts {
        PhoneFacts {
            e164: e164.to_owned(),
            calling_code,
            national_number: e164.to_owned(),
            region: region.map(str::to_owned),
            line_type: line,
            carrier_name: None,
            is_disposable: false,
            line: Default::default(),
        }
    }

    #[test]
    fn by_default_premium_satellite_and_international_networks_are_refused() {
        let permissions = DeliveryPermissions::default();
        let us = facts("+14155552671", 1, Some("US"), LineType::Mobile);
        assert_eq!(permissions.refusal(&us, Channel::Sms), None);
        let premium = facts("+19005550123", 1, Some("US"), LineType::Premium);
        assert_eq!(
            permissions.refusal(&premium, Channel::Voice).as_deref(),
            Some("number type premium_rate is refused for voice")
        );
        let iridium = facts("+881612345678", 881, None, LineType::Mobile);
        assert_eq!(
            permissions.refusal(&iridium, Channel::Sms).as_deref(),
            Some("number type satellite is refused for sms")
        );
        let network = facts("+8821612345678", 882, None, LineType::Voip);
        assert!(permissions
            .refusal(&network, Channel::Sms)
            .is_some_and(|why| why.contains("international_network")));
        let pager = facts("+447640123456", 44, Some("GB"), LineType::Pager);
        assert!(permissions.refusal(&pager, Channel::Sms).is_some());
    }

    #[test]
    fn countries_prefixes_and_a_channels_own_entry() {
        let permissions: DeliveryPermissions = serde_json::from_value(serde_json::json!({
            "allowed_countries": ["US", "GB"],
            "blocked_prefixes": ["+4479"],
            "refused_number_types": [],
            "channels": {"voice": {"blocked_countries": ["US"], "allowed_countries": ["US", "DE"]}}
        }))
        .expect("valid");
        permissions.validate().expect("valid");
        let us = facts("+14155552671", 1, Some("US"), LineType::Mobile);
        let gb = facts("+447911123456", 44, Some("GB"), LineType::Mobile);
        let de = facts("+4915123456789", 49, Some("DE"), LineType::Mobile);
        let premium = facts("+19005550123", 1, Some("US"), LineType::Premium);
        assert_eq!(permissions.refusal(&us, Channel::Sms), None);
        assert_eq!(
            permissions.refusal(&gb, Channel::Sms).as_deref(),
            Some("prefix +4479 is blocked for sms")
        );
        assert_eq!(
            permissions.refusal(&de, Channel::Sms).as_deref(),
            Some("country DE is not among the allowed countries for sms")
        );
        assert_eq!(
            permissions.refusal(&premium, Channel::Sms),
            None,
            "allowed again"
        );
        // Voice has its own countries, and the default's prefixes.
        assert_eq!(
            permissions.refusal(&us, Channel::Voice).as_deref(),
            Some("country US is blocked for voice")
        );
        assert_eq!(
            permissions.refusal(&de, Channel::Voice),
            None,
            "voice's own list"
        );
        assert!(permissions.refusal(&gb, Channel::Voice).is_some());
    }

    #[test]
    fn bad_entries_are_named() {
        for (body, field) in [
            (
                serde_json::json!({"allowed_countries": ["gb"]}),
                "delivery_permissions.allowed_countries[0]",
            ),
            (
                serde_json::json!({"blocked_prefixes": ["+44", "4470"]}),
                "delivery_permissions.blocked_prefixes[1]",
            ),
            (
                serde_json::json!({"channels": {"sms": {"blocked_prefixes": ["+"]}}}),
                "delivery_permissions.channels.sms.blocked_prefixes[0]",
            ),
        ] {
            let permissions: DeliveryPermissions = serde_json::from_value(body).expect("parses");
            assert_eq!(permissions.validate().expect_err("refused").field, field);
        }
        assert!(serde_json::from_value::<DeliveryPermissions>(
            serde_json::json!({"refused_number_types": ["premium_rate", "lottery"]})
        )
        .is_err());
    }
}
