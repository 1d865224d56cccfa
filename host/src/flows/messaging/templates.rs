//! Brands and templates as a product: create, list, get, replace and delete a tenant's
//! brands (tree `brands`) and message templates (tree `templates`), both keyed by
//! tenant and id; and, for `send-otp`, the choice and rendering of a code's text
//! (`MessagePlan`): the request's template, else its brand's, else the built-in text.
//!
//! A brand may name a default template; such a template cannot be deleted while a
//! brand names it (409 `template_in_use`). Changes of a tenant's brands and templates
//! are serialised by one lock, so that check and a brand naming the template cannot
//! interleave.

use std::sync::LazyLock;

use parking_lot::Mutex;

use crate::messages::{self, Encoding};
use crate::model::{Channel, CodeMessage};
use crate::store::{key, Tree};
use crate::templates::{
    self, Brand, BrandBody, Placeholder, Refusal, Template, TemplateBody, Values,
};

use crate::flows::verification::send::SendRequest;
use crate::flows::{Engine, FlowError};

impl From<Refusal> for FlowError {
    fn from(refusal: Refusal) -> Self {
        FlowError::invalid(refusal.field, refusal.message)
    }
}

/// Serialises changes of brands and templates (all tenants; they are short).
static CHANGES: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

fn record_key(tenant_id: &str, id: &str) -> Vec<u8> {
    key(&[tenant_id, id])
}

fn generated(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// What a send asked of its message, checked: the brand and template it uses, the
/// locale it asked for, and the app hash. Built before anything is recorded, so an
/// unknown id refuses the send without side effects.
#[derive(Debug, Clone)]
pub(crate) struct MessagePlan {
    brand: Option<Brand>,
    template: Option<Template>,
    /// The request's `locale` (or `language`), normalised.
    locale: Option<String>,
    /// The request's app hash, else the brand's.
    app_hash: Option<String>,
}

/// A code's text, ready to send, and what the report tells about it.
#[derive(Debug, Clone)]
pub(crate) struct RenderedMessage {
    pub body: String,
    pub record: CodeMessage,
}

impl MessagePlan {
    /// The locale the request asked for, if any (normalised: `pt-br`).
    pub fn locale(&self) -> Option<&str> {
        self.locale.as_deref()
    }

    /// The text of `code` for a send on `channel`. `language` is the built-in language
    /// the send resolved (the request's locale, else the country's language, else
    /// `en`) and `country` the number's country. Without a requested locale the
    /// template is searched for the country's language in the country (`uz-uz`, then
    /// `uz`); see [`templates::choose`] for the order. No fitting variant (or no
    /// template) gives the built-in text in `language`, which in an SMS ends with the
    /// app hash on its own line when there is one.
    pub fn render(
        &self,
        language: &str,
        country: Option<&str>,
        channel: Channel,
        code: &str,
        expiry_minutes: u32,
    ) -> Result<RenderedMessage, FlowError> {
        let wanted = match (&self.locale, country) {
            (Some(locale), _) => locale.clone(),
            (None, Some(country)) => format!("{language}-{}", country.to_ascii_lowercase()),
            (None, None) => language.to_owned(),
        };
        let variant = self
            .template
            .as_ref()
            .and_then(|template| templates::choose(&template.variants, &wanted, channel));
        let (body, locale) = match variant {
            Some(variant) => {
                let pieces = templates::parse(&variant.text).map_err(|err| {
                    FlowError::invalid("template_id", format!("stored text: {}", err.message))
                })?;
                let values = Values {
                    code,
                    brand: self.brand.as_ref().map(|brand| brand.name.as_str()),
                    expiry_minutes,
                    app_hash: self.app_hash.as_deref(),
                };
                let body = templates::render(&pieces, &values)
                    .map_err(|missing| self.missing(missing, &variant.locale, channel))?;
                (body, variant.locale.clone())
            }
            None => {
                let mut body = messages::code_message(language, code, expiry_minutes);
                if let (Channel::Sms, Some(hash)) = (channel, &self.app_hash) {
                    body.push('\n');
                    body.push_str(hash);
                }
                (body, language.to_owned())
            }
        };
        let (encoding, segments): (Encoding, u32) = messages::sms_encoding(&body);
        Ok(RenderedMessage {
            record: CodeMessage {
                template_id: variant
                    .and(self.template.as_ref())
                    .map(|template| template.id.clone()),
                brand_id: self.brand.as_ref().map(|brand| brand.id.clone()),
                locale,
                channel,
                encoding,
                segments,
            },
            body,
        })
    }

    /// The refusal of a variant using a placeholder the send has no value for.
    fn missing(&self, placeholder: Placeholder, locale: &str, channel: Channel) -> FlowError {
        let template = self
            .template
            .as_ref()
            .map(|template| template.id.as_str())
            .unwrap_or_default();
        let which = format!(
            "template {template:?}'s {locale} {} variant",
            channel.as_str()
        );
        match placeholder {
            Placeholder::Brand => FlowError::invalid(
                "brand_id",
                format!("{which} uses {{brand}}; name a brand (brand_id) whose name it shows"),
            ),
            _ => FlowError::invalid(
                "app_hash",
                format!("{which} uses {{app_hash}}; give app_hash or name a brand that has one"),
            ),
        }
    }
}

impl Engine {
    /// Checks what a send asks of its message and loads its brand and template.
    /// Unknown ids are 422 naming the field: they are part of the request, not the
    /// resource addressed.
    pub(crate) fn plan_code_message(
        &self,
        tenant_id: &str,
        request: &SendRequest,
        subject: &str,
    ) -> Result<MessagePlan, FlowError> {
        let locale = request
            .locale
            .as_deref()
            .map(|tag| templates::normalise_locale(tag, "locale"))
            .transpose()?;
        let language = request
            .language
            .as_deref()
            .map(|tag| templates::normalise_locale(tag, "language"))
            .transpose()?;
        if let (Some(locale), Some(language)) = (&locale, &language) {
            if locale != language {
                return Err(FlowError::invalid(
                    "locale",
                    format!(
                        "{locale:?} differs from language {language:?}; they are the same \
                         setting, give one"
                    ),
                ));
            }
        }
        if let Some(hash) = &request.app_hash {
            templates::check_app_hash(hash, "app_hash")?;
        }
        let brand = match &request.brand_id {
            Some(id) => {
                templates::check_id(id, "brand_id")?;
                let brand = self
                    .db
                    .get::<Brand>(Tree::Brands, &record_key(tenant_id, id))?;
                Some(brand.ok_or_else(|| {
                    FlowError::invalid("brand_id", format!("no brand {id:?}; see GET /v1/brands"))
                })?)
            }
            None => None,
        };
        let template = match (&request.template_id, &brand) {
            (Some(id), _) => {
                templates::check_id(id, "template_id")?;
                Some(self.load_template(tenant_id, id)?.ok_or_else(|| {
                    FlowError::invalid(
                        "template_id",
                        format!("no template {id:?}; see GET /v1/templates"),
                    )
                })?)
            }
            (
                None,
                Some(Brand {
                    id: brand_id,
                    template_id: Some(id),
                    experiment,
                    ..
                }),
            ) => {
                // The brand's experiment takes its share of the numbers (a template
                // deleted meanwhile leaves the send on the brand's own).
                let id = match experiment {
                    Some(experiment)
                        if experiment.picks(brand_id, subject)
                            && self
                                .load_template(tenant_id, &experiment.template_id)?
                                .is_some() =>
                    {
                        &experiment.template_id
                    }
                    _ => id,
                };
                Some(self.load_template(tenant_id, id)?.ok_or_else(|| {
                    FlowError::invalid(
                        "brand_id",
                        format!("brand {brand_id:?} names template {id:?}, which does not exist"),
                    )
                })?)
            }
            (None, _) => None,
        };
        let app_hash = request
            .app_hash
            .clone()
            .or_else(|| brand.as_ref().and_then(|brand| brand.app_hash.clone()));
        Ok(MessagePlan {
            brand,
            template,
            locale: locale.or(language),
            app_hash,
        })
    }

    fn load_template(&self, tenant_id: &str, id: &str) -> Result<Option<Template>, FlowError> {
        Ok(self.db.get(Tree::Templates, &record_key(tenant_id, id))?)
    }

    /// The tenant's brands, by id.
    pub fn brands(&self, tenant_id: &str) -> Result<Vec<Brand>, FlowError> {
        let prefix = record_key(tenant_id, "");
        Ok(self
            .db
            .scan(Tree::Brands, &prefix, templates::MAX_BRANDS + 1, false)?)
    }

    /// One brand of the tenant.
    pub fn brand(&self, tenant_id: &str, id: &str) -> Result<Brand, FlowError> {
        templates::check_id(id, "id")?;
        self.db
            .get(Tree::Brands, &record_key(tenant_id, id))?
            .ok_or(FlowError::NotFound("brand"))
    }

    /// Creates a brand; an id already taken is 409 `brand_exists`.
    pub async fn create_brand(&self, tenant_id: &str, body: BrandBody) -> Result<Brand, FlowError> {
        let (id, name) = templates::brand_definition(&body, None)?;
        let brand = {
            let _changing = CHANGES.lock();
            self.check_brand_template(tenant_id, body.template_id.as_deref())?;
            if self.brands(tenant_id)?.len() >= templates::MAX_BRANDS {
                return Err(FlowError::Conflict {
                    code: "too_many_brands",
                    message: format!("a tenant may have at most {} brands", templates::MAX_BRANDS),
                });
            }
            let now = self.clock.now();
            self.check_experiment_template(tenant_id, body.experiment.as_ref())?;
            let brand = Brand {
                id: id.unwrap_or_else(|| generated("brd")),
                name,
                app_hash: body.app_hash,
                template_id: body.template_id,
                experiment: body.experiment,
                created_at: now,
                updated_at: now,
            };
            if !self
                .db
                .insert_new(Tree::Brands, &record_key(tenant_id, &brand.id), &brand)?
            {
                return Err(FlowError::Conflict {
                    code: "brand_exists",
                    message: format!(
                        "a brand {:?} exists; replace it with PUT /v1/brands/{}",
                        brand.id, brand.id
                    ),
                });
            }
            brand
        };
        self.db.sync().await?;
        Ok(brand)
    }

    /// Replaces a brand's name, app hash and default template.
    pub async fn replace_brand(
        &self,
        tenant_id: &str,
        id: &str,
        body: BrandBody,
    ) -> Result<Brand, FlowError> {
        templates::check_id(id, "id")?;
        let (_, name) = templates::brand_definition(&body, Some(id))?;
        let brand = {
            let _changing = CHANGES.lock();
            let current = self.brand(tenant_id, id)?;
            self.check_brand_template(tenant_id, body.template_id.as_deref())?;
            self.check_experiment_template(tenant_id, body.experiment.as_ref())?;
            let brand = Brand {
                name,
                app_hash: body.app_hash,
                template_id: body.template_id,
                experiment: body.experiment,
                updated_at: self.clock.now(),
                ..current
            };
            self.db
                .put(Tree::Brands, &record_key(tenant_id, id), &brand)?;
            brand
        };
        self.db.sync().await?;
        Ok(brand)
    }

    /// Deletes a brand.
    pub async fn delete_brand(&self, tenant_id: &str, id: &str) -> Result<(), FlowError> {
        templates::check_id(id, "id")?;
        let removed = {
            let _changing = CHANGES.lock();
            self.db.remove(Tree::Brands, &record_key(tenant_id, id))?
        };
        if !removed {
            return Err(FlowError::NotFound("brand"));
        }
        self.db.sync().await?;
        Ok(())
    }

    /// A brand's default template must be one of the tenant's.
    fn check_experiment_template(
        &self,
        tenant_id: &str,
        experiment: Option<&templates::Experiment>,
    ) -> Result<(), FlowError> {
        match experiment {
            Some(experiment)
                if self
                    .load_template(tenant_id, &experiment.template_id)?
                    .is_none() =>
            {
                Err(FlowError::invalid(
                    "experiment.template_id",
                    format!(
                        "no template {:?}; see GET /v1/templates",
                        experiment.template_id
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn check_brand_template(
        &self,
        tenant_id: &str,
        template_id: Option<&str>,
    ) -> Result<(), FlowError> {
        match template_id {
            Some(id) if self.load_template(tenant_id, id)?.is_none() => Err(FlowError::invalid(
                "template_id",
                format!("no template {id:?}; see GET /v1/templates"),
            )),
            _ => Ok(()),
        }
    }

    /// The tenant's templates, by id.
    pub fn templates(&self, tenant_id: &str) -> Result<Vec<Template>, FlowError> {
        let prefix = record_key(tenant_id, "");
        Ok(self.db.scan(
            Tree::Templates,
            &prefix,
            templates::MAX_TEMPLATES + 1,
            false,
        )?)
    }

    /// One template of the tenant.
    pub fn template(&self, tenant_id: &str, id: &str) -> Result<Template, FlowError> {
        templates::check_id(id, "id")?;
        self.load_template(tenant_id, id)?
            .ok_or(FlowError::NotFound("template"))
    }

    /// Creates a template; an id already taken is 409 `template_exists`.
    pub async fn create_template(
        &self,
        tenant_id: &str,
        body: TemplateBody,
    ) -> Result<Template, FlowError> {
        let (id, name, variants) = templates::template_definition(&body, None)?;
        let template = {
            let _changing = CHANGES.lock();
            if self.templates(tenant_id)?.len() >= templates::MAX_TEMPLATES {
                return Err(FlowError::Conflict {
                    code: "too_many_templates",
                    message: format!(
                        "a tenant may have at most {} templates",
                        templates::MAX_TEMPLATES
                    ),
                });
            }
            let now = self.clock.now();
            let template = Template {
                id: id.unwrap_or_else(|| generated("tpl")),
                name,
                variants,
                created_at: now,
                updated_at: now,
            };
            if !self.db.insert_new(
                Tree::Templates,
                &record_key(tenant_id, &template.id),
                &template,
            )? {
                return Err(FlowError::Conflict {
                    code: "template_exists",
                    message: format!(
                        "a template {:?} exists; replace it with PUT /v1/templates/{}",
                        template.id, template.id
                    ),
                });
            }
            template
        };
        self.db.sync().await?;
        Ok(template)
    }

    /// Replaces a template's name and variants.
    pub async fn replace_template(
        &self,
        tenant_id: &str,
        id: &str,
        body: TemplateBody,
    ) -> Result<Template, FlowError> {
        templates::check_id(id, "id")?;
        let (_, name, variants) = templates::template_definition(&body, Some(id))?;
        let template = {
            let _changing = CHANGES.lock();
            let current = self.template(tenant_id, id)?;
            let template = Template {
                name,
                variants,
                updated_at: self.clock.now(),
                ..current
            };
            self.db
                .put(Tree::Templates, &record_key(tenant_id, id), &template)?;
            template
        };
        self.db.sync().await?;
        Ok(template)
    }

    /// Deletes a template no brand names as its default.
    pub async fn delete_template(&self, tenant_id: &str, id: &str) -> Result<(), FlowError> {
        templates::check_id(id, "id")?;
        let removed = {
            let _changing = CHANGES.lock();
            let users: Vec<String> = self
                .brands(tenant_id)?
                .into_iter()
                .filter(|brand| {
                    brand.template_id.as_deref() == Some(id)
                        || brand
                            .experiment
                            .as_ref()
                            .is_some_and(|experiment| experiment.template_id == id)
                })
                .map(|brand| brand.id)
                .collect();
            if !users.is_empty() && self.load_template(tenant_id, id)?.is_some() {
                return Err(FlowError::Conflict {
                    code: "template_in_use",
                    message: format!(
                        "brands {} name the template as their default or in an experiment; change them first",
                        users.join(", ")
                    ),
                });
            }
            self.db
                .remove(Tree::Templates, &record_key(tenant_id, id))?
        };
        if !removed {
            return Err(FlowError::NotFound("template"));
        }
        self.db.sync().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::templates::Variant;

    fn plan(locale: Option<&str>, brand: bool, app_hash: Option<&str>) -> MessagePlan {
        let now = Utc::now();
        let variant = |locale: &str, channel, text: &str| Variant {
            locale: locale.into(),
            channel,
            text: text.into(),
        };
        MessagePlan {
            brand: brand.then(|| Brand {
                id: "acme".into(),
                name: "Acme".into(),
                app_hash: None,
                template_id: None,
                experiment: None,
                created_at: now,
                updated_at: now,
            }),
            template: Some(Template {
                id: "login".into(),
                name: "Login".into(),
                variants: vec![
                    variant("en", Channel::Sms, "{brand} {code}"),
                    variant("pt", Channel::Sms, "pt {code}"),
                    variant("pt-br", Channel::Sms, "pt-br {code} {expiry_minutes}"),
                ],
                created_at: now,
                updated_at: now,
            }),
            locale: locale.map(str::to_owned),
            app_hash: app_hash.map(str::to_owned),
        }
    }

    #[test]
    fn without_a_requested_locale_the_country_s_region_is_tried_first() {
        let brazil = plan(None, true, None)
            .render("pt", Some("BR"), Channel::Sms, "1234", 5)
            .expect("renders");
        assert_eq!(brazil.body, "pt-br 1234 5");
        assert_eq!(brazil.record.locale, "pt-br");
        assert_eq!(brazil.record.template_id.as_deref(), Some("login"));
        assert_eq!(brazil.record.brand_id.as_deref(), Some("acme"));
        let portugal = plan(None, true, None)
            .render("pt", Some("PT"), Channel::Sms, "1234", 5)
            .expect("renders");
        assert_eq!(portugal.body, "pt 1234");
        // A requested locale is used as given, not joined with the country.
        let asked = plan(Some("pt"), true, None)
            .render("pt", Some("BR"), Channel::Sms, "1234", 5)
            .expect("renders");
        assert_eq!(asked.body, "pt 1234");
    }

    #[test]
    fn the_built_in_text_carries_the_app_hash_only_in_an_sms() {
        // No German voice variant: the built-in text, without the hash.
        let voice = plan(Some("de"), false, Some("FA+9qCX9VSu"))
            .render("de", None, Channel::Voice, "1234", 5)
            .expect("renders");
        assert_eq!(voice.body, messages::code_message("de", "1234", 5));
        assert_eq!(voice.record.template_id, None);
        assert_eq!(voice.record.locale, "de");
        let plan = MessagePlan {
            template: None,
            ..plan(Some("de"), false, Some("FA+9qCX9VSu"))
        };
        let sms = plan
            .render("de", None, Channel::Sms, "1234", 5)
            .expect("renders");
        assert_eq!(
            sms.body,
            format!("{}\nFA+9qCX9VSu", messages::code_message("de", "1234", 5))
        );
        assert_eq!(
            (sms.record.encoding, sms.record.segments),
            messages::sms_encoding(&sms.body)
        );
    }

    #[test]
    fn a_variant_using_brand_without_one_is_refused_naming_brand_id() {
        let refused = plan(Some("en"), false, None)
            .render("en", None, Channel::Sms, "1234", 5)
            .expect_err("no brand");
        assert!(
            matches!(&refused, FlowError::Invalid { field, message }
                if field == "brand_id" && message.contains("{brand}")),
            "{refused:?}"
        );
    }
}
