//! One-time codes: generation, keyed hashing, constant-time checking, and the attempt
//! and expiry rules of a code. Pure: no I/O, time comes in as an argument.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Shortest and longest code a tenant may configure.
pub const CODE_LENGTH_RANGE: std::ops::RangeInclusive<u8> = 4..=10;

/// Draws a numeric code of `length` digits from the thread-local CSPRNG (ChaCha seeded
/// from the operating system). Every digit is uniform, leading zeros included.
pub fn generate_code(length: u8) -> String {
    let length = length.clamp(*CODE_LENGTH_RANGE.start(), *CODE_LENGTH_RANGE.end());
    let mut rng = rand::rng();
    (0..length)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Hashes codes with a server-side key, binding each hash to its verification so a
/// hash copied from one verification is useless in another.
#[derive(Clone)]
pub struct CodeHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHasher(..)")
    }
}

impl CodeHasher {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// HMAC-SHA256 over `verification_id`, a separator and `code`, hex-encoded.
    pub fn hash(&self, verification_id: &str, code: &str) -> String {
        hex::encode(self.mac(verification_id, code))
    }

    fn mac(&self, verification_id: &str, code: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(verification_id.as_bytes());
        mac.update(b"\x1f");
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `code` matches `stored_hex`, compared in constant time.
    pub fn matches(&self, verification_id: &str, code: &str, stored_hex: &str) -> bool {
        let Ok(stored) = hex::decode(stored_hex) else {
            return false;
        };
        let computed = self.mac(verification_id, code);
        computed.ct_eq(stored.as_slice()).into()
    }
}

/// The live code of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveCode {
    pub hash: String,
    pub expires_at: DateTime<Utc>,
}

/// The outcome of checking a submitted code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The code matched; it is now used up.
    Verified,
    /// Wrong code; this many attempts remain.
    Incorrect { attempts_remaining: u32 },
    /// Wrong code, and that was the last attempt.
    AttemptsExceeded,
    /// The code had expired before it was submitted.
    Expired,
    /// No code is live (never sent, already used, or attempts exhausted).
    NoActiveCode,
}

/// Attempt bookkeeping of a verification's code entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeState {
    pub active: Option<ActiveCode>,
    /// Code entries so far (right or wrong) for this verification.
    pub attempts: u32,
    pub max_attempts: u32,
}

impl CodeState {
    /// Checks `code` at `now`, updating attempts and consuming the code as the rules say:
    /// an expired code is not counted as an attempt; a match consumes the code; the
    /// last wrong attempt consumes it too.
    pub fn check(
        &mut self,
        hasher: &CodeHasher,
        verification_id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> CheckOutcome {
        let Some(active) = &self.active else {
            return CheckOutcome::NoActiveCode;
        };
        if now >= active.expires_at {
            self.active = None;
            return CheckOutcome::Expired;
        }
        if self.attempts >= self.max_attempts {
            self.active = None;
            return CheckOutcome::NoActiveCode;
        }
        self.attempts += 1;
        if hasher.matches(verification_id, code, &active.hash) {
            self.active = None;
            return CheckOutcome::Verified;
        }
        let remaining = self.max_attempts.saturating_sub(self.attempts);
        if remaining == 0 {
            self.active = None;
            CheckOutcome::AttemptsExceeded
        } else {
            CheckOutcome::Incorrect {
                attempts_remaining: remaining,
            }
        }
    }

    /// Installs a fresh code, replacing any earlier one.
    pub fn issue(
        &mut self,
        hasher: &CodeHasher,
        verification_id: &str,
        code: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) {
        self.active = Some(ActiveCode {
            hash: hasher.hash(verification_id, code),
            expires_at: now + ttl,
        });
    }
}

/// Counts sends within the 24 hours before `now`; all but the first are resends.
pub fn sends_in_window(sends: &[DateTime<Utc>], now: DateTime<Utc>) -> u32 {
    let since = now - Duration::hours(24);
    let recent = sends.iter().filter(|at| **at > since).count();
    u32::try_from(recent).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> CodeHasher {
        CodeHasher::new([7; 32])
    }

    fn state(max: u32) -> (CodeState, DateTime<Utc>) {
        let now = Utc::now();
        let mut state = CodeState {
            active: None,
            attempts: 0,
            max_attempts: max,
        };
        state.issue(&hasher(), "v1", "123456", now, Duration::minutes(10));
        (state, now)
    }

    #[test]
    fn codes_have_the_requested_length_and_only_digits() {
        for length in 4..=10 {
            let code = generate_code(length);
            assert_eq!(code.len(), usize::from(length));
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
        assert_eq!(generate_code(2).len(), 4);
        assert_eq!(generate_code(20).len(), 10);
    }

    #[test]
    fn codes_are_not_repeated_in_practice() {
        let codes: std::collections::HashSet<_> = (0..200).map(|_| generate_code(10)).collect();
        assert!(codes.len() > 195);
    }

    #[test]
    fn hash_is_keyed_and_bound_to_the_verification() {
        let a = hasher().hash("v1", "123456");
        assert_ne!(a, CodeHasher::new([8; 32]).hash("v1", "123456"));
        assert_ne!(a, hasher().hash("v2", "123456"));
        assert!(!a.contains("123456"));
        assert!(hasher().matches("v1", "123456", &a));
        assert!(!hasher().matches("v1", "123457", &a));
        assert!(!hasher().matches("v1", "123456", "not hex"));
    }

    #[test]
    fn right_code_verifies_once() {
        let (mut state, now) = state(3);
        assert_eq!(
            state.check(&hasher(), "v1", "123456", now),
            CheckOutcome::Verified
        );
        assert_eq!(
            state.check(&hasher(), "v1", "123456", now),
            CheckOutcome::NoActiveCode
        );
    }

    #[test]
    fn wrong_codes_count_down_then_exhaust() {
        let (mut state, now) = state(2);
        assert_eq!(
            state.check(&hasher(), "v1", "000000", now),
            CheckOutcome::Incorrect {
                attempts_remaining: 1
            }
        );
        assert_eq!(
            state.check(&hasher(), "v1", "000001", now),
            CheckOutcome::AttemptsExceeded
        );
        assert_eq!(
            state.check(&hasher(), "v1", "123456", now),
            CheckOutcome::NoActiveCode
        );
    }

    #[test]
    fn expired_code_is_rejected_without_using_an_attempt() {
        let (mut state, now) = state(2);
        let later = now + Duration::minutes(10);
        assert_eq!(
            state.check(&hasher(), "v1", "123456", later),
            CheckOutcome::Expired
        );
        assert_eq!(state.attempts, 0);
        assert_eq!(
            state.check(&hasher(), "v1", "123456", later),
            CheckOutcome::NoActiveCode
        );
    }

    #[test]
    fn send_window_covers_the_last_24_hours() {
        let now = Utc::now();
        assert_eq!(sends_in_window(&[], now), 0);
        assert_eq!(sends_in_window(&[now], now), 1);
        let sends = [now - Duration::hours(25), now - Duration::hours(2), now];
        assert_eq!(sends_in_window(&sends, now), 2);
    }
}
