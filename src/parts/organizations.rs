//! Organizations: account names and the member list from AWS Organizations
//! (`organizations: true`, for a management account). Fetched on the first refresh and then
//! once every [`ORGANIZATIONS_INTERVAL`]; free (Organizations does not bill ListAccounts). It
//! serves no family of its own: its names label every account the other parts serve (over Cost
//! Explorer's), and its members without cost yet appear in `aws_cost_account_info`. The names
//! survive a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Cx, Encoding, Keys, Out, Part, PartError, Shared};
use crate::exposition::FamilyDesc;
use crate::failure::{Concise, Reason};
use crate::model::Integration;
use crate::schema::{ConfigError, NativeIntegration};
use crate::storage::{Fingerprint, LoadError, Reader, Writer};

/// How often the organization's account list is fetched again.
pub const ORGANIZATIONS_INTERVAL: TimeDelta = TimeDelta::hours(24);

/// The organizations part.
pub struct Organizations;

/// The organization's accounts, and when they were fetched.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    /// Account id to name.
    pub accounts: Arc<BTreeMap<String, String>>,
    /// Not kept across restarts: a restart fetches them again on its first refresh.
    pub fetched_at: Option<DateTime<Utc>>,
}

impl Part for Organizations {
    const NAME: &'static str = "organizations";
    const OWN_CADENCE: bool = true;
    const FAMILIES: &'static [FamilyDesc] = &[];
    type Fetched = BTreeMap<String, String>;
    type Kept = Kept;

    fn enabled(integration: &Integration) -> bool {
        integration.organizations
    }

    /// `organizations` and `organizations_endpoint_url`.
    fn configure(
        raw: &NativeIntegration,
        keys: &Keys<'_>,
        into: &mut Integration,
    ) -> Result<(), ConfigError> {
        into.organizations = raw.organizations.unwrap_or(false);
        into.organizations_endpoint_url = keys.x.url(
            &keys.key("organizations_endpoint_url"),
            &raw.organizations_endpoint_url,
        )?;
        Ok(())
    }

    fn fingerprint(integration: &Integration, _data_delay_days: u32, print: &mut Fingerprint) {
        print.str(&integration.account_id);
    }

    /// Once every [`ORGANIZATIONS_INTERVAL`].
    fn due(cx: &Cx<'_>, kept: &Kept) -> bool {
        kept.fetched_at
            .is_none_or(|at| cx.now - at >= ORGANIZATIONS_INTERVAL)
    }

    async fn fetch(cx: &Cx<'_>, _kept: &Kept) -> Result<BTreeMap<String, String>, PartError> {
        let Some(client) = &cx.clients.organizations else {
            return Err(PartError {
                reason: Reason::Credentials,
                text: Concise::default().elidable("organizations: no Organizations client"),
            });
        };
        client
            .accounts()
            .await
            .map(|(accounts, _pages)| accounts)
            .map_err(|err| PartError::new("organizations", &err))
    }

    fn remember(cx: &Cx<'_>, accounts: &BTreeMap<String, String>, kept: &mut Kept) {
        *kept = Kept {
            accounts: Arc::new(accounts.clone()),
            fetched_at: Some(cx.now),
        };
    }

    fn share(_fetched: Option<&BTreeMap<String, String>>, kept: &Kept, shared: &mut Shared) {
        shared.names.organizations = kept.accounts.clone();
    }

    fn encode(
        _cx: &Encoding<'_>,
        _fetched: Option<&BTreeMap<String, String>>,
        _kept: &Kept,
        _out: &mut Out<'_>,
    ) {
    }

    fn save(kept: &Kept, w: &mut Writer) {
        w.map(&kept.accounts);
    }

    fn load(r: &mut Reader<'_>) -> Result<Kept, LoadError> {
        Ok(Kept {
            accounts: Arc::new(r.map()?),
            fetched_at: None,
        })
    }
}
