//! Tenants, API keys, the operator credential, settings and blocklists.

use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::{ApiKey, BlockedNumber, Tenant};
use crate::phone;
use crate::settings::PhoneSettings;
use crate::store::{key, StoreError, Tree};

use crate::flows::{Caller, Engine, FlowError};

const OPERATOR_KEY: &[u8] = b"operator_key_sha256";

/// A tenant as the API shows it; `api_key` only right after creation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// A key as listed: never the secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A key right after creation: the only time its secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyView,
    pub api_key: String,
}

/// Body of `POST /v1/blocklist`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub phone: String,
    pub reason: Option<String>,
}

fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::rng().random();
    format!("{prefix}{}", hex::encode(bytes))
}

fn check_name(name: Option<&str>, field: &str, required: bool) -> Result<String, FlowError> {
    let name = name.map(str::trim).unwrap_or("");
    if name.is_empty() && required {
        return Err(FlowError::invalid(field, "must not be empty"));
    }
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(FlowError::invalid(
            field,
            "must be at most 100 characters without control characters",
        ));
    }
    Ok(name.to_owned())
}

/// What start-up did about the operator credential.
#[derive(Debug, PartialEq, Eq)]
pub enum OperatorKey {
    /// Taken from configuration (its hash is stored).
    Configured,
    /// Already stored from an earlier start.
    Stored,
    /// Generated now; this is the only time it is visible.
    Generated(String),
}

impl Engine {
    /// Installs the operator credential: the configured one, the stored one, or a new one.
    pub fn init_operator_key(&self, configured: Option<&str>) -> Result<OperatorKey, FlowError> {
        if let Some(secret) = configured {
            if secret.len() < 16 {
                return Err(FlowError::invalid(
                    "operator_key",
                    "must be at least 16 characters",
                ));
            }
            self.db.put(Tree::Meta, OPERATOR_KEY, &sha256_hex(secret))?;
            return Ok(OperatorKey::Configured);
        }
        if self.db.get::<String>(Tree::Meta, OPERATOR_KEY)?.is_some() {
            return Ok(OperatorKey::Stored);
        }
        let secret = new_secret("dgop_");
        self.db
            .put(Tree::Meta, OPERATOR_KEY, &sha256_hex(&secret))?;
        Ok(OperatorKey::Generated(secret))
    }

    /// Whether `secret` is the operator credential.
    pub fn is_operator(&self, secret: &str) -> Result<bool, StoreError> {
        let Some(stored) = self.db.get::<String>(Tree::Meta, OPERATOR_KEY)? else {
            return Ok(false);
        };
        Ok(sha256_hex(secret)
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into())
    }

    /// The tenant an API key belongs to.
    pub fn tenant_for_key(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        let hash = sha256_hex(secret);
        self.replica
            .caches
            .key(&hash, || self.db.get(Tree::ApiKeys, hash.as_bytes()))
    }

    pub async fn create_tenant(&self, name: Option<&str>) -> Result<TenantView, FlowError> {
        let name = check_name(name, "name", true)?;
        let tenant = Tenant {
            id: Engine::id(),
            name,
            created_at: self.clock.now(),
        };
        self.db.put(Tree::Tenants, tenant.id.as_bytes(), &tenant)?;
        let created = self.store_key(&tenant.id, "default")?;
        self.db.sync().await?;
        Ok(TenantView {
            id: tenant.id,
            name: tenant.name,
            created_at: tenant.created_at,
            api_key: Some(created.api_key),
        })
    }

    pub fn list_tenants(&self) -> Result<Vec<TenantView>, FlowError> {
        let tenants: Vec<Tenant> = self.db.scan(Tree::Tenants, b"", 100_000, false)?;
        Ok(tenants
            .into_iter()
            .map(|t| TenantView {
                id: t.id,
                name: t.name,
                created_at: t.created_at,
                api_key: None,
            })
            .collect())
    }

    fn store_key(&self, tenant_id: &str, name: &str) -> Result<CreatedKey, FlowError> {
        let secret = new_secret("dg_");
        let record = ApiKey {
            id: Engine::id(),
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            prefix: secret.chars().take(11).collect(),
            hash: sha256_hex(&secret),
            created_at: self.clock.now(),
        };
        self.db
            .put(Tree::TenantKeys, &key(&[tenant_id, &record.id]), &record)?;
        self.db
            .put(Tree::ApiKeys, record.hash.as_bytes(), &record)?;
        Ok(CreatedKey {
            key: view(record),
            api_key: secret,
        })
    }

    pub async fn create_key(
        &self,
        caller: &Caller,
        name: Option<&str>,
    ) -> Result<CreatedKey, FlowError> {
        let name = check_name(name, "name", false)?;
        let created = self.store_key(&caller.tenant_id, &name)?;
        self.db.sync().await?;
        Ok(created)
    }

    pub fn list_keys(&self, caller: &Caller) -> Result<Vec<KeyView>, FlowError> {
        let keys: Vec<ApiKey> = self.db.scan(
            Tree::TenantKeys,
            &key(&[&caller.tenant_id, ""]),
            10_000,
            false,
        )?;
        Ok(keys.into_iter().map(view).collect())
    }

    /// Revokes one of the caller's keys; the last key cannot be revoked.
    pub async fn revoke_key(&self, caller: &Caller, id: &str) -> Result<(), FlowError> {
        let tenant_key = key(&[&caller.tenant_id, id]);
        let record: ApiKey = self
            .db
            .get(Tree::TenantKeys, &tenant_key)?
            .ok_or(FlowError::NotFound("API key"))?;
        if self.list_keys(caller)?.len() <= 1 {
            return Err(FlowError::Conflict {
                code: "last_key",
                message: "cannot revoke the tenant's last API key; create another first".into(),
            });
        }
        // Authentication goes through `ApiKeys`: remove that first so the key stops working.
        self.replica.caches.remove_key(&record.hash, || {
            self.db.remove(Tree::ApiKeys, record.hash.as_bytes())
        })?;
        self.changed(&crate::changes::Change::Key {
            hash: record.hash.clone(),
        })?;
        self.db.remove(Tree::TenantKeys, &tenant_key)?;
        self.db.sync().await?;
        Ok(())
    }

    pub async fn block(
        &self,
        caller: &Caller,
        request: BlockRequest,
    ) -> Result<BlockedNumber, FlowError> {
        let e164 = phone::to_e164(&request.phone).map_err(|reason| FlowError::InvalidPhone {
            field: "phone",
            reason,
        })?;
        let reason = request
            .reason
            .map(|r| check_name(Some(&r), "reason", false))
            .transpose()?
            .filter(|r| !r.is_empty());
        let entry = BlockedNumber {
            phone: e164,
            reason,
            created_at: self.clock.now(),
        };
        self.db.put(
            Tree::Blocklist,
            &self.db.number_key(&caller.tenant_id, &entry.phone)?,
            &entry,
        )?;
        self.blocklist_changed(&caller.tenant_id, &entry.phone)?;
        self.db.sync().await?;
        Ok(entry)
    }

    pub fn blocklist(&self, caller: &Caller) -> Result<Vec<BlockedNumber>, FlowError> {
        // Keys name numbers hashed: the list is put in the numbers' order here.
        let mut entries: Vec<BlockedNumber> = self.db.scan(
            Tree::Blocklist,
            &key(&[&caller.tenant_id, ""]),
            100_000,
            false,
        )?;
        entries.sort_by(|a, b| a.phone.cmp(&b.phone));
        Ok(entries)
    }

    pub async fn unblock(&self, caller: &Caller, phone_input: &str) -> Result<(), FlowError> {
        let e164 = phone::to_e164(phone_input).map_err(|reason| FlowError::InvalidPhone {
            field: "phone",
            reason,
        })?;
        if !self.db.remove(
            Tree::Blocklist,
            &self.db.number_key(&caller.tenant_id, &e164)?,
        )? {
            return Err(FlowError::NotFound("blocklist entry"));
        }
        self.blocklist_changed(&caller.tenant_id, &e164)?;
        self.db.sync().await?;
        Ok(())
    }

    /// After a change of the blocklist entry of `e164`: this replica's cache drops it,
    /// and the change log tells the others.
    fn blocklist_changed(&self, tenant_id: &str, e164: &str) -> Result<(), StoreError> {
        self.replica.caches.forget_blocked(tenant_id, e164);
        self.changed(&crate::changes::Change::Blocklist {
            tenant_id: tenant_id.to_owned(),
            phone: e164.to_owned(),
        })
    }
}

fn view(record: ApiKey) -> KeyView {
    KeyView {
        id: record.id,
        name: record.name,
        prefix: record.prefix,
        created_at: record.created_at,
    }
}

impl Engine {
    /// The tenant's settings, or the defaults when the tenant never saved any.
    pub fn settings(&self, tenant_id: &str) -> Result<Arc<PhoneSettings>, StoreError> {
        let loaded = self.replica.caches.settings(tenant_id, || {
            let stored: Option<PhoneSettings> =
                self.db.get(Tree::Settings, tenant_id.as_bytes())?;
            Ok(Some(Arc::new(stored.unwrap_or_default())))
        })?;
        Ok(loaded.unwrap_or_default())
    }

    /// Validates and stores the tenant's settings.
    pub async fn put_settings(
        &self,
        tenant_id: &str,
        settings: PhoneSettings,
    ) -> Result<PhoneSettings, FlowError> {
        settings
            .validate()
            .map_err(|err| FlowError::invalid(err.field, err.message))?;
        self.replica
            .caches
            .store_settings(tenant_id, Arc::new(settings.clone()), || {
                self.db.put(Tree::Settings, tenant_id.as_bytes(), &settings)
            })?;
        self.changed(&crate::changes::Change::Settings {
            tenant_id: tenant_id.to_owned(),
        })?;
        self.db.sync().await?;
        Ok(settings)
    }

    /// Admits one change to the tenant's configuration, within its budget of
    /// [`CHANGE_LIMIT`]: every such change is a write and, on a shared store, an entry
    /// of the change log every replica reads and applies, so one tenant's stream of
    /// changes must not hold up the others'. A request over the budget is refused
    /// before anything is written.
    pub fn admit_change(&self, tenant_id: &str) -> Result<(), FlowError> {
        let bucket = format!("changes/t/{tenant_id}");
        self.limits
            .take(&bucket, CHANGE_LIMIT, self.clock.now())?
            .map_err(|limited| FlowError::RateLimited {
                code: "rate_limited",
                message: "too many configuration changes for this tenant; retry later".into(),
                retry_after_secs: limited.retry_after_secs,
            })
    }
}

/// Configuration changes a tenant may make: 20 a second on average, 300 at once.
pub const CHANGE_LIMIT: crate::settings::BucketLimit = crate::settings::BucketLimit {
    per_minute: 1_200,
    burst: 300,
};
