//! Built-in message texts for codes, by language.

/// Languages with a built-in text.
pub const LANGUAGES: &[&str] = &["en", "ru", "uz", "es", "fr", "de", "pt"];

/// The base language of a tag such as `pt-BR`, if it has a built-in text; else `en`.
pub fn resolve_language(tag: Option<&str>) -> &'static str {
    let base = tag
        .and_then(|tag| tag.split(['-', '_']).next())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    LANGUAGES
        .iter()
        .find(|lang| **lang == base)
        .copied()
        .unwrap_or("en")
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
        _ => {
            let unit = if one { "minute" } else { "minutes" };
            format!("Your verification code is {code}. It expires in {minutes} {unit}.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_tags_fall_back_to_their_base_language() {
        assert_eq!(resolve_language(Some("pt-BR")), "pt");
        assert_eq!(resolve_language(Some("RU")), "ru");
        assert_eq!(resolve_language(Some("xx")), "en");
        assert_eq!(resolve_language(None), "en");
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
