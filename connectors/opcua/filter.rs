//! The server-side filter of a subscribed channel and what a refusal of it means.
//!
//! A channel's `server_deadband` becomes the monitored item's DataChangeFilter: a number an
//! absolute deadband, a percentage (`"2%"`) a percent deadband, which the server computes
//! against the node's EURange (high − low). The standard allows a percent deadband only on a
//! node with an EURange property; strict servers (node-opcua) refuse it without one, lax ones
//! (python asyncua) accept it and then send every change. So before asking for one, the
//! connector looks for the EURange itself ([`without_eurange`]) and reports a channel without
//! one as bad, whatever the server: the same configuration fails the same way everywhere, and
//! the other channels keep flowing.

use std::sync::Arc;

use opcua::types::{
    BrowsePath, DataChangeFilter, DataChangeTrigger, DeadbandType, ExtensionObject, NodeId,
    QualifiedName, ReferenceTypeId, RelativePath, RelativePathElement, StatusCode,
};

use super::session::{Connection, Endpoint};
use super::value;
use osgate_core::transform::Deadband;

/// Browse paths translated per request (servers cap the operations per call).
const PER_CALL: usize = 1000;

/// The DataChangeFilter of a deadband (a null filter without one: the server's default,
/// every change of value or status).
pub fn data_change(deadband: Option<Deadband>) -> ExtensionObject {
    let (deadband_type, deadband_value) = match deadband {
        None => return ExtensionObject::null(),
        Some(Deadband::Absolute(v)) => (DeadbandType::Absolute, v),
        Some(Deadband::Percent(p)) => (DeadbandType::Percent, p),
    };
    ExtensionObject::from_message(DataChangeFilter {
        trigger: DataChangeTrigger::StatusValue,
        deadband_type: deadband_type as u32,
        deadband_value,
    })
}

/// A deadband as it is configured: `0.5`, `"2%"`.
pub fn show(d: Deadband) -> String {
    match d {
        Deadband::Absolute(v) => v.to_string(),
        Deadband::Percent(p) => format!("\"{p}%\""),
    }
}

/// Why a channel whose node has no EURange cannot have its percent deadband.
pub fn no_eurange(d: Deadband) -> Arc<str> {
    format!(
        "the node has no EURange, and server_deadband {} is a percentage of it; use an absolute deadband",
        show(d)
    )
    .into()
}

/// The reason of a monitored item the server refused with `code`, naming the setting the
/// code is about: the deadband (`BadMonitoredItemFilterUnsupported`, `BadFilterNotAllowed`,
/// `BadDeadbandFilterInvalid`), the array index (`BadIndexRangeInvalid`,
/// `BadIndexRangeNoData`), else the code's name alone.
pub fn refusal(code: StatusCode, deadband: Option<Deadband>, index: Option<u32>) -> Arc<str> {
    let name = value::status_name(code);
    let filter = matches!(
        code,
        StatusCode::BadMonitoredItemFilterUnsupported
            | StatusCode::BadMonitoredItemFilterInvalid
            | StatusCode::BadFilterNotAllowed
            | StatusCode::BadDeadbandFilterInvalid
    );
    match (deadband, index) {
        (Some(d), _) if filter => {
            let needs = match d {
                Deadband::Percent(_) => "a numeric node with an EURange",
                Deadband::Absolute(_) => "a numeric node",
            };
            format!(
                "{name}: the server refused server_deadband {} (it needs {needs})",
                show(d)
            )
            .into()
        }
        (_, Some(i)) => value::index_reason(code, i),
        _ => name.into(),
    }
}

/// Which of `nodes` have no EURange property (`true` at its position). A server that cannot
/// answer (no TranslateBrowsePaths service, an error) leaves the decision to it: none is
/// reported then. Nodes that do not exist are not reported here either: the monitored item
/// gets the server's own status for them.
pub async fn without_eurange(ep: &Endpoint, conn: &Connection, nodes: &[NodeId]) -> Vec<bool> {
    let mut out = Vec::with_capacity(nodes.len());
    for chunk in nodes.chunks(PER_CALL) {
        let paths: Vec<BrowsePath> = chunk.iter().map(eurange_path).collect();
        let answer = ep
            .bounded(
                "TranslateBrowsePathsToNodeIds answer",
                conn.session.translate_browse_paths_to_node_ids(&paths),
            )
            .await;
        match answer {
            Ok(Ok(results)) if results.len() == paths.len() => {
                out.extend(results.iter().map(|r| {
                    r.status_code == StatusCode::BadNoMatch
                        || (r.status_code.is_good() && r.targets.as_ref().is_none_or(Vec::is_empty))
                }));
            }
            other => {
                let why = match other {
                    Ok(Ok(r)) => format!("{} results for {} paths", r.len(), paths.len()),
                    Ok(Err(e)) => value::status_name(e.status()).to_string(),
                    Err(f) => f.message,
                };
                tracing::debug!(url = %ep.url, %why, "EURange lookup failed; the server decides");
                out.extend(std::iter::repeat_n(false, chunk.len()));
            }
        }
    }
    out
}

/// The path from `node` to its EURange property.
fn eurange_path(node: &NodeId) -> BrowsePath {
    BrowsePath {
        starting_node: node.clone(),
        relative_path: RelativePath {
            elements: Some(vec![RelativePathElement {
                reference_type_id: ReferenceTypeId::HasProperty.into(),
                is_inverse: false,
                include_subtypes: true,
                target_name: QualifiedName::new(0, "EURange"),
            }]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadbands_become_filters() {
        assert!(data_change(None).is_null());
        let f = data_change(Some(Deadband::Percent(2.0)))
            .into_inner_as::<DataChangeFilter>()
            .expect("a DataChangeFilter");
        assert_eq!(f.deadband_type, DeadbandType::Percent as u32);
        assert_eq!(f.deadband_value, 2.0);
        assert_eq!(f.trigger, DataChangeTrigger::StatusValue);
        let f = data_change(Some(Deadband::Absolute(0.5)))
            .into_inner_as::<DataChangeFilter>()
            .expect("a DataChangeFilter");
        assert_eq!(f.deadband_type, DeadbandType::Absolute as u32);
        assert_eq!(f.deadband_value, 0.5);
    }

    #[test]
    fn refusals_name_the_setting() {
        let pct = Some(Deadband::Percent(2.0));
        let r = refusal(StatusCode::BadMonitoredItemFilterUnsupported, pct, None);
        assert_eq!(
            &*r,
            "BadMonitoredItemFilterUnsupported: the server refused server_deadband \"2%\" (it needs a numeric node with an EURange)"
        );
        let r = refusal(
            StatusCode::BadFilterNotAllowed,
            Some(Deadband::Absolute(0.5)),
            None,
        );
        assert!(r.contains("server_deadband 0.5") && r.contains("numeric"), "{r}");
        let r = refusal(StatusCode::BadIndexRangeNoData, None, Some(9));
        assert!(r.starts_with("BadIndexRangeNoData") && r.contains("index 9"), "{r}");
        assert_eq!(
            &*refusal(StatusCode::BadNodeIdUnknown, pct, Some(1)),
            "BadNodeIdUnknown"
        );
        assert!(no_eurange(Deadband::Percent(2.0)).contains("no EURange"));
    }

    #[test]
    fn the_eurange_path_is_a_standard_property() {
        let p = eurange_path(&NodeId::new(2, "Level"));
        let e = &p.relative_path.elements.as_ref().unwrap()[0];
        assert_eq!(e.target_name, QualifiedName::new(0, "EURange"));
        assert_eq!(e.reference_type_id, NodeId::from(ReferenceTypeId::HasProperty));
        assert!(!e.is_inverse && e.include_subtypes);
    }
}
