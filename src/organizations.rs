//! Account names and the member list from AWS Organizations (`organizations: true`).

use std::collections::BTreeMap;

use aws_sdk_organizations::Client;

use crate::failure::{AwsError, Classify, Concise, Reason, ToConcise};

/// Why listing the organization's accounts failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OrganizationsError(#[from] pub AwsError);

impl Classify for OrganizationsError {
    fn reason(&self) -> Reason {
        self.0.reason()
    }
}

impl ToConcise for OrganizationsError {
    fn concise(&self) -> Concise {
        self.0.concise()
    }
}

/// An Organizations client for one integration (its management account).
#[derive(Debug, Clone)]
pub struct Organizations {
    client: Client,
}

impl Organizations {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Every account of the organization, id to name, and the pages (requests) it took.
    pub async fn accounts(&self) -> Result<(BTreeMap<String, String>, u32), OrganizationsError> {
        let mut accounts = BTreeMap::new();
        let mut pages = 0;
        // The most accounts a page holds: the fewest requests.
        let mut stream = self
            .client
            .list_accounts()
            .max_results(20)
            .into_paginator()
            .send();
        while let Some(page) = stream.next().await {
            let page = page.map_err(|err| AwsError::from_sdk("ListAccounts", &err))?;
            pages += 1;
            for account in page.accounts() {
                if let (Some(id), Some(name)) = (account.id(), account.name()) {
                    accounts.insert(id.to_string(), name.to_string());
                }
            }
        }
        Ok((accounts, pages))
    }
}
