//! Measurement off the hot path.
//!
//! The live path fills one [`Exchange`] per finished exchange (live or shadow)
//! and puts it on its thread's shelf (an uncontended lock and a push onto a
//! vector that stays in cache), never a wait; the recorder thread takes each
//! shelf's contents every few milliseconds. One recorder thread does the rest: it classifies
//! each exchange to its nearest profile, folds it into the (role, upstream,
//! profile) series, pairs each shadow copy with its live twin to compare their
//! statuses, writes the access log, builds the spans tracing keeps (with the
//! request's route from the profiles, and a mirrored request's legs kept
//! together: `linked.rs`), and reloads the profiles when their file changes. If
//! a shelf is ever full the exchange is counted as lost, never waited for.

mod linked;

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Method, Uri, Version};
use umbra_core::{ProfileSet, RequestRecord};
use umbra_learn::classify::{Classifier, set_templater};
use umbra_learn::template::Templater;
use umbra_trace::span::keys;
use umbra_trace::{Kept, SpanKind, SpanRecord, SpanStatus, TraceContext, Tracer};

use self::linked::{Linker, Plan};

use crate::access_log::LogFormat;
use crate::log;
use crate::stats::{SeriesKey, StatsTable};

/// Exchanges one thread's shelf (or the channel) holds for the recorder; beyond
/// this they are counted as lost.
const QUEUE: usize = 65_536;
/// How often the recorder empties the shelves when it is quiet (65,536 a
/// thread every 2 ms: 32 million a second). It shares a core with the proxy
/// when the proxy has one: the requests in flight wait out each pass, so
/// short passes keep the tail short (p99 1.15 ms at 10 ms, 1.05 at 2 ms, at
/// equal throughput: `bench/plain-ab.sh`, eight rounds, twice)...
const POLL: Duration = Duration::from_millis(2);
/// ...and when the last pass found a shelf over an eighth full.
const BUSY_POLL: Duration = Duration::from_millis(1);
/// How long a live exchange waits for its shadow twins to be compared.
const TWIN_TTL: Duration = Duration::from_secs(120);
/// Pending twins kept at most (memory bound when shadows drop everything).
const MAX_PENDING_TWINS: usize = 500_000;
/// Mirrored requests whose spans may still go out together (`linked.rs`); the
/// oldest is forgotten first. A waiting leg is a few hundred bytes.
const MAX_LINKED_GROUPS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Production,
    Shadow,
    /// A live request answered by the canary pool.
    Canary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Production => "production",
            Role::Shadow => "shadow",
            Role::Canary => "canary",
        }
    }
}

/// What the live path knows of a request, shared by its live exchange and its copies.
#[derive(Debug)]
pub struct RequestInfo {
    pub received: SystemTime,
    pub client: Option<IpAddr>,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub host: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub content_type: Option<HeaderValue>,
    /// Which of the profile set's header names the request carried (bit i: name i).
    pub header_mask: u8,
    /// The headers the access-log format names, in its order.
    pub captured: Vec<Option<HeaderValue>>,
}

/// One finished exchange with one upstream.
#[derive(Debug)]
pub struct Exchange {
    pub role: Role,
    pub upstream: Arc<str>,
    pub request: Arc<RequestInfo>,
    pub request_bytes: u64,
    /// 0 when no response came.
    pub status: u16,
    pub response_bytes: u64,
    /// From the request's arrival (or the copy's dispatch) to the end of the response body.
    pub duration: Duration,
    /// Until the response head.
    pub upstream_time: Option<Duration>,
    pub error: Option<&'static str>,
    /// Nonzero when the request was mirrored: live and copies share it.
    pub twin: u64,
    /// This leg's span, when tracing is on.
    pub trace: Option<Box<TraceInfo>>,
}

/// What a leg's span needs beyond the exchange itself.
#[derive(Debug)]
pub struct TraceInfo {
    /// Our span (for a copy: the root of its own trace).
    pub ctx: TraceContext,
    /// For a copy: the live span it is linked to.
    pub live: Option<TraceContext>,
    pub start: SystemTime,
    /// For a copy: how long it waited in the shadow's queue.
    pub queue_wait: Option<Duration>,
    /// For a copy: fields masked per rule (counts, never values).
    pub masked: Vec<(String, u64)>,
}

impl TraceInfo {
    pub fn live(ctx: TraceContext, start: SystemTime) -> Box<TraceInfo> {
        Box::new(TraceInfo {
            ctx,
            live: None,
            start,
            queue_wait: None,
            masked: Vec::new(),
        })
    }
}

/// The live path's side: cheap to clone, never blocks.
/// One thread's exchanges waiting for the recorder thread.
///
/// Why not a bounded channel: each `try_send` wrote into a slot the ring had
/// last used a lap earlier, long evicted from cache, and that miss was the
/// costliest step of recording an exchange.
type Shelf = Arc<Mutex<Vec<Exchange>>>;

thread_local! {
    /// This thread's shelf for each recorder it has recorded to, by recorder id.
    static SHELVES: std::cell::RefCell<Vec<(u64, Shelf)>> = const { std::cell::RefCell::new(Vec::new()) };
}

static RECORDER_IDS: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
pub struct Recorder {
    id: u64,
    /// Every thread's shelf, for the recorder thread to empty.
    shelves: Arc<Mutex<Vec<Shelf>>>,
    /// Also the way exchanges go from a thread that is exiting (its shelves are
    /// gone); dropping every sender is what stops the recorder thread.
    tx: SyncSender<Exchange>,
    pub lost: Arc<AtomicU64>,
    /// The profile set's header names, for [`RequestInfo::header_mask`].
    pub header_vocab: Arc<ArcSwap<Vec<HeaderName>>>,
    twins: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    pub fn record(&self, e: Exchange) {
        let mut e = Some(e);
        let _ = SHELVES.try_with(|shelves| {
            let mut shelves = shelves.borrow_mut();
            let index = match shelves.iter().position(|(id, _)| *id == self.id) {
                Some(i) => i,
                None => {
                    let shelf: Shelf = Arc::new(Mutex::new(Vec::with_capacity(256)));
                    lock(&self.shelves).push(shelf.clone());
                    shelves.push((self.id, shelf));
                    shelves.len() - 1
                }
            };
            let mut shelf = lock(&shelves[index].1);
            if shelf.len() >= QUEUE {
                self.lost.fetch_add(1, Relaxed);
                e = None;
                return;
            }
            shelf.extend(e.take());
        });
        if let Some(e) = e {
            match self.tx.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.lost.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// A fresh id pairing a live exchange with its copies.
    pub fn twin_id(&self) -> u64 {
        self.twins.fetch_add(1, Relaxed) + 1
    }

    pub fn header_mask(&self, has: impl Fn(&HeaderName) -> bool) -> u8 {
        let vocab = self.header_vocab.load();
        let mut mask = 0u8;
        for (i, name) in vocab.iter().enumerate().take(8) {
            if has(name) {
                mask |= 1 << i;
            }
        }
        mask
    }
}

/// Receives every finished exchange with the id of the profile it was
/// classified into, on the recorder thread (never on the live path). The binary
/// feeds the analysis through it.
pub trait Observer: Send {
    /// `at_ms`: when the recorder took the exchange's batch, in milliseconds
    /// since the Unix epoch (one clock read a batch, not one an exchange).
    fn exchange(&mut self, e: &Exchange, profile: &Arc<str>, at_ms: u64);
}

/// Settings the recorder thread can take anew on a reload.
pub struct RecorderSettings {
    pub profiles: Option<(PathBuf, Duration)>,
    pub access_log: Option<(PathBuf, LogFormat)>,
}

/// Starts the recorder thread. It ends when every [`Recorder`] clone is dropped,
/// after writing what it holds.
pub fn start(
    stats: Arc<Mutex<StatsTable>>,
    settings: Arc<Mutex<RecorderSettings>>,
    observer: Option<Box<dyn Observer>>,
    tracer: Tracer,
) -> (Recorder, std::thread::JoinHandle<()>) {
    let (tx, rx) = sync_channel(QUEUE);
    let recorder = Recorder {
        id: RECORDER_IDS.fetch_add(1, Relaxed),
        shelves: Arc::default(),
        tx,
        lost: Arc::new(AtomicU64::new(0)),
        header_vocab: Arc::new(ArcSwap::from_pointee(Vec::new())),
        twins: Arc::new(AtomicU64::new(0)),
    };
    let vocab = recorder.header_vocab.clone();
    let shelves = recorder.shelves.clone();
    let handle = std::thread::Builder::new()
        .name("umbra-recorder".into())
        .spawn(move || {
            RecorderThread::new(stats, settings, vocab, observer, tracer).run(rx, &shelves)
        })
        .expect("spawning the recorder thread");
    (recorder, handle)
}

struct LoadedProfiles {
    path: PathBuf,
    modified: Option<SystemTime>,
    classifier: Classifier,
    ids: Vec<Arc<str>>,
    vocab: Vec<String>,
    routes: Routes,
}

/// The profile set's path templates as `http.route` values: a path the set
/// knows gets its template (`/api/items/{id}`), shared, so a span pays a
/// reference count; a path it does not know gets none, rather than a guess
/// that could carry a raw value into a low-cardinality attribute.
struct Routes {
    templater: Templater,
    routes: Vec<Arc<str>>,
}

impl Routes {
    fn new(templater: Templater) -> Routes {
        let routes = templater
            .templates()
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect();
        Routes { templater, routes }
    }

    /// One walk of the template trie, no allocation.
    fn of(&self, path: &str) -> Option<Arc<str>> {
        let i = self.templater.template_index(path)?;
        self.routes.get(i as usize).cloned()
    }
}

struct OpenLog {
    path: PathBuf,
    format: LogFormat,
    out: std::io::BufWriter<std::fs::File>,
}

struct RecorderThread {
    stats: Arc<Mutex<StatsTable>>,
    settings: Arc<Mutex<RecorderSettings>>,
    vocab: Arc<ArcSwap<Vec<HeaderName>>>,
    profiles: Option<LoadedProfiles>,
    next_profiles_check: Instant,
    log: Option<OpenLog>,
    /// Live exchanges whose copies are still to come: their profile and status.
    live_twins: HashMap<u64, (Arc<str>, u16, Instant)>,
    /// Copies that finished before their live twin.
    shadow_twins: HashMap<u64, Vec<(u16, Instant)>>,
    line: String,
    observer: Option<Box<dyn Observer>>,
    tracer: Tracer,
    /// Spans of mirrored requests waiting for a twin a tail rule keeps.
    linker: Linker<Leg>,
}

const ALL: &str = "all";

impl RecorderThread {
    fn new(
        stats: Arc<Mutex<StatsTable>>,
        settings: Arc<Mutex<RecorderSettings>>,
        vocab: Arc<ArcSwap<Vec<HeaderName>>>,
        observer: Option<Box<dyn Observer>>,
        tracer: Tracer,
    ) -> Self {
        RecorderThread {
            stats,
            settings,
            vocab,
            profiles: None,
            next_profiles_check: Instant::now(),
            log: None,
            live_twins: HashMap::new(),
            shadow_twins: HashMap::new(),
            line: String::new(),
            observer,
            tracer,
            linker: Linker::new(MAX_LINKED_GROUPS),
        }
    }

    /// Empties the shelves (and the channel) every few milliseconds instead of
    /// blocking: a receiver blocked in `recv` makes every send on the live path
    /// wake it with a futex call, which cost a fifth of the proxy's CPU when measured.
    fn run(mut self, rx: Receiver<Exchange>, shelves: &Mutex<Vec<Shelf>>) {
        let mut batch = Vec::with_capacity(4096);
        let mut last_housekeeping = Instant::now();
        self.housekeeping();
        loop {
            let mut disconnected = false;
            loop {
                match rx.try_recv() {
                    Ok(e) => {
                        batch.push(e);
                        if batch.len() == batch.capacity() {
                            self.process(&mut batch);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            // After the channel: once it says every recorder is gone, nothing
            // more can land on a shelf, so this pass is the last one needed.
            let mut busy = false;
            let taken: Vec<Shelf> = lock(shelves).clone();
            for shelf in &taken {
                {
                    let mut on_shelf = lock(shelf);
                    busy |= on_shelf.len() > QUEUE / 8;
                    if batch.is_empty() {
                        // Swap vectors: both keep their capacity, and stay warm.
                        std::mem::swap(&mut *on_shelf, &mut batch);
                    } else {
                        batch.append(&mut on_shelf);
                    }
                }
                if !batch.is_empty() {
                    self.process(&mut batch);
                }
            }
            // A shelf only we hold (here and in the list) belonged to a thread that
            // has exited; it goes once it is empty (it may have filled since we took).
            lock(shelves).retain(|s| Arc::strong_count(s) > 2 || !lock(s).is_empty());
            drop(taken);
            if !batch.is_empty() {
                self.process(&mut batch);
            }
            if disconnected {
                break;
            }
            if last_housekeeping.elapsed() >= Duration::from_millis(500) {
                last_housekeeping = Instant::now();
                self.housekeeping();
            }
            std::thread::sleep(if busy { BUSY_POLL } else { POLL });
        }
        if let Some(log) = &mut self.log {
            let _ = log.out.flush();
        }
    }

    /// Reloads the profiles and reopens the log when their settings or files change;
    /// flushes the log; forgets twins that will never be paired.
    fn housekeeping(&mut self) {
        let (profiles, access_log) = {
            let s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            (s.profiles.clone(), s.access_log.clone())
        };
        self.refresh_profiles(profiles);
        self.refresh_log(access_log);
        if let Some(log) = &mut self.log
            && let Err(e) = log.out.flush()
        {
            log::warn(format_args!("access log {}: {e}", log.path.display()));
        }
        let now = Instant::now();
        self.live_twins
            .retain(|_, (_, _, at)| now.duration_since(*at) < TWIN_TTL);
        self.shadow_twins.retain(|_, v| {
            v.first()
                .is_some_and(|(_, at)| now.duration_since(*at) < TWIN_TTL)
        });
        self.linker.expire(now, TWIN_TTL);
        if self.tracer.is_enabled() {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.linked_waiting = self.linker.waiting() as u64;
            stats.linked_evicted = self.linker.evicted;
        }
    }

    fn refresh_profiles(&mut self, wanted: Option<(PathBuf, Duration)>) {
        let Some((path, every)) = wanted else {
            if self.profiles.take().is_some() {
                self.vocab.store(Arc::new(Vec::new()));
            }
            return;
        };
        let same_path = self.profiles.as_ref().is_some_and(|p| p.path == path);
        if same_path && Instant::now() < self.next_profiles_check {
            return;
        }
        self.next_profiles_check = Instant::now() + every;
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if same_path
            && self
                .profiles
                .as_ref()
                .is_some_and(|p| p.modified == modified)
        {
            return;
        }
        match ProfileSet::load(&path) {
            Ok(set) => {
                let ids: Vec<Arc<str>> = set
                    .profiles
                    .iter()
                    .map(|p| Arc::from(p.id.as_str()))
                    .collect();
                let vocab: Vec<String> = set
                    .features
                    .vocab
                    .get("header")
                    .cloned()
                    .unwrap_or_default();
                let names: Vec<HeaderName> = vocab
                    .iter()
                    .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                    .collect();
                if names.len() == vocab.len() {
                    self.vocab.store(Arc::new(names));
                }
                {
                    let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                    for p in &set.profiles {
                        stats.profile_names.insert(p.id.clone(), p.name.clone());
                    }
                    stats.profiles_loaded = Some(path.display().to_string());
                }
                log::info(format_args!(
                    "profiles: {} profiles from {}",
                    set.profiles.len(),
                    path.display()
                ));
                self.profiles = Some(LoadedProfiles {
                    path,
                    modified,
                    classifier: Classifier::new(&set),
                    ids,
                    vocab,
                    routes: Routes::new(set_templater(&set)),
                });
            }
            Err(e) => {
                // Keep measuring with the profiles we have; say why the new ones were refused.
                if !same_path
                    || self
                        .profiles
                        .as_ref()
                        .is_some_and(|p| p.modified != modified)
                {
                    log::warn(format_args!("profiles not reloaded: {e}"));
                }
                if let Some(p) = &mut self.profiles {
                    p.modified = modified;
                }
                self.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .profile_errors += 1;
            }
        }
    }

    fn refresh_log(&mut self, wanted: Option<(PathBuf, LogFormat)>) {
        let Some((path, format)) = wanted else {
            self.log = None;
            return;
        };
        if let Some(log) = &mut self.log
            && log.path == path
        {
            log.format = format;
            return;
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(file) => {
                self.log = Some(OpenLog {
                    path,
                    format,
                    out: std::io::BufWriter::with_capacity(64 * 1024, file),
                });
            }
            Err(e) => log::warn(format_args!("access log {}: {e}", path.display())),
        }
    }

    fn process(&mut self, batch: &mut Vec<Exchange>) {
        let table = self.stats.clone();
        let mut stats = table.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for mut e in batch.drain(..) {
            let profile = self.profile_of(&e);
            let key = SeriesKey {
                role: e.role,
                upstream: e.upstream.clone(),
                profile: profile.clone(),
            };
            let series = stats.series.entry(key).or_default();
            series.add(&e);
            if let Some(o) = &mut self.observer {
                o.exchange(&e, &profile, now_ms);
            }
            // Pair copies with their live twin, whichever finishes first.
            if e.twin != 0 {
                match e.role {
                    Role::Production | Role::Canary => {
                        if let Some(copies) = self.shadow_twins.remove(&e.twin) {
                            for (status, _) in copies {
                                stats.compare(&profile, e.status, status);
                            }
                        }
                        if self.live_twins.len() < MAX_PENDING_TWINS {
                            self.live_twins
                                .insert(e.twin, (profile.clone(), e.status, now));
                        }
                    }
                    Role::Shadow => match self.live_twins.get(&e.twin) {
                        Some((live_profile, live_status, _)) => {
                            let p = live_profile.clone();
                            stats.compare(&p, *live_status, e.status);
                        }
                        None => {
                            if self.shadow_twins.len() < MAX_PENDING_TWINS {
                                self.shadow_twins
                                    .entry(e.twin)
                                    .or_default()
                                    .push((e.status, now));
                            }
                        }
                    },
                }
            }
            if e.role != Role::Shadow
                && let Some(log) = &mut self.log
            {
                self.line.clear();
                log.format.render(&e, &profile, &mut self.line);
                self.line.push('\n');
                if log.out.write_all(self.line.as_bytes()).is_err() {
                    stats.access_log_errors += 1;
                }
            }
            // Last: a leg that waits for its twin takes the exchange's trace along.
            if let Some(t) = e.trace.take() {
                self.trace(&e, t, profile, now);
            }
        }
    }

    /// The span of one leg, if it is to be exported: now when sampling or a
    /// tail rule keeps it, and for a mirrored request also when a twin is
    /// kept (`linked.rs`). A span is built only when it goes out.
    fn trace(&mut self, e: &Exchange, t: Box<TraceInfo>, profile: Arc<str>, now: Instant) {
        let own = self.tracer.keep_reason(
            t.ctx.is_sampled(),
            e.duration,
            (e.status != 0).then_some(e.status),
            e.error.is_some(),
        );
        let linked = e.twin != 0 && own != Some(Kept::Sampled) && self.tracer.has_tail_rules();
        if own.is_none() && !linked {
            return;
        }
        let route = self
            .profiles
            .as_ref()
            .and_then(|p| p.routes.of(e.request.uri.path()));
        let leg = Leg::new(e, t, profile, route, own.is_none());
        if !linked {
            self.tracer.record(leg.span());
            return;
        }
        match self.linker.leg(e.twin, own, leg, now) {
            Plan::Wait => {}
            Plan::Alone(leg) => self.tracer.record(leg.span()),
            Plan::Together(legs) => self
                .tracer
                .record_linked(legs.iter().map(Leg::span).collect()),
            Plan::ForTwin(leg, twin) => self.tracer.record_for_twin(leg.span(), twin),
        }
    }

    /// The profile of an exchange: a copy takes its live twin's, so the two are
    /// compared within one profile even when their responses differ.
    fn profile_of(&mut self, e: &Exchange) -> Arc<str> {
        if e.role == Role::Shadow
            && let Some((profile, _, _)) = self.live_twins.get(&e.twin)
        {
            return profile.clone();
        }
        let Some(loaded) = &mut self.profiles else {
            return Arc::from(ALL);
        };
        let record = as_record(e, &loaded.vocab);
        let c = loaded.classifier.classify(&record);
        loaded
            .ids
            .get(c.profile)
            .cloned()
            .unwrap_or_else(|| Arc::from(ALL))
    }
}

/// What a leg's span needs, taken from its exchange: small enough to wait
/// for a twin (`linked.rs`), and holding nothing of the request's headers
/// (those can share the connection's read buffer).
#[derive(Debug)]
struct Leg {
    role: Role,
    upstream: Arc<str>,
    profile: Arc<str>,
    route: Option<Arc<str>>,
    method: Method,
    request_bytes: u64,
    status: u16,
    response_bytes: u64,
    duration: Duration,
    error: Option<&'static str>,
    trace: Box<TraceInfo>,
}

impl Leg {
    /// `may_wait`: the leg may wait for a twin, so a `tracestate` read from
    /// the request is copied out of the request's buffer.
    fn new(
        e: &Exchange,
        mut trace: Box<TraceInfo>,
        profile: Arc<str>,
        route: Option<Arc<str>>,
        may_wait: bool,
    ) -> Leg {
        if may_wait && let Some(state) = trace.ctx.state.take() {
            trace.ctx.state = HeaderValue::from_bytes(state.as_bytes()).ok();
        }
        Leg {
            role: e.role,
            upstream: e.upstream.clone(),
            profile,
            route,
            method: e.request.method.clone(),
            request_bytes: e.request_bytes,
            status: e.status,
            response_bytes: e.response_bytes,
            duration: e.duration,
            error: e.error,
            trace,
        }
    }

    /// The span: the live one (the proxy serving the client, kind server) or
    /// a copy's (the proxy calling a shadow, kind client, linked to the live
    /// span).
    fn span(&self) -> SpanRecord {
        let t = &self.trace;
        let (name, kind) = match self.role {
            Role::Production | Role::Canary => ("proxy", SpanKind::Server),
            Role::Shadow => ("shadow copy", SpanKind::Client),
        };
        let mut s = SpanRecord::new(&t.ctx, name, kind, t.start);
        s.duration = self.duration;
        s.http_status = (self.status != 0).then_some(self.status);
        s.profile = Some(self.profile.clone().into());
        s.role = Some(self.role.as_str().into());
        s.status = match self.error {
            Some(why) => SpanStatus::Error(why.into()),
            None if self.status >= 500 => SpanStatus::Error("upstream answered 5xx".into()),
            None => SpanStatus::Unset,
        };
        s.set(keys::HTTP_METHOD, self.method.as_str().to_string());
        if let Some(route) = &self.route {
            s.set(keys::HTTP_ROUTE, route);
        }
        s.set(keys::UPSTREAM, self.upstream.clone());
        s.set(keys::PROFILE, self.profile.clone());
        s.set(keys::ROLE, self.role.as_str());
        s.set(keys::REQUEST_BODY_SIZE, self.request_bytes);
        s.set(keys::RESPONSE_BODY_SIZE, self.response_bytes);
        if self.status != 0 {
            s.set(keys::HTTP_STATUS, u64::from(self.status));
        }
        if let Some(why) = self.error {
            s.set(keys::ERROR_TYPE, why);
        }
        if let Some(w) = t.queue_wait {
            s.set(
                keys::QUEUE_WAIT_US,
                w.as_micros().min(u128::from(u64::MAX)) as u64,
            );
        }
        if let Some(live) = &t.live {
            s.link_live(live);
            s.mask_counts(t.masked.iter().map(|(rule, n)| (rule.as_str(), *n)));
        }
        s
    }
}

/// The exchange as the learner sees a log line.
fn as_record(e: &Exchange, vocab: &[String]) -> RequestRecord {
    let r = &e.request;
    let text =
        |v: &Option<HeaderValue>| v.as_ref().and_then(|v| v.to_str().ok()).map(str::to_string);
    RequestRecord {
        timestamp_ms: r
            .received
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64),
        client: r.client.map(|c| c.to_string()),
        method: r.method.as_str().to_string(),
        path: r.uri.path().to_string(),
        query: r.uri.query().map(str::to_string),
        protocol: Some(format!("{:?}", r.version)),
        status: (e.status != 0).then_some(e.status),
        request_bytes: Some(e.request_bytes),
        response_bytes: Some(e.response_bytes),
        duration_ms: Some(e.duration.as_secs_f64() * 1000.0),
        user_agent: text(&r.user_agent),
        referer: text(&r.referer),
        content_type: text(&r.content_type),
        headers: vocab
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < 8 && r.header_mask & (1 << i) != 0)
            .map(|(_, h)| (h.clone(), String::new()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use umbra_trace::Value;

    fn exchange(role: Role, path: &str, trace: Option<Box<TraceInfo>>) -> Exchange {
        Exchange {
            role,
            upstream: Arc::from("next"),
            request: Arc::new(RequestInfo {
                received: SystemTime::now(),
                client: None,
                method: Method::GET,
                uri: path.parse().unwrap(),
                version: Version::HTTP_11,
                host: None,
                user_agent: None,
                referer: None,
                content_type: None,
                header_mask: 0,
                captured: Vec::new(),
            }),
            request_bytes: 0,
            status: 200,
            response_bytes: 10,
            duration: Duration::from_millis(3),
            upstream_time: None,
            error: None,
            twin: 1,
            trace,
        }
    }

    fn attribute<'a>(s: &'a SpanRecord, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|a| a.key.as_str() == key)
            .map(|a| &a.value)
    }

    fn text<'a>(s: &'a SpanRecord, key: &str) -> Option<&'a str> {
        match attribute(s, key)? {
            Value::Str(v) => Some(v.as_str()),
            other => panic!("{key} = {other:?}"),
        }
    }

    #[test]
    fn every_thread_s_exchanges_reach_the_series_even_from_threads_that_exit() {
        let stats = Arc::new(Mutex::new(StatsTable::default()));
        let settings = Arc::new(Mutex::new(RecorderSettings {
            profiles: None,
            access_log: None,
        }));
        let (recorder, thread) = start(stats.clone(), settings, None, Tracer::disabled());
        // Four threads that record and exit at once, and this one.
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let r = recorder.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        r.record(exchange(Role::Production, "/a", None));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        for _ in 0..500 {
            recorder.record(exchange(Role::Production, "/a", None));
        }
        // Dropping the last recorder ends the thread after its last pass.
        drop(recorder);
        thread.join().unwrap();
        let stats = stats.lock().unwrap();
        let counted: u64 = stats
            .series
            .values()
            .map(|s| s.by_class.iter().sum::<u64>())
            .sum();
        assert_eq!(counted, 4500);
    }

    #[test]
    fn routes_are_the_profile_set_templates_of_known_paths_only() {
        let routes = Routes::new(Templater::from_templates([
            "/api/items/{id}",
            "/api/search",
        ]));
        assert_eq!(
            routes.of("/api/items/42").as_deref(),
            Some("/api/items/{id}")
        );
        assert_eq!(routes.of("/api/search").as_deref(), Some("/api/search"));
        assert_eq!(routes.of("/api/items/42/reviews"), None);
        assert_eq!(routes.of("/admin"), None);
        // The same shared string every time: a span pays a reference count.
        assert!(Arc::ptr_eq(
            &routes.of("/api/items/1").unwrap(),
            &routes.of("/api/items/2").unwrap()
        ));
    }

    #[test]
    fn spans_carry_the_route_when_the_profiles_know_it() {
        let live = TraceContext::root(false);
        let e = exchange(Role::Production, "/api/items/42?x=1", None);
        let info = TraceInfo::live(live.clone(), SystemTime::now());
        let leg = Leg::new(
            &e,
            info,
            Arc::from("p-1"),
            Some(Arc::from("/api/items/{id}")),
            true,
        );
        let s = leg.span();
        assert_eq!(text(&s, keys::HTTP_ROUTE), Some("/api/items/{id}"));
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(text(&s, keys::HTTP_METHOD), Some("GET"));

        // No profiles, no route; a copy links to its live span.
        let copy = Box::new(TraceInfo {
            ctx: live.linked_root(),
            live: Some(live.clone()),
            start: SystemTime::now(),
            queue_wait: Some(Duration::from_micros(40)),
            masked: vec![("email".into(), 2)],
        });
        let e = exchange(Role::Shadow, "/api/items/42", None);
        let s = Leg::new(&e, copy, Arc::from("all"), None, false).span();
        assert_eq!(text(&s, keys::HTTP_ROUTE), None);
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.links[0].span_id, live.span_id);
        assert_eq!(attribute(&s, keys::MASKED), Some(&Value::I64(2)));
    }
}
