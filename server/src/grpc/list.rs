//! ListCalls: its request validated into a store query, and its page tokens.
//!
//! A page token is the store cursor (`p<n>`, the position of the last call
//! of the page) and, when the listing has filters or an order, a fingerprint
//! of them (`p<n>.<16 hex>`). The cursor alone would be wrong under other
//! filters (it skips or repeats calls), so a token used with other filters or
//! another order is refused rather than silently giving a wrong page. A
//! listing without filters keeps the plain `p<n>` tokens of older servers.

use chrono::{DateTime, Utc};
use voice_agent_proto::v1 as pb;

use super::errors::invalid;
use crate::call::CallStatus;
use crate::config::is_e164;
use crate::store::CallFilter;
use tonic::Status;

/// Default page size (`page_size` 0).
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Most entries of `statuses` (there are nine statuses).
pub const MAX_STATUSES: usize = 9;

/// A validated ListCalls request.
#[derive(Debug)]
pub struct Query {
    /// What to list, in which order.
    pub filter: CallFilter,
    /// Calls per page.
    pub page_size: usize,
    /// The cursor of the previous page.
    pub after: Option<i64>,
    /// Fingerprint of the filter and order; `None` for a plain listing.
    fingerprint: Option<String>,
}

impl Query {
    /// The token of the page after the one ending at `cursor`.
    pub fn token(&self, cursor: i64) -> String {
        match &self.fingerprint {
            None => format!("p{cursor}"),
            Some(f) => format!("p{cursor}.{f}"),
        }
    }
}

fn status_from_pb(s: pb::CallStatus) -> Option<CallStatus> {
    Some(match s {
        pb::CallStatus::Unspecified => return None,
        pb::CallStatus::Queued => CallStatus::Queued,
        pb::CallStatus::Initiated => CallStatus::Initiated,
        pb::CallStatus::Ringing => CallStatus::Ringing,
        pb::CallStatus::InProgress => CallStatus::InProgress,
        pb::CallStatus::Completed => CallStatus::Completed,
        pb::CallStatus::Busy => CallStatus::Busy,
        pb::CallStatus::NoAnswer => CallStatus::NoAnswer,
        pb::CallStatus::Canceled => CallStatus::Canceled,
        pb::CallStatus::Failed => CallStatus::Failed,
    })
}

fn time(field: &str, t: Option<prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>, Status> {
    let Some(t) = t else { return Ok(None) };
    let valid = u32::try_from(t.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        // Before year 1 or after 9999: outside what the proto JSON mapping (RFC 3339) allows.
        .filter(|d| (1..=9999).contains(&chrono::Datelike::year(d)));
    match valid {
        Some(d) => Ok(Some(d)),
        None => Err(invalid(
            field,
            format!(
                "not a valid timestamp (seconds {}, nanos {}): years 1 to 9999, nanos 0 to 999999999",
                t.seconds, t.nanos
            ),
        )),
    }
}

/// FNV-1a, 64 bits: a fingerprint that is the same on every server build
/// (std's hasher is not promised to be), so a token survives a rolling update.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Validates a ListCalls request.
pub fn parse(req: pb::ListCallsRequest) -> Result<Query, Status> {
    let page_size = match req.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n @ 1..=MAX_PAGE_SIZE => n as usize,
        n => {
            return Err(invalid(
                "page_size",
                format!("must be 1 to {MAX_PAGE_SIZE} (0 = {DEFAULT_PAGE_SIZE}), got {n}"),
            ));
        }
    };
    if req.statuses.len() > MAX_STATUSES {
        return Err(invalid(
            "statuses",
            format!("at most {MAX_STATUSES} entries, got {}", req.statuses.len()),
        ));
    }
    let mut statuses = Vec::with_capacity(req.statuses.len());
    for (i, raw) in req.statuses.iter().enumerate() {
        match pb::CallStatus::try_from(*raw).ok().and_then(status_from_pb) {
            Some(s) => statuses.push(s),
            None => {
                return Err(invalid(
                    &format!("statuses[{i}]"),
                    format!("not a call status: {raw} (CALL_STATUS_UNSPECIFIED is not one)"),
                ));
            }
        }
    }
    statuses.sort_by_key(|s| *s as u8);
    statuses.dedup();
    let to = if req.to.is_empty() {
        None
    } else if is_e164(&req.to) {
        Some(req.to)
    } else {
        return Err(invalid(
            "to",
            format!(
                "must be E.164: '+' then 8 to 15 digits (got {})",
                super::quoted(&req.to)
            ),
        ));
    };
    let created_after = time("created_after", req.created_after)?;
    let created_before = time("created_before", req.created_before)?;
    if let (Some(a), Some(b)) = (created_after, created_before)
        && b <= a
    {
        return Err(invalid(
            "created_before",
            format!(
                "must be later than created_after ({} is not after {})",
                b.to_rfc3339(),
                a.to_rfc3339()
            ),
        ));
    }
    let oldest_first = match pb::ListCallsOrder::try_from(req.order) {
        Ok(pb::ListCallsOrder::Unspecified | pb::ListCallsOrder::NewestFirst) => false,
        Ok(pb::ListCallsOrder::OldestFirst) => true,
        Err(_) => return Err(invalid("order", format!("unknown value {}", req.order))),
    };
    let filter = CallFilter {
        statuses,
        to,
        created_after,
        created_before,
        oldest_first,
    };
    let fingerprint = (!filter.is_plain()).then(|| format!("{:016x}", fnv1a(&filter.canonical())));
    let after = if req.page_token.is_empty() {
        None
    } else {
        let bad = || invalid("page_token", "not a token returned by ListCalls");
        let (cursor, their) = match req.page_token.split_once('.') {
            Some((c, f)) => (c, Some(f)),
            None => (req.page_token.as_str(), None),
        };
        let cursor = cursor
            .strip_prefix('p')
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(bad)?;
        if their != fingerprint.as_deref() {
            return Err(invalid(
                "page_token",
                "was returned for other filters or another order: repeat the filters and order of the first page",
            ));
        }
        Some(cursor)
    };
    Ok(Query {
        filter,
        page_size,
        after,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn violation(s: &Status) -> String {
        let bad = s.get_error_details().bad_request().cloned().expect("a BadRequest");
        bad.field_violations[0].field.clone()
    }

    #[test]
    fn plain_listings_keep_the_old_tokens() {
        let q = parse(pb::ListCallsRequest::default()).unwrap();
        assert_eq!(q.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(q.token(42), "p42");
        let q = parse(pb::ListCallsRequest {
            page_token: "p42".into(),
            order: pb::ListCallsOrder::NewestFirst as i32,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.after, Some(42));
    }

    #[test]
    fn a_token_only_works_with_the_filters_it_came_with() {
        let busy = pb::ListCallsRequest {
            statuses: vec![pb::CallStatus::Busy as i32, pb::CallStatus::Failed as i32],
            ..Default::default()
        };
        let token = parse(busy.clone()).unwrap().token(7);
        assert!(token.starts_with("p7."), "{token}");
        // The same filters in another order of entries: the same listing.
        let same = pb::ListCallsRequest {
            statuses: vec![pb::CallStatus::Failed as i32, pb::CallStatus::Busy as i32],
            page_token: token.clone(),
            ..Default::default()
        };
        assert_eq!(parse(same).unwrap().after, Some(7));
        for other in [
            pb::ListCallsRequest::default(),
            pb::ListCallsRequest {
                order: pb::ListCallsOrder::OldestFirst as i32,
                ..busy.clone()
            },
            pb::ListCallsRequest {
                to: "+15550100".into(),
                ..busy.clone()
            },
        ] {
            let e = parse(pb::ListCallsRequest {
                page_token: token.clone(),
                ..other
            })
            .unwrap_err();
            assert_eq!(violation(&e), "page_token");
        }
        // A plain token under filters is refused too.
        let e = parse(pb::ListCallsRequest {
            page_token: "p7".into(),
            ..busy
        })
        .unwrap_err();
        assert_eq!(violation(&e), "page_token");
    }

    #[test]
    fn bad_filters_name_their_field() {
        let ts = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
        let cases = [
            (
                pb::ListCallsRequest {
                    statuses: vec![pb::CallStatus::Busy as i32, 0],
                    ..Default::default()
                },
                "statuses[1]",
            ),
            (
                pb::ListCallsRequest {
                    statuses: vec![99],
                    ..Default::default()
                },
                "statuses[0]",
            ),
            (
                pb::ListCallsRequest {
                    statuses: vec![5; 10],
                    ..Default::default()
                },
                "statuses",
            ),
            (
                pb::ListCallsRequest {
                    to: "5550100".into(),
                    ..Default::default()
                },
                "to",
            ),
            (
                pb::ListCallsRequest {
                    created_after: ts(0, -1),
                    ..Default::default()
                },
                "created_after",
            ),
            (
                pb::ListCallsRequest {
                    created_before: ts(i64::MAX, 0),
                    ..Default::default()
                },
                "created_before",
            ),
            (
                pb::ListCallsRequest {
                    created_after: ts(100, 0),
                    created_before: ts(100, 0),
                    ..Default::default()
                },
                "created_before",
            ),
            (
                pb::ListCallsRequest {
                    order: 9,
                    ..Default::default()
                },
                "order",
            ),
            (
                pb::ListCallsRequest {
                    page_size: 101,
                    ..Default::default()
                },
                "page_size",
            ),
            (
                pb::ListCallsRequest {
                    page_token: "x".into(),
                    ..Default::default()
                },
                "page_token",
            ),
        ];
        for (req, field) in cases {
            let e = parse(req.clone()).expect_err(&format!("{req:?} was accepted"));
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert_eq!(violation(&e), field, "{req:?}");
        }
    }

    #[test]
    fn fingerprints_are_stable() {
        // FNV-1a test vectors: a token from one build is read by the next.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
