//! Who is calling, and may they: Bearer keys, per-key requests/minute and tokens/day.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::error::{GatewayError, GatewayErrors};
use crate::store::{KeyInfo, Store, now_ms};

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key name, or `open` on an open gateway.
    pub name: String,
    pub admin: bool,
    pub rpm: Option<u64>,
    pub tokens_per_day: Option<u64>,
}

impl From<KeyInfo> for Caller {
    fn from(k: KeyInfo) -> Self {
        Caller {
            name: k.name,
            admin: k.admin,
            rpm: k.rpm,
            tokens_per_day: k.tokens_per_day,
        }
    }
}

const DAY_MS: i64 = 86_400_000;

/// Requests in the last minute and tokens today, per key.
#[derive(Default)]
pub struct Limits {
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// key → (UTC day number, tokens that day).
    day_tokens: Mutex<HashMap<String, (i64, u64)>>,
}

impl Limits {
    /// Count one request against `caller`'s limits or refuse it.
    pub fn admit(&self, caller: &Caller, store: &Store) -> Result<(), GatewayError> {
        if let Some(tpd) = caller.tokens_per_day {
            let used = self.tokens_today(&caller.name, store)?;
            if used >= tpd {
                let day_end = (now_ms() / DAY_MS + 1) * DAY_MS;
                let wait = ((day_end - now_ms()) / 1000).max(1) as u32;
                return Err(GatewayError::quota(
                    format!(
                        "Key `{}` used its {tpd} tokens for today (UTC); the quota resets at midnight UTC.",
                        caller.name
                    ),
                    wait,
                ));
            }
        }
        if let Some(rpm) = caller.rpm {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let q = recent.entry(caller.name.clone()).or_default();
            let now = Instant::now();
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                q.pop_front();
            }
            if q.len() as u64 >= rpm {
                let wait = q
                    .front()
                    .map(|t| 60 - now.duration_since(*t).as_secs().min(59))
                    .unwrap_or(1) as u32;
                return Err(GatewayError::rate_limited(
                    format!(
                        "Rate limit reached for key `{}`: {rpm} requests per minute.",
                        caller.name
                    ),
                    wait,
                ));
            }
            q.push_back(now);
        }
        Ok(())
    }

    fn tokens_today(&self, key: &str, store: &Store) -> Result<u64, GatewayError> {
        let day = now_ms() / DAY_MS;
        let mut m = self.day_tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((d, n)) = m.get(key)
            && *d == day
        {
            return Ok(*n);
        }
        let n = store.tokens_since(key, day * DAY_MS)?;
        m.insert(key.to_string(), (day, n));
        Ok(n)
    }

    /// Add a finished request's tokens.
    pub fn add_tokens(&self, key: &str, n: u64) {
        let day = now_ms() / DAY_MS;
        let mut m = self.day_tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get_mut(key) {
            if e.0 == day {
                e.1 += n;
            } else {
                // A new day: reload from the ledger on the next request.
                m.remove(key);
            }
        }
    }
}

/// The Bearer token of a request.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Identify the caller; `open` gateways let everyone in as an admin named `open`.
pub fn authenticate(
    headers: &HeaderMap,
    store: &Arc<Store>,
    open: bool,
) -> Result<Caller, GatewayError> {
    if open {
        return Ok(Caller {
            name: "open".into(),
            admin: true,
            rpm: None,
            tokens_per_day: None,
        });
    }
    let Some(token) = bearer(headers) else {
        return Err(GatewayError::unauthorized(
            "Missing API key: send `Authorization: Bearer <key>` (create one with `thaw keys create`).",
        ));
    };
    match store.authenticate(token)? {
        Some(k) => Ok(k.into()),
        None => Err(GatewayError::unauthorized("Incorrect or revoked API key.")),
    }
}
