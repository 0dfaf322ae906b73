//! The live path: one client request to one production server and back.
//!
//! Everything here either forwards bytes or does O(1) bookkeeping: the mirror
//! decision (a counter or a hash), a draft copy (reference-counted clones), a
//! server pick (a few atomics), and one `try_send` of the finished exchange.
//! Nothing here awaits anything but production.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Sleep;
use umbra_trace::TraceContext;

use crate::body::{BodyTimeout, ClientBody, LiveFinish, RequestBody, ResponseBody};
use crate::canary::CanaryRoute;
use crate::config::{Forwarded, HostPolicy, UpstreamUrl};
use crate::mirror::Decision;
use crate::record::{Exchange, RequestInfo, Role, TraceInfo};
use crate::shadow::{CopyDraft, SHADOW_HEADER, ShadowTarget};
use crate::upstream::{self, RawRequest, SendError, UpstreamError};
use crate::{Generation, Shared};

pub type HttpClient<B = http_body_util::Full<Bytes>> =
    Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

/// Who is on the other end of a client connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as a header value, made once per connection.
    peer_value: Option<HeaderValue>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer,
            tls,
            peer_value: HeaderValue::from_str(&peer.ip().to_string()).ok(),
        }
    }
}

/// What the live path answers: production's (or the canary's) response, or one made here.
pub struct LiveResponse {
    pub status: StatusCode,
    /// Production's fields as they came (for our HTTP/1.1 server to pass on
    /// verbatim), or a map.
    pub fields: upstream::Fields,
    pub body: ResponseBody,
}

impl LiveResponse {
    /// For hyper's server (h2), which wants a map.
    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.fields.into_map();
        response
    }
}

/// Answers one client request. `raw`: the head's fields from our HTTP/1.1
/// server, unparsed (then `request` has no headers); they go upstream as they
/// came, with the forwarding fields edited, unless a feature here needs them as
/// a map. `timer` is the connection's own timer for the production timeout
/// (see [`within`]); without one, each request gets its own.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    request: Request<ClientBody>,
    raw: Option<RawRequest>,
    mut timer: Option<&mut Pin<Box<Sleep>>>,
) -> LiveResponse {
    let started = Instant::now();
    let g = shared.generation.load_full();
    let Outgoing {
        info,
        trace,
        twin,
        to_canary,
        mut request,
        mut raw,
        tally,
    } = prepare(&shared, &g, &conn, request, raw);

    // The canary's users go to its pool; a canary that cannot be reached sends
    // them back to production (nothing was sent), so users never see it down.
    let (mut role, mut pool, mut host_policy) = match to_canary {
        Some(c) => (Role::Canary, &c.pool, &c.host),
        None => (Role::Production, &g.pool, &g.config.production.host),
    };
    let mut lease = pool.pick(None);
    let mut attempt = 0;
    let mut first_try = true;
    loop {
        let endpoint = lease.endpoint.clone();
        match &mut raw {
            Some(r) => {
                if let Some(v) = policy_host(host_policy, &endpoint.url) {
                    r.edits.host = Some(v);
                }
            }
            None => apply_host(request.headers_mut(), host_policy, &endpoint.url),
        }
        // The first attempt leaves a microsecond after the request came: no second clock read.
        let sent = if first_try { started } else { Instant::now() };
        first_try = false;
        let send = std::pin::pin!(
            g.upstream
                .send(&endpoint.target, request, raw.as_ref(), sent)
        );
        let result = within(
            timer.as_deref_mut(),
            g.config.production.timeout,
            sent,
            send,
        )
        .await;
        match result {
            Some(Ok(reply)) => {
                let now = Instant::now();
                let head_time = now.saturating_duration_since(sent);
                lease.observe_at(head_time, now);
                let status = reply.status;
                pool.outcome(&endpoint, matches!(status.as_u16(), 502..=504));
                let mut fields = reply.fields;
                if let upstream::Fields::Map(map) = &mut fields {
                    // Our own client drops hop-by-hop fields while it parses the head; hyper's does not.
                    strip_hop_by_hop(map);
                }
                let exchange = Exchange {
                    role,
                    upstream: endpoint.name.clone(),
                    request: info,
                    request_bytes: 0,
                    status: status.as_u16(),
                    response_bytes: 0,
                    duration: Default::default(),
                    upstream_time: Some(head_time),
                    error: None,
                    twin,
                    trace,
                };
                let finish = LiveFinish {
                    exchange,
                    shared,
                    started,
                    complete_at: matches!(reply.body, upstream::Body::Full(_)).then_some(now),
                    request_tally: tally,
                    lease: Some(lease),
                };
                return LiveResponse {
                    status,
                    fields,
                    body: ResponseBody::upstream(reply.body, finish),
                };
            }
            Some(Err(SendError { error, unsent })) => {
                let slow_client = chain_has::<BodyTimeout>(&error);
                if !slow_client {
                    pool.outcome(&endpoint, true);
                }
                // A connection that was never made sent nothing: the request,
                // body untouched, can go to another server (from the canary,
                // to production).
                if error.is_connect()
                    && (role == Role::Canary || (attempt == 0 && pool.endpoints.len() > 1))
                    && let Some(unsent) = unsent
                {
                    if role == Role::Canary {
                        role = Role::Production;
                        pool = &g.pool;
                        host_policy = &g.config.production.host;
                        lease = pool.pick(None);
                    } else {
                        attempt += 1;
                        lease = pool.pick(Some(&endpoint));
                    }
                    request = unsent;
                    continue;
                }
                let (status, why) = if slow_client {
                    (
                        StatusCode::REQUEST_TIMEOUT,
                        "the client sent its body too slowly".to_string(),
                    )
                } else if let UpstreamError::Address(e) = &error {
                    (StatusCode::BAD_REQUEST, e.clone())
                } else if error.is_connect() {
                    (
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "{} upstream {} is unreachable: {error}",
                            role.as_str(),
                            endpoint.name
                        ),
                    )
                } else {
                    (
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "{} upstream {} failed: {error}",
                            role.as_str(),
                            endpoint.name
                        ),
                    )
                };
                drop(lease);
                return local(
                    &shared,
                    role,
                    info,
                    twin,
                    trace,
                    started,
                    &endpoint.name,
                    status,
                    why,
                );
            }
            None => {
                pool.outcome(&endpoint, true);
                drop(lease);
                let why = format!(
                    "{} upstream {} sent no response within {:?}",
                    role.as_str(),
                    endpoint.name,
                    g.config.production.timeout
                );
                return local(
                    &shared,
                    role,
                    info,
                    twin,
                    trace,
                    started,
                    &endpoint.name,
                    StatusCode::GATEWAY_TIMEOUT,
                    why,
                );
            }
        }
    }
}

/// What the live path has made of a request when it is ready to go out.
struct Outgoing<'g> {
    info: Arc<RequestInfo>,
    trace: Option<Box<TraceInfo>>,
    twin: u64,
    to_canary: Option<&'g CanaryRoute>,
    request: Request<RequestBody>,
    raw: Option<RawRequest>,
    tally: Option<Arc<AtomicU64>>,
}

/// Everything before the request goes out: what is recorded of it, tracing,
/// the mirror's and the canary's decisions, the copy's draft, the forwarding
/// fields. Not async: its locals then take no room in `handle`'s future, which
/// is moved whole (a memcpy) for every request.
fn prepare<'g>(
    shared: &Shared,
    g: &'g Generation,
    conn: &ConnInfo,
    request: Request<ClientBody>,
    mut raw: Option<RawRequest>,
) -> Outgoing<'g> {
    let received = SystemTime::now();
    let (mut parts, body) = request.into_parts();
    if let Some(r) = raw.take_if(|r| {
        r.lists_fields
            || shared.tracer.is_enabled()
            || g.mirror.copies_anything()
            || g.canary.is_some()
    }) {
        parts.headers = r.to_header_map();
    }
    let get = |name: &HeaderName| match &raw {
        Some(r) => r.value(name.as_str().as_bytes()),
        None => parts.headers.get(name).cloned(),
    };

    let host = get(&header::HOST).or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let info = Arc::new(RequestInfo {
        received,
        client: Some(conn.peer.ip()),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        host: host.clone(),
        user_agent: get(&header::USER_AGENT),
        referer: get(&header::REFERER),
        content_type: get(&header::CONTENT_TYPE),
        header_mask: shared.recorder.header_mask(|name| match &raw {
            Some(r) => r.has(name.as_str().as_bytes()),
            None => parts.headers.contains_key(name),
        }),
        captured: g.log_captured.iter().map(get).collect(),
    });

    // Tracing: our span continues the caller's trace (W3C or B3) or starts one.
    let trace = if shared.tracer.is_enabled() {
        shared
            .tracer
            .start(TraceContext::from_headers(&parts.headers).as_ref())
    } else {
        None
    };

    // Mirroring: decide, and draft the copy before production sees the request.
    // A request that is itself a copy (a shadow pointed back at us) is never copied again.
    let mut twin = 0;
    let mut draft = None;
    // Asked only where it matters: a name given as text is parsed on every lookup.
    let is_copy = || parts.headers.contains_key(SHADOW_HEADER);
    let mut targets: Vec<Arc<ShadowTarget>> = Vec::new();
    if g.mirror.copies_anything() && !is_copy() {
        match g.mirror.decide(&parts.method, &parts.uri, &parts.headers) {
            Decision::Skip => {}
            Decision::RateLimited => {
                shared.mirror_counters.sampled.fetch_add(1, Relaxed);
                shared.mirror_counters.rate_limited.fetch_add(1, Relaxed);
            }
            Decision::Copy(chosen) => {
                shared.mirror_counters.sampled.fetch_add(1, Relaxed);
                targets.extend(chosen.iter().filter_map(|&i| g.shadows.get(i).cloned()));
            }
        }
    }
    // The canary: a copy in its shadow stage, or the live answer in its live stages.
    let mut to_canary = None;
    if let Some(c) = &g.canary {
        if shared.canary.mirrors() {
            if !is_copy()
                && matches!(
                    c.mirror.decide(&parts.method, &parts.uri, &parts.headers),
                    Decision::Copy(_)
                )
            {
                targets.push(c.copies.clone());
            }
        } else if shared.canary.routes(&c.key, &parts.headers) {
            to_canary = Some(c);
        }
    }
    if !targets.is_empty() {
        twin = shared.recorder.twin_id();
        draft = Some(CopyDraft {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            twin,
            request: info.clone(),
            targets,
            counters: shared.mirror_counters.clone(),
            trace: trace.clone(),
        });
    }
    let tee = match draft {
        Some(d) if body.is_end_stream() => {
            d.send(Vec::new());
            None
        }
        Some(d) => Some((d, g.mirror.max_body)),
        None => None,
    };

    let forwarding = forwarding(
        g.config.listen.forwarded,
        conn,
        host.as_ref(),
        |name| match &raw {
            Some(r) => r.get(name.as_str().as_bytes()),
            None => parts.headers.get(name).map(HeaderValue::as_bytes),
        },
    );
    match &mut raw {
        // Hop-by-hop fields are left out as the head is written.
        Some(r) => {
            r.edits.forwarded_for = forwarding.forwarded_for;
            r.edits.forwarded_proto = forwarding.forwarded_proto;
            r.edits.forwarded = forwarding.forwarded;
            if !r.has(b"host") {
                r.edits.host = host;
            }
        }
        None => {
            strip_hop_by_hop(&mut parts.headers);
            if let Some(t) = &trace {
                // Production sees our span as its parent.
                t.inject(&mut parts.headers);
            }
            forwarding.apply(&mut parts.headers);
            if let Some(v) = host
                && !parts.headers.contains_key(header::HOST)
            {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    let trace = trace.map(|ctx| TraceInfo::live(ctx, received));
    // Most requests have no body: no counter to allocate for them.
    let tally = (!body.is_end_stream()).then(|| Arc::new(AtomicU64::new(0)));
    let body = RequestBody::new(body, g.config.listen.body_timeout, tally.clone(), tee);
    parts.version = Version::HTTP_11;

    Outgoing {
        info,
        trace,
        twin,
        to_canary,
        request: Request::from_parts(parts, body),
        raw,
        tally,
    }
}

/// `fut`'s output, or None when `limit` passed since `from` first.
///
/// With a connection's timer: the timer stays armed for an earlier request's
/// deadline when that is no later than this one's, fires early then, and is
/// moved on. So it is re-armed about once per `limit`, not twice per request
/// (arming and disarming a fresh one each time touches the timer wheel twice).
/// `fut` is polled where it lies: the upstream exchange is a large future, and
/// moving it into a wrapper costs a copy of it.
async fn within<F: Future>(
    timer: Option<&mut Pin<Box<Sleep>>>,
    limit: Duration,
    from: Instant,
    mut fut: Pin<&mut F>,
) -> Option<F::Output> {
    let mut own;
    let timer = match timer {
        Some(t) => t,
        None => {
            own = Box::pin(tokio::time::sleep(limit));
            &mut own
        }
    };
    let deadline = tokio::time::Instant::from_std(from + limit);
    if timer.deadline() > deadline || timer.is_elapsed() {
        timer.as_mut().reset(deadline);
    }
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while timer.as_mut().poll(cx).is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// A response made here (an upstream failure), recorded like any other.
#[allow(clippy::too_many_arguments)]
fn local(
    shared: &Shared,
    role: Role,
    request: Arc<RequestInfo>,
    twin: u64,
    trace: Option<Box<TraceInfo>>,
    started: Instant,
    upstream: &Arc<str>,
    status: StatusCode,
    why: String,
) -> LiveResponse {
    let text = format!("umbra: {why}\n");
    shared.recorder.record(Exchange {
        role,
        upstream: upstream.clone(),
        request,
        request_bytes: 0,
        status: status.as_u16(),
        response_bytes: text.len() as u64,
        duration: started.elapsed(),
        upstream_time: None,
        error: Some(match status {
            StatusCode::GATEWAY_TIMEOUT => "upstream timeout",
            StatusCode::REQUEST_TIMEOUT => "client body timeout",
            _ => "upstream unavailable",
        }),
        twin,
        trace,
    });
    let mut fields = HeaderMap::with_capacity(2);
    fields.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::REQUEST_TIMEOUT {
        fields.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    LiveResponse {
        status,
        fields: upstream::Fields::Map(fields),
        body: ResponseBody::text(text),
    }
}

fn chain_has<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<E>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The request's path and query on an upstream's scheme and authority.
pub fn upstream_uri(base: &UpstreamUrl, uri: &Uri) -> Result<Uri, String> {
    let mut parts = base.0.clone().into_parts();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).map_err(|e| format!("cannot address {uri} on {base}: {e}"))
}

/// Sets the `Host` an upstream receives, per its policy (production and shadows alike).
pub fn apply_host(headers: &mut HeaderMap, policy: &HostPolicy, url: &UpstreamUrl) {
    if let Some(v) = policy_host(policy, url) {
        headers.insert(header::HOST, v);
    }
}

/// The `Host` an upstream receives instead of the client's, per its policy.
fn policy_host(policy: &HostPolicy, url: &UpstreamUrl) -> Option<HeaderValue> {
    match policy {
        HostPolicy::Original => None,
        HostPolicy::Upstream => HeaderValue::from_str(url.authority()).ok(),
        HostPolicy::Fixed(h) => HeaderValue::from_str(h).ok(),
    }
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over the names is cheaper than nine removals.
    if !headers
        .keys()
        .any(|k| upstream::is_hop_by_hop(k.as_str().as_bytes()))
    {
        return;
    }
    // Names the Connection header lists are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The forwarding fields a request leaves with (each replaces the field of its name).
#[derive(Default)]
struct Forwarding {
    forwarded_for: Option<HeaderValue>,
    /// Only when the request has none.
    forwarded_proto: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
}

impl Forwarding {
    fn apply(self, headers: &mut HeaderMap) {
        if let Some(v) = self.forwarded_for {
            headers.insert(X_FORWARDED_FOR, v);
        }
        if let Some(v) = self.forwarded_proto
            && let header::Entry::Vacant(e) = headers.entry(X_FORWARDED_PROTO)
        {
            e.insert(v);
        }
        if let Some(v) = self.forwarded {
            headers.insert(header::FORWARDED, v);
        }
    }
}

/// The forwarding fields for `how`, appending this hop to what came in
/// (`came` gives a field's first value).
fn forwarding<'a>(
    how: Forwarded,
    conn: &ConnInfo,
    host: Option<&HeaderValue>,
    came: impl Fn(&HeaderName) -> Option<&'a [u8]>,
) -> Forwarding {
    // Per-connection parts are made once: this runs on every request.
    let ip = conn.peer.ip();
    let proto = if conn.tls { "https" } else { "http" };
    let text = |name: &HeaderName| came(name).and_then(|v| std::str::from_utf8(v).ok());
    let mut out = Forwarding::default();
    if matches!(how, Forwarded::XForwardedFor | Forwarded::Both) {
        out.forwarded_for = match text(&X_FORWARDED_FOR) {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, {ip}")).ok(),
            None => conn.peer_value.clone(),
        };
        out.forwarded_proto = Some(HeaderValue::from_static(proto));
    }
    if matches!(how, Forwarded::Forwarded | Forwarded::Both) {
        // RFC 7239: IPv6 nodes are quoted and bracketed.
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        let mut element = format!("for={node};proto={proto}");
        if let Some(h) = host.and_then(|h| h.to_str().ok()) {
            element.push_str(&format!(";host=\"{}\"", h.replace('"', "")));
        }
        let value = match text(&header::FORWARDED) {
            Some(prev) => format!("{prev}, {element}"),
            None => element,
        };
        out.forwarded = HeaderValue::from_str(&value).ok();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "keep-alive, x-secret-hop".parse().expect("value"),
        );
        h.insert("keep-alive", "timeout=5".parse().expect("value"));
        h.insert("x-secret-hop", "1".parse().expect("value"));
        h.insert("transfer-encoding", "chunked".parse().expect("value"));
        h.insert("x-kept", "1".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_headers_append_to_what_came_in() {
        let conn = ConnInfo::new("[2001:db8::1]:5000".parse().expect("addr"), true);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7".parse().expect("value"));
        let host = HeaderValue::from_static("shop.example");
        forwarding(Forwarded::Both, &conn, Some(&host), |name| {
            h.get(name).map(HeaderValue::as_bytes)
        })
        .apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"shop.example\""
        );
    }

    #[tokio::test]
    async fn a_kept_timer_times_out_each_request_from_its_own_start() {
        let limit = Duration::from_millis(150);
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        // A quick answer leaves the timer armed for this request's deadline.
        let from = Instant::now();
        assert_eq!(
            within(Some(&mut timer), limit, from, std::pin::pin!(async { 7 })).await,
            Some(7)
        );
        // A later request that never answers: cut at its own deadline, not the earlier one.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let from = Instant::now();
        let never = std::pin::pin!(std::future::pending::<()>());
        assert_eq!(within(Some(&mut timer), limit, from, never).await, None);
        let took = from.elapsed();
        assert!(took >= limit && took < limit * 3, "{took:?}");
        // An answer that comes before the limit, with the timer already spent.
        let from = Instant::now();
        let slow = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            1
        });
        assert_eq!(within(Some(&mut timer), limit, from, slow).await, Some(1));
        // Without a kept timer, the same rule.
        let from = Instant::now();
        let never = std::pin::pin!(std::future::pending::<()>());
        assert_eq!(within(None, limit, from, never).await, None);
        assert!(from.elapsed() >= limit);
    }

    #[test]
    fn upstream_uris_keep_path_and_query() {
        let base: UpstreamUrl = "http://127.0.0.1:9000".parse().expect("url");
        let uri: Uri = "/a/b?x=1".parse().expect("uri");
        assert_eq!(
            upstream_uri(&base, &uri).expect("uri").to_string(),
            "http://127.0.0.1:9000/a/b?x=1"
        );
        let h2: Uri = "https://shop.example/c".parse().expect("uri");
        assert_eq!(
            upstream_uri(&base, &h2).expect("uri").to_string(),
            "http://127.0.0.1:9000/c"
        );
    }
}
