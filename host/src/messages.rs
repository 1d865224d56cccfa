//! Built-in message texts for codes, by language; which language a message takes; and
//! how an SMS carries a text (GSM-7 or UCS-2) in how many segments.

use serde::{Deserialize, Serialize};

/// Languages with a built-in text.
pub const LANGUAGES: &[&str] = &["en", "ru", "uz", "es", "fr", "de", "pt", "ar", "hi", "zh"];

/// The language of a message: the request's tag (its base, so `pt-BR` is `pt`) when it
/// has a built-in text, else the main language of the number's country (ISO 3166-1
/// alpha-2) when that has one, else `en`.
pub fn resolve_language(tag: Option<&str>, country: Option<&str>) -> &'static str {
    let base = tag
        .and_then(|tag| tag.split(['-', '_']).next())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    LANGUAGES
        .iter()
        .find(|lang| **lang == base)
        .copied()
        .or_else(|| country.and_then(country_language))
        .unwrap_or("en")
}

/// The built-in language most of a country's people read, if there is one.
fn country_language(country: &str) -> Option<&'static str> {
    let country = country.to_ascii_uppercase();
    let language = match country.as_str() {
        "RU" | "BY" | "KZ" | "KG" => "ru",
        "UZ" => "uz",
        "ES" | "MX" | "AR" | "CO" | "PE" | "VE" | "CL" | "EC" | "GT" | "CU" | "BO" | "DO"
        | "HN" | "PY" | "SV" | "NI" | "CR" | "PA" | "UY" | "GQ" => "es",
        "FR" | "MC" | "SN" | "CI" | "ML" | "BF" | "NE" | "TG" | "BJ" | "GA" | "CG" | "CD"
        | "GN" | "MG" | "CM" | "HT" => "fr",
        "DE" | "AT" | "LI" => "de",
        "PT" | "BR" | "AO" | "MZ" | "CV" | "GW" | "ST" | "TL" => "pt",
        "SA" | "AE" | "EG" | "IQ" | "JO" | "KW" | "LB" | "LY" | "MA" | "OM" | "QA" | "SY"
        | "TN" | "YE" | "BH" | "DZ" | "SD" | "PS" | "MR" => "ar",
        "IN" => "hi",
        "CN" | "TW" | "HK" | "MO" => "zh",
        _ => return None,
    };
    Some(language)
}

/// The text carrying `code`, valid for `minutes`, in `language`.
pub fn code_message(language: &str, code: &str, minutes: u32) -> String {
    let one = minutes == 1;
    match language {
        "ru" => format!("Ваш код подтверждения: {code}. Он действует {minutes} мин."),
        "uz" => format!("Tasdiqlash kodingiz: {code}. U {minutes} daqiqa amal qiladi."),
        "es" => {
            let unit = if one { "minuto" } else { "minutos" };
            format!("Tu código de verificación es {code}. Caduca en {minutes} {unit}.")
        }
        "fr" => {
            let unit = if one { "minute" } else { "minutes" };
            format!("Votre code de vérification est {code}. Il expire dans {minutes} {unit}.")
        }
        "de" => {
            let unit = if one { "Minute" } else { "Minuten" };
            format!("Ihr Bestätigungscode lautet {code}. Er läuft in {minutes} {unit} ab.")
        }
        "pt" => {
            let unit = if one { "minuto" } else { "minutos" };
            format!("O seu código de verificação é {code}. Expira em {minutes} {unit}.")
        }
        "ar" => format!("رمز التحقق الخاص بك هو {code}. تنتهي صلاحيته خلال {minutes} دقيقة."),
        "hi" => format!("आपका सत्यापन कोड {code} है। यह {minutes} मिनट में समाप्त हो जाएगा।"),
        "zh" => format!("您的验证码是 {code}，{minutes} 分钟内有效。"),
        _ => {
            let unit = if one { "minute" } else { "minutes" };
            format!("Your verification code is {code}. It expires in {minutes} {unit}.")
        }
    }
}

/// How an SMS carries a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Encoding {
    /// The GSM 03.38 default alphabet (with its extension table): 160 characters in
    /// one message, 153 per part of a longer one.
    #[serde(rename = "GSM-7")]
    Gsm7,
    /// UTF-16: 70 code units in one message, 67 per part of a longer one.
    #[serde(rename = "UCS-2")]
    Ucs2,
}

/// The GSM 03.38 default alphabet, less the escape to the extension table.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: each takes two septets (escape and character).
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{0c}";

/// The encoding an SMS needs for `text`, and the number of segments it takes. A long
/// message's parts never split an escape pair or a surrogate pair.
pub fn sms_encoding(text: &str) -> (Encoding, u32) {
    let septets: Option<Vec<u32>> = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .collect();
    match septets {
        Some(units) => (Encoding::Gsm7, segments(&units, 160, 153)),
        None => {
            let units: Vec<u32> = text.chars().map(|c| c.len_utf16() as u32).collect();
            (Encoding::Ucs2, segments(&units, 70, 67))
        }
    }
}

/// Segments needed for characters of `units` each: one when they fit `single`, else
/// parts of at most `part`, each character whole in one part.
fn segments(units: &[u32], single: u32, part: u32) -> u32 {
    if units.iter().sum::<u32>() <= single {
        return 1;
    }
    let (mut parts, mut used) = (1, 0);
    for unit in units {
        if used + unit > part {
            parts += 1;
            used = 0;
        }
        used += unit;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_tags_fall_back_to_their_base_language() {
        assert_eq!(resolve_language(Some("pt-BR"), None), "pt");
        assert_eq!(resolve_language(Some("RU"), None), "ru");
        assert_eq!(resolve_language(Some("xx"), None), "en");
        assert_eq!(resolve_language(None, None), "en");
    }

    #[test]
    fn without_a_usable_tag_the_number_s_country_decides() {
        assert_eq!(resolve_language(None, Some("UZ")), "uz");
        assert_eq!(resolve_language(Some("xx"), Some("BR")), "pt");
        assert_eq!(resolve_language(None, Some("eg")), "ar");
        assert_eq!(resolve_language(None, Some("IN")), "hi");
        assert_eq!(resolve_language(None, Some("TW")), "zh");
        assert_eq!(resolve_language(Some("de"), Some("FR")), "de");
        assert_eq!(resolve_language(None, Some("US")), "en");
    }

    #[test]
    fn encodings_and_segments() {
        assert_eq!(sms_encoding("Your code is 123456."), (Encoding::Gsm7, 1));
        assert_eq!(sms_encoding(&"a".repeat(160)), (Encoding::Gsm7, 1));
        assert_eq!(sms_encoding(&"a".repeat(161)), (Encoding::Gsm7, 2));
        assert_eq!(sms_encoding(&"a".repeat(306)), (Encoding::Gsm7, 2));
        assert_eq!(sms_encoding(&"a".repeat(307)), (Encoding::Gsm7, 3));
        // Extension characters take two septets: 80 of them fill one message.
        assert_eq!(sms_encoding(&"€".repeat(80)), (Encoding::Gsm7, 1));
        assert_eq!(sms_encoding(&"€".repeat(81)), (Encoding::Gsm7, 2));
        // An escape pair is never split: 152 plain then one extension needs a new part.
        let straddle = format!("{}€{}", "a".repeat(152), "a".repeat(10));
        assert_eq!(sms_encoding(&straddle), (Encoding::Gsm7, 2));
        assert_eq!(sms_encoding(&"é".repeat(10)).0, Encoding::Gsm7);
        assert_eq!(sms_encoding("Ваш код 1234"), (Encoding::Ucs2, 1));
        assert_eq!(sms_encoding(&"ж".repeat(70)), (Encoding::Ucs2, 1));
        assert_eq!(sms_encoding(&"ж".repeat(71)), (Encoding::Ucs2, 2));
        // Emoji are surrogate pairs: two code units each.
        assert_eq!(sms_encoding(&"😀".repeat(35)), (Encoding::Ucs2, 1));
        assert_eq!(sms_encoding(&"😀".repeat(36)), (Encoding::Ucs2, 2));
    }

    #[test]
    fn built_in_texts_fit_one_segment_in_the_expected_encoding() {
        for lang in LANGUAGES {
            let (encoding, parts) = sms_encoding(&code_message(lang, "48291377", 1440));
            assert_eq!(parts, 1, "{lang}");
            // Spanish and Portuguese need `ó`, outside the GSM alphabet.
            let gsm = matches!(*lang, "en" | "uz" | "fr" | "de");
            assert_eq!(encoding == Encoding::Gsm7, gsm, "{lang}: {encoding:?}");
        }
    }

    #[test]
    fn one_minute_is_singular() {
        assert!(code_message("en", "1234", 1).ends_with("1 minute."));
        assert!(code_message("en", "1234", 2).ends_with("2 minutes."));
    }

    #[test]
    fn every_language_carries_the_code_and_expiry() {
        for lang in LANGUAGES {
            let text = code_message(lang, "482913", 10);
            assert!(
                text.contains("482913") && text.contains("10"),
                "{lang}: {text}"
            );
        }
    }
}
