//! Spans to OTLP protobuf (`ExportTraceServiceRequest`), with the message
//! types of the `opentelemetry-proto` crate and `prost` to encode them.

use std::time::UNIX_EPOCH;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;

use crate::span::{Attribute, SpanKind, SpanRecord, SpanStatus, Value, keys};

/// Why a span was exported: head sampling or one of the tail rules. Ordered
/// by how much the reason says about the span (a group of linked spans goes
/// out under its strongest reason).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kept {
    Sampled,
    Slow,
    Error,
}

impl Kept {
    pub fn as_str(self) -> &'static str {
        match self {
            Kept::Sampled => "sampled",
            Kept::Slow => "slow",
            Kept::Error => "error",
        }
    }
}

// OTLP `SpanFlags`: the W3C flags in the low byte, then whether the
// remote-ness of the parent (or link) is known, and whether it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// The `Resource` every batch carries: `service.name`, the SDK attributes the
/// specification asks for, and the configured ones.
pub fn resource(service_name: &str, extra: &[(String, String)]) -> Resource {
    let mut attributes = vec![
        kv_str("service.name", service_name),
        kv_str("telemetry.sdk.name", "umbra-trace"),
        kv_str("telemetry.sdk.language", "rust"),
        kv_str("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ];
    attributes.extend(extra.iter().map(|(k, v)| kv_str(k, v)));
    Resource {
        attributes,
        ..Default::default()
    }
}

/// One request body: every span in one resource and one scope.
pub fn encode<'a>(
    resource: &Resource,
    spans: impl Iterator<Item = (&'a SpanRecord, Kept)>,
) -> Vec<u8> {
    let spans: Vec<Span> = spans.map(|(s, kept)| span(s, kept)).collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "umbra".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    req.encode_to_vec()
}

fn span(s: &SpanRecord, kept: Kept) -> Span {
    let start = s.start.duration_since(UNIX_EPOCH).unwrap_or_default();
    let end = start + s.duration;
    let mut attributes = Vec::with_capacity(s.attributes.len() + 4);
    if let Some(code) = s.http_status {
        attributes.push(kv(
            keys::HTTP_STATUS,
            any_value::Value::IntValue(code as i64),
        ));
    }
    if let Some(p) = &s.profile {
        attributes.push(kv_str(keys::PROFILE, p.as_str()));
    }
    if let Some(r) = &s.role {
        attributes.push(kv_str(keys::ROLE, r.as_str()));
    }
    attributes.push(kv_str(keys::KEPT, kept.as_str()));
    attributes.extend(s.attributes.iter().map(attribute));
    let mut flags = s.flags.bits() as u32;
    if s.parent_id.is_some() {
        flags |= HAS_IS_REMOTE | if s.parent_remote { IS_REMOTE } else { 0 };
    }
    Span {
        trace_id: s.trace_id.to_bytes().to_vec(),
        span_id: s.span_id.to_bytes().to_vec(),
        trace_state: s
            .trace_state
            .as_ref()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        parent_span_id: s
            .parent_id
            .map(|p| p.to_bytes().to_vec())
            .unwrap_or_default(),
        flags,
        name: s.name.as_str().to_string(),
        kind: match s.kind {
            SpanKind::Internal => span::SpanKind::Internal,
            SpanKind::Server => span::SpanKind::Server,
            SpanKind::Client => span::SpanKind::Client,
            SpanKind::Producer => span::SpanKind::Producer,
            SpanKind::Consumer => span::SpanKind::Consumer,
        } as i32,
        start_time_unix_nano: start.as_nanos() as u64,
        end_time_unix_nano: end.as_nanos() as u64,
        attributes,
        links: s
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.to_bytes().to_vec(),
                span_id: l.span_id.to_bytes().to_vec(),
                attributes: l.attributes.iter().map(attribute).collect(),
                flags: l.flags.bits() as u32 | HAS_IS_REMOTE | if l.remote { IS_REMOTE } else { 0 },
                ..Default::default()
            })
            .collect(),
        status: Some(match &s.status {
            SpanStatus::Unset => Status::default(),
            SpanStatus::Ok => Status {
                code: status::StatusCode::Ok as i32,
                message: String::new(),
            },
            SpanStatus::Error(m) => Status {
                code: status::StatusCode::Error as i32,
                message: m.as_str().to_string(),
            },
        }),
        ..Default::default()
    }
}

fn attribute(a: &Attribute) -> KeyValue {
    kv(
        a.key.as_str(),
        match &a.value {
            Value::Str(s) => any_value::Value::StringValue(s.as_str().to_string()),
            Value::I64(i) => any_value::Value::IntValue(*i),
            Value::F64(f) => any_value::Value::DoubleValue(*f),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
        },
    )
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::context::TraceContext;

    #[test]
    fn a_span_decodes_back_with_ids_times_and_attributes() {
        let live = TraceContext::root(true).child();
        let mut s = SpanRecord::new(
            &live,
            "live GET /x",
            SpanKind::Client,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        s.duration = Duration::from_millis(12);
        s.http_status = Some(502);
        s.status = SpanStatus::Error("upstream reset".into());
        s.set("umbra.upstream", "prod-1:8080");
        let body = encode(
            &resource("umbra-test", &[]),
            [(&s, Kept::Error)].into_iter(),
        );
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let sp = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(sp.trace_id, live.trace_id.to_bytes());
        assert_eq!(sp.parent_span_id, live.parent_id.unwrap().to_bytes());
        assert_eq!(sp.end_time_unix_nano - sp.start_time_unix_nano, 12_000_000);
        assert_eq!(sp.kind, span::SpanKind::Client as i32);
        assert_eq!(sp.flags, 0x01 | 0x02 | HAS_IS_REMOTE);
        assert_eq!(sp.status.as_ref().unwrap().message, "upstream reset");
        let keys: Vec<&str> = sp.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            ["http.response.status_code", "umbra.kept", "umbra.upstream"]
        );
    }
}
