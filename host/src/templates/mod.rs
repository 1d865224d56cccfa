//! Per-tenant message templates and brands as pure logic: the stored records, their
//! validation (ids, names, locales, texts and placeholders, Android app hashes), the
//! choice of a template's variant for a send, and rendering a text. No I/O: the flows
//! (`flows/templates.rs`) load and store the records.
//!
//! A text is literal characters and placeholders: `{code}` (required in every
//! variant), `{brand}` (the brand's name), `{expiry_minutes}` and `{app_hash}` (the
//! 11-character hash Android's SMS Retriever matches). `{{` and `}}` are literal
//! braces; any other `{` or `}` is an error. In an `sms` variant, `{app_hash}` must be
//! the very end of the text, on a line of its own, as the SMS Retriever API wants the
//! hash to end the message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::Channel;

#[cfg(test)]
mod tests;

/// Templates a tenant may keep.
pub const MAX_TEMPLATES: usize = 100;
/// Brands a tenant may keep.
pub const MAX_BRANDS: usize = 100;
/// Variants (locale and channel pairs) per template.
pub const MAX_VARIANTS: usize = 50;
/// Characters of an `sms` variant's text (three concatenated GSM-7 segments' worth).
pub const MAX_SMS_TEXT: usize = 480;
/// Characters of a variant's text on the other channels.
pub const MAX_TEXT: usize = 1000;
/// Characters of a template's or brand's name.
pub const MAX_NAME: usize = 100;
/// Characters of an Android SMS Retriever app hash.
pub const APP_HASH_LEN: usize = 11;

/// A tenant's brand: the name its messages show as `{brand}`, its Android app hash,
/// and the template its sends use unless a request names another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Brand {
    pub id: String,
    pub name: String,
    pub app_hash: Option<String>,
    pub template_id: Option<String>,
    /// A template experiment: a share of the sends that would use `template_id` use
    /// another template instead, so their conversion can be compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A brand's template experiment: `weight` percent of the brand's sends (those that
/// name no template of their own) use `template_id` rather than the brand's template.
/// A number always falls on the same side, so its resends and fallback steps keep
/// their template, and its verification's conversion counts under that template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub template_id: String,
    /// Percent of the sends, 1 to 99.
    pub weight: u8,
}

impl Experiment {
    /// Whether the send to `subject` (an E.164 number) falls on the experiment's side:
    /// the same answer on every replica and every run.
    pub fn picks(&self, brand_id: &str, subject: &str) -> bool {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{brand_id}/{subject}").as_bytes());
        let roll = u16::from_be_bytes([digest[0], digest[1]]) % 100;
        roll < u16::from(self.weight)
    }
}

/// A tenant's message template: one text per locale and channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub variants: Vec<Variant>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One text of a template: its locale (normalised: `pt`, `pt-br`), channel and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Variant {
    pub locale: String,
    pub channel: Channel,
    pub text: String,
}

/// Body of `POST /v1/brands` and `PUT /v1/brands/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrandBody {
    /// The brand's id: chosen by the client, else generated (`brd_…`). On `PUT` it may
    /// repeat the path's id or be left out.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub app_hash: Option<String>,
    #[serde(default)]
    pub template_id: Option<String>,
    /// A template experiment against `template_id`.
    #[serde(default)]
    pub experiment: Option<Experiment>,
}

/// Body of `POST /v1/templates` and `PUT /v1/templates/{id}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// The template's id: chosen by the client, else generated (`tpl_…`). On `PUT` it
    /// may repeat the path's id or be left out.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    pub variants: Vec<VariantBody>,
}

/// A variant as a client writes it; the channel defaults to `sms`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantBody {
    pub locale: String,
    #[serde(default = "sms")]
    pub channel: Channel,
    pub text: String,
}

fn sms() -> Channel {
    Channel::Sms
}

/// A refused field: its name (a JSON path such as `variants[2].text`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> Refusal {
    Refusal {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a brand or template id: 1 to 64 of `a-z A-Z 0-9 _ - .`.
pub fn check_id(id: &str, field: &str) -> Result<(), Refusal> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(refuse(
            field,
            "must be 1 to 64 letters, digits, `_`, `-` or `.`",
        ))
    }
}

/// Checks a name: not blank, at most [`MAX_NAME`] characters, no control characters.
/// Returns it trimmed.
pub fn check_name(name: &str, field: &str) -> Result<String, Refusal> {
    let name = name.trim();
    if name.is_empty() {
        return Err(refuse(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(refuse(
            field,
            format!("must be at most {MAX_NAME} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(refuse(field, "must not contain control characters"));
    }
    Ok(name.to_owned())
}

/// Checks an Android SMS Retriever app hash: exactly 11 characters of base64
/// (`A-Z a-z 0-9 + /`, or the URL-safe `-` and `_`).
pub fn check_app_hash(hash: &str, field: &str) -> Result<(), Refusal> {
    let ok = hash.chars().count() == APP_HASH_LEN
        && hash
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(refuse(
            field,
            "must be the 11-character app hash of Android's SMS Retriever \
             (base64: letters, digits, `+`, `/`, `-`, `_`)",
        ))
    }
}

/// Normalises a BCP 47 language tag limited to a language and an optional region: a
/// language of 2 or 3 letters, then a region of 2 letters or 3 digits, separated by
/// `-` or `_`. The result is lower case with `-` (`pt-BR` → `pt-br`).
pub fn normalise_locale(tag: &str, field: &str) -> Result<String, Refusal> {
    let mut parts = tag.split(['-', '_']);
    let language = parts.next().unwrap_or_default();
    let region = parts.next();
    let language_ok =
        (2..=3).contains(&language.len()) && language.chars().all(|c| c.is_ascii_alphabetic());
    let region_ok = region.is_none_or(|region| {
        (region.len() == 2 && region.chars().all(|c| c.is_ascii_alphabetic()))
            || (region.len() == 3 && region.chars().all(|c| c.is_ascii_digit()))
    });
    if !language_ok || !region_ok || parts.next().is_some() {
        return Err(refuse(
            field,
            format!(
                "{tag:?} is not a language tag of a language and an optional region \
                 (e.g. `pt`, `pt-BR`, `es-419`); scripts and variants are not supported"
            ),
        ));
    }
    let mut locale = language.to_ascii_lowercase();
    if let Some(region) = region {
        locale.push('-');
        locale.push_str(&region.to_ascii_lowercase());
    }
    Ok(locale)
}

/// The language of a normalised locale (`pt-br` → `pt`).
pub fn primary(locale: &str) -> &str {
    locale.split('-').next().unwrap_or(locale)
}

/// A placeholder of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Code,
    Brand,
    ExpiryMinutes,
    AppHash,
}

impl Placeholder {
    /// Every placeholder.
    pub const ALL: [Placeholder; 4] = [
        Placeholder::Code,
        Placeholder::Brand,
        Placeholder::ExpiryMinutes,
        Placeholder::AppHash,
    ];

    /// The name written between braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Code => "code",
            Placeholder::Brand => "brand",
            Placeholder::ExpiryMinutes => "expiry_minutes",
            Placeholder::AppHash => "app_hash",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A piece of a parsed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text (escaped braces already resolved).
    Text(String),
    Slot(Placeholder),
}

/// Why a text does not parse: the offending placeholder or brace, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// The placeholder or brace at fault, as written (`{codes}`, `{`).
    pub placeholder: String,
    pub message: String,
}

/// Splits a text into literal pieces and placeholders.
pub fn parse(text: &str) -> Result<Vec<Piece>, TextError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().is_some_and(|(_, next)| *next == '{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().is_some_and(|(_, next)| *next == '}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(TextError {
                    placeholder: "}".into(),
                    message: format!(
                        "unbalanced `}}` at character {}; write `}}}}` for a literal brace",
                        text[..at].chars().count() + 1
                    ),
                })
            }
            '{' => {
                let rest = &text[at + 1..];
                let Some(end) = rest
                    .find(['}', '{'])
                    .filter(|end| rest[*end..].starts_with('}'))
                else {
                    return Err(TextError {
                        placeholder: "{".into(),
                        message: format!(
                            "unbalanced `{{` at character {}; close the placeholder with `}}` \
                             or write `{{{{` for a literal brace",
                            text[..at].chars().count() + 1
                        ),
                    });
                };
                let name = &rest[..end];
                let placeholder = Placeholder::from_name(name).ok_or_else(|| TextError {
                    placeholder: format!("{{{name}}}"),
                    message: format!(
                        "unknown placeholder {{{name}}}; the placeholders are {}",
                        Placeholder::ALL
                            .iter()
                            .map(|p| format!("{{{}}}", p.name()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Slot(placeholder));
                // Skip the name and the closing brace.
                for _ in 0..name.chars().count() + 1 {
                    chars.next();
                }
            }
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// Whether parsed `pieces` use `placeholder`.
pub fn uses(pieces: &[Piece], placeholder: Placeholder) -> bool {
    pieces.contains(&Piece::Slot(placeholder))
}

/// Checks one variant's text for its channel: length, parse, `{code}` present, and in
/// an SMS, `{app_hash}` once, alone on the last line. The message names the variant.
pub fn check_text(locale: &str, channel: Channel, text: &str) -> Result<Vec<Piece>, String> {
    let which = format!("the {locale} {} variant", channel.as_str());
    let limit = if channel == Channel::Sms {
        MAX_SMS_TEXT
    } else {
        MAX_TEXT
    };
    let length = text.chars().count();
    if text.trim().is_empty() {
        return Err(format!("{which}: the text must not be empty"));
    }
    if length > limit {
        return Err(format!(
            "{which}: the text is {length} characters; at most {limit} on {}",
            channel.as_str()
        ));
    }
    let pieces = parse(text).map_err(|err| format!("{which}: {}", err.message))?;
    if !uses(&pieces, Placeholder::Code) {
        return Err(format!(
            "{which}: the text must contain the placeholder {{code}}"
        ));
    }
    if channel == Channel::Sms && uses(&pieces, Placeholder::AppHash) {
        let hashes = pieces
            .iter()
            .filter(|piece| **piece == Piece::Slot(Placeholder::AppHash))
            .count();
        let before_last = pieces.len().checked_sub(2).and_then(|at| pieces.get(at));
        let on_last_line = pieces.last() == Some(&Piece::Slot(Placeholder::AppHash))
            && matches!(before_last, Some(Piece::Text(text)) if text.ends_with('\n'));
        if hashes != 1 || !on_last_line {
            return Err(format!(
                "{which}: {{app_hash}} must appear once, alone on the last line of the \
                 text (\"…\\n{{app_hash}}\"), as Android's SMS Retriever wants the hash to \
                 end the message"
            ));
        }
    }
    Ok(pieces)
}

/// Validates a template body into variants; `path_id` is the id of a `PUT`. Returns
/// the id (given, or `None` to generate), the trimmed name and the normalised
/// variants.
pub fn template_definition(
    body: &TemplateBody,
    path_id: Option<&str>,
) -> Result<(Option<String>, String, Vec<Variant>), Refusal> {
    let id = body_id(body.id.as_deref(), path_id)?;
    let name = check_name(&body.name, "name")?;
    if body.variants.is_empty() {
        return Err(refuse("variants", "must hold at least one variant"));
    }
    if body.variants.len() > MAX_VARIANTS {
        return Err(refuse(
            "variants",
            format!(
                "{} variants; at most {MAX_VARIANTS} per template",
                body.variants.len()
            ),
        ));
    }
    let mut variants: Vec<Variant> = Vec::with_capacity(body.variants.len());
    for (at, variant) in body.variants.iter().enumerate() {
        let locale = normalise_locale(&variant.locale, &format!("variants[{at}].locale"))?;
        if variants
            .iter()
            .any(|seen| seen.locale == locale && seen.channel == variant.channel)
        {
            return Err(refuse(
                format!("variants[{at}]"),
                format!(
                    "a second {locale} {} variant; a template has one text per locale and \
                     channel",
                    variant.channel.as_str()
                ),
            ));
        }
        check_text(&locale, variant.channel, &variant.text)
            .map_err(|message| refuse(format!("variants[{at}].text"), message))?;
        variants.push(Variant {
            locale,
            channel: variant.channel,
            text: variant.text.clone(),
        });
    }
    Ok((id, name, variants))
}

/// Validates a brand body; `path_id` is the id of a `PUT`. Returns the id (given, or
/// `None` to generate) and the trimmed name. The template's existence is the flow's to
/// check.
pub fn brand_definition(
    body: &BrandBody,
    path_id: Option<&str>,
) -> Result<(Option<String>, String), Refusal> {
    let id = body_id(body.id.as_deref(), path_id)?;
    let name = check_name(&body.name, "name")?;
    if let Some(hash) = &body.app_hash {
        check_app_hash(hash, "app_hash")?;
    }
    if let Some(template_id) = &body.template_id {
        check_id(template_id, "template_id")?;
    }
    if let Some(experiment) = &body.experiment {
        check_id(&experiment.template_id, "experiment.template_id")?;
        if body.template_id.is_none() {
            return Err(refuse(
                "experiment",
                "an experiment compares a template with the brand's own: give template_id too",
            ));
        }
        if body.template_id.as_deref() == Some(experiment.template_id.as_str()) {
            return Err(refuse(
                "experiment.template_id",
                "is the brand's own template; an experiment needs another",
            ));
        }
        if !(1..=99).contains(&experiment.weight) {
            return Err(refuse(
                "experiment.weight",
                "must be between 1 and 99 (percent)",
            ));
        }
    }
    Ok((id, name))
}

/// The id of a body: on `PUT` the path's (the body may repeat it), on `POST` the
/// body's, checked, or `None`.
fn body_id(body_id: Option<&str>, path_id: Option<&str>) -> Result<Option<String>, Refusal> {
    match (body_id, path_id) {
        (Some(given), Some(path)) if given != path => Err(refuse(
            "id",
            format!("{given:?} differs from the id in the path, {path:?}"),
        )),
        (_, Some(path)) => Ok(Some(path.to_owned())),
        (Some(given), None) => {
            check_id(given, "id")?;
            Ok(Some(given.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// The variant of `variants` for a send in `locale` (normalised) on `channel`, in this
/// order: the exact locale; its language alone (`pt` for `pt-br`); the same language
/// with another region (the first listed); then the same three steps for `en`. `None`
/// when none fits: the built-in text is used.
pub fn choose<'a>(variants: &'a [Variant], locale: &str, channel: Channel) -> Option<&'a Variant> {
    let on_channel = || variants.iter().filter(move |v| v.channel == channel);
    let in_language = |locale: &str| {
        let language = primary(locale);
        on_channel()
            .find(|v| v.locale == locale)
            .or_else(|| on_channel().find(|v| v.locale == language))
            .or_else(|| on_channel().find(|v| primary(&v.locale) == language))
    };
    in_language(locale).or_else(|| in_language("en"))
}

/// What fills a text's placeholders.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub code: &'a str,
    pub brand: Option<&'a str>,
    pub expiry_minutes: u32,
    pub app_hash: Option<&'a str>,
}

/// Renders parsed pieces; `Err` names a placeholder that has no value (`{brand}`
/// without a brand, `{app_hash}` without a hash).
pub fn render(pieces: &[Piece], values: &Values<'_>) -> Result<String, Placeholder> {
    let mut text = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(literal) => text.push_str(literal),
            Piece::Slot(Placeholder::Code) => text.push_str(values.code),
            Piece::Slot(Placeholder::ExpiryMinutes) => {
                text.push_str(&values.expiry_minutes.to_string())
            }
            Piece::Slot(Placeholder::Brand) => {
                text.push_str(values.brand.ok_or(Placeholder::Brand)?)
            }
            Piece::Slot(Placeholder::AppHash) => {
                text.push_str(values.app_hash.ok_or(Placeholder::AppHash)?)
            }
        }
    }
    Ok(text)
}
