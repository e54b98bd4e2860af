//! A grouped cost page, parsed from the response's own bytes.
//!
//! The SDK still builds, signs, sends and retries each request and parses every error; only a
//! successful page's body is taken by [`RawBody`] (an interceptor on that one request), and the
//! SDK's deserializer is handed an empty document in its place. The page is then parsed here,
//! borrowing its strings, straight into the caller's aggregate: no map or string per group is
//! built just to be thrown away, which is most of the work of a large refresh.

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use http_body::{Body, Frame};
use serde::Deserialize;

use crate::clock::lock;
use crate::model::CostBasis;

/// The body of the last successful attempt of one request.
#[derive(Debug, Clone, Default)]
pub struct RawBody(Arc<Mutex<Vec<u8>>>);

impl RawBody {
    /// The body read, leaving the slot empty.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *lock(&self.0))
    }
}

impl Intercept for RawBody {
    fn name(&self) -> &'static str {
        "aws-cost-exporter raw page"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if !response.status().is_success() {
            return Ok(());
        }
        // A retried attempt starts over.
        lock(&self.0).clear();
        let inner = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(Tee {
            inner,
            sink: self.0.clone(),
            frames: Vec::new(),
            finished: false,
        });
        Ok(())
    }
}

/// Reads the whole response body into the sink, then yields an empty JSON document.
struct Tee {
    inner: SdkBody,
    sink: Arc<Mutex<Vec<u8>>>,
    /// The frames read so far, joined once at the end.
    frames: Vec<Bytes>,
    finished: bool,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.frames.push(data);
                    }
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    let body = std::mem::take(&mut self.frames).concat();
                    *lock(&self.sink) = body;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{}")))));
                }
            }
        }
    }
}

/// A `GetCostAndUsage` (or `GetCostAndUsageWithResources`) response page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawPage<'a> {
    #[serde(borrow, default)]
    pub results_by_time: Vec<RawResult<'a>>,
    #[serde(borrow, default)]
    pub dimension_value_attributes: Vec<RawAttributes<'a>>,
    #[serde(borrow, default)]
    pub next_page_token: Option<Cow<'a, str>>,
}

/// One result period.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawResult<'a> {
    #[serde(borrow)]
    pub time_period: Option<RawPeriod<'a>>,
    #[serde(borrow, default)]
    pub groups: Vec<RawGroup<'a>>,
    /// The period's total: what an ungrouped query returns.
    #[serde(default)]
    pub total: Option<RawMetrics>,
    #[serde(default)]
    pub estimated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawPeriod<'a> {
    #[serde(borrow)]
    pub start: Cow<'a, str>,
}

/// One group: its keys and one amount per requested cost metric.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawGroup<'a> {
    #[serde(borrow, default)]
    pub keys: Keys<'a>,
    pub metrics: Option<RawMetrics>,
}

/// A group's keys: a query groups by one or two, so they are kept without an allocation.
#[derive(Debug, Default)]
pub struct Keys<'a> {
    first: [Cow<'a, str>; 2],
    /// How many keys the group had (only the first two are kept).
    count: usize,
}

impl<'a> Keys<'a> {
    /// The number of keys the group had.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The keys (at most the first two).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.first[..self.count.min(2)].iter().map(|k| k.as_ref())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Keys<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Keys<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of group keys")
            }

            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut seq: S,
            ) -> Result<Keys<'a>, S::Error> {
                let mut keys = Keys::default();
                while let Some(key) = seq.next_element::<Borrowed<'a>>()? {
                    if let Some(slot) = keys.first.get_mut(keys.count) {
                        *slot = key.0;
                    }
                    keys.count += 1;
                }
                Ok(keys)
            }
        }
        deserializer.deserialize_seq(Visitor(std::marker::PhantomData))
    }
}

/// A string borrowed from the page where it has no escapes.
#[derive(Debug, Deserialize)]
pub struct Borrowed<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Borrowed<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The cost metrics a group may carry, by Cost Explorer's names.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawMetrics {
    pub unblended_cost: Option<RawAmount>,
    pub amortized_cost: Option<RawAmount>,
    pub blended_cost: Option<RawAmount>,
    pub net_unblended_cost: Option<RawAmount>,
    pub net_amortized_cost: Option<RawAmount>,
}

impl RawMetrics {
    pub fn get(&self, basis: CostBasis) -> Option<&RawAmount> {
        match basis {
            CostBasis::Unblended => self.unblended_cost.as_ref(),
            CostBasis::Amortized => self.amortized_cost.as_ref(),
            CostBasis::Blended => self.blended_cost.as_ref(),
            CostBasis::NetUnblended => self.net_unblended_cost.as_ref(),
            CostBasis::NetAmortized => self.net_amortized_cost.as_ref(),
        }
    }
}

/// An amount as Cost Explorer writes it (`{"Amount": "1.5", "Unit": "USD"}`), parsed while the
/// page is read: USD amounts become numbers; anything else keeps its text for the error.
#[derive(Debug, Clone, PartialEq)]
pub enum RawAmount {
    Usd(f64),
    /// Not a finite number, or not in USD: (amount, unit) as written.
    Refused(Box<(String, String)>),
}

impl<'de> Deserialize<'de> for RawAmount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Written<'a> {
            #[serde(borrow, default)]
            amount: Cow<'a, str>,
            #[serde(borrow, default)]
            unit: Cow<'a, str>,
        }
        let written = Written::deserialize(deserializer)?;
        Ok(match written.amount.trim().parse::<f64>() {
            Ok(value) if written.unit == "USD" && value.is_finite() => RawAmount::Usd(value),
            _ => RawAmount::Refused(Box::new((written.amount.into(), written.unit.into()))),
        })
    }
}

/// A dimension value and its attributes (an account's `description` is its name).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawAttributes<'a> {
    #[serde(borrow)]
    pub value: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub attributes: HashMap<Cow<'a, str>, Cow<'a, str>>,
}

/// Parses a page.
pub fn parse(body: &[u8]) -> Result<RawPage<'_>, String> {
    parse_json(body)
}

/// Parses a response body into `T`, borrowing its strings. The body is checked to be UTF-8
/// once, as a whole, rather than string by string.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    let text = std::str::from_utf8(body).map_err(|err| err.to_string())?;
    serde_json::from_str(text).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_with_escapes_and_unknown_fields() {
        let body = br#"{"GroupDefinitions":[{"Type":"DIMENSION","Key":"LINKED_ACCOUNT"}],
            "ResultsByTime":[{"TimePeriod":{"Start":"2026-11-01","End":"2026-11-24"},"Total":{},
            "Groups":[{"Keys":["111111111111","Amazon \"S3\""],"Metrics":{"UnblendedCost":{"Amount":"1.5","Unit":"USD"},"UsageQuantity":{"Amount":"3","Unit":"N/A"}}}],
            "Estimated":true}],
            "DimensionValueAttributes":[{"Value":"111111111111","Attributes":{"description":"Prod \\ main"}}],
            "NextPageToken":"abc"}"#;
        let page = parse(body).unwrap();
        assert_eq!(page.next_page_token.as_deref(), Some("abc"));
        let result = &page.results_by_time[0];
        assert!(result.estimated);
        assert_eq!(result.time_period.as_ref().unwrap().start, "2026-11-01");
        let group = &result.groups[0];
        assert_eq!(
            group.keys.iter().collect::<Vec<_>>(),
            vec!["111111111111", "Amazon \"S3\""]
        );
        let metrics = group.metrics.as_ref().unwrap();
        assert_eq!(
            metrics.get(CostBasis::Unblended),
            Some(&RawAmount::Usd(1.5))
        );
        assert!(metrics.get(CostBasis::Amortized).is_none());
        assert_eq!(
            page.dimension_value_attributes[0].attributes["description"],
            "Prod \\ main"
        );
        // An empty document (what the SDK is handed) and a page without groups parse too.
        assert!(parse(b"{}").unwrap().results_by_time.is_empty());
        assert!(parse(b"{\"ResultsByTime\":[{\"Estimated\":false}]}").is_ok());
        assert!(parse(b"{\"ResultsByTime\":[{\"Groups\":7}]}").is_err());
        // Amounts in another unit, or unparsable, keep their text for the error.
        let refused = parse(
            br#"{"ResultsByTime":[{"Groups":[{"Keys":["a"],"Metrics":{"UnblendedCost":{"Amount":"2","Unit":"EUR"},"BlendedCost":{"Amount":"NaN","Unit":"USD"},"AmortizedCost":{"Amount":"-2.61E-8","Unit":"USD"}}}]}]}"#,
        )
        .unwrap();
        let metrics = refused.results_by_time[0].groups[0]
            .metrics
            .as_ref()
            .unwrap();
        assert_eq!(
            metrics.get(CostBasis::Unblended),
            Some(&RawAmount::Refused(Box::new(("2".into(), "EUR".into()))))
        );
        assert_eq!(
            metrics.get(CostBasis::Blended),
            Some(&RawAmount::Refused(Box::new(("NaN".into(), "USD".into()))))
        );
        assert_eq!(
            metrics.get(CostBasis::Amortized),
            Some(&RawAmount::Usd(-2.61e-8))
        );
        // A third key is counted, not kept.
        let three = parse(br#"{"ResultsByTime":[{"Groups":[{"Keys":["a","b","c"]}]}]}"#).unwrap();
        let keys = &three.results_by_time[0].groups[0].keys;
        assert_eq!((keys.count(), keys.iter().count()), (3, 2));
    }
}
