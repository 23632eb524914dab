//! Stage 6, log: per-worker counters for `/metrics`.
//!
//! Each worker counts into its own plain (non-atomic) maps; the admin
//! listener asks every worker for a snapshot and sums them at scrape time,
//! so the request path never writes a shared counter. Labels are interned
//! per worker: the request path hashes two small integers, not strings.

use std::{cell::RefCell, collections::HashMap, fmt::Write, time::Duration};

/// Upper bounds of the request-duration histogram, in seconds (Prometheus'
/// default buckets).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram over `BUCKETS` (seconds).
#[derive(Default, Debug, Clone, Copy)]
pub struct Histogram {
    /// Per bucket, then +Inf (not cumulative).
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += secs;
    }

    fn add(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum += o.sum;
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` is empty or
    /// `name="value",` (with the trailing comma).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let plain = labels.trim_end_matches(',');
        let braces = if plain.is_empty() {
            String::new()
        } else {
            format!("{{{plain}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// Label strings, interned so counters are keyed by small integers.
#[derive(Default)]
struct Labels {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Labels {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }
}

#[derive(Default)]
struct Counts {
    labels: Labels,
    /// (route label, status) → requests
    requests: HashMap<(u32, u16), u64>,
    /// (upstream name, server label, status) → requests
    upstream: HashMap<(u32, u32, u16), u64>,
    duration: Histogram,
    /// route label → response body bytes sent
    bytes: HashMap<u32, u64>,
    /// upstream name → time from the first connect to the response head
    upstream_time: HashMap<u32, Histogram>,
    /// listener label → connections accepted
    accepted: HashMap<u32, u64>,
    /// (listener label, handshake succeeded) → TLS handshakes
    handshakes: HashMap<(u32, bool), u64>,
    /// Per `X-Cache-Status`, in `CACHE_STATUSES` order.
    cache: [u64; 4],
    /// (route label, reason) → requests or connections the shield refused
    limited: HashMap<(u32, Limited), u64>,
}

/// Why the edge shield refused a request or a connection: the `reason`
/// label of `ringside_limited_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limited {
    /// A `[[rule]]` matched (403 or the rule's status).
    Rule,
    /// The route's `allow`/`deny` (403).
    Deny,
    /// A method outside the route's `methods` (405).
    Method,
    /// A `[[limit]]` bucket was empty (429 or the limit's status).
    Rate,
    /// `limits.max_connections_per_ip` at accept.
    ConnPerIp,
    /// The listener's `allow`/`deny` at accept.
    ListenerDeny,
    /// No valid PROXY protocol header.
    ProxyProtocol,
}

impl Limited {
    pub fn label(self) -> &'static str {
        match self {
            Limited::Rule => "rule",
            Limited::Deny => "deny",
            Limited::Method => "method",
            Limited::Rate => "rate",
            Limited::ConnPerIp => "conn_per_ip",
            Limited::ListenerDeny => "listener_deny",
            Limited::ProxyProtocol => "proxy_protocol",
        }
    }
}

/// The `X-Cache-Status` values, in the order `Stats::cache` counts them.
pub const CACHE_STATUSES: [&str; 4] = ["HIT", "MISS", "EXPIRED", "BYPASS"];

/// One worker's counters.
#[derive(Default)]
pub struct Stats {
    counts: RefCell<Counts>,
}

/// Label ids for one config generation, computed when it is installed.
#[derive(Default, Clone)]
pub struct LabelIds {
    /// Per route (id of "" = no route).
    pub routes: Vec<u32>,
    pub no_route: u32,
    /// Per upstream: (name id, per server: label id).
    pub upstreams: Vec<(u32, Vec<u32>)>,
}

impl Stats {
    pub fn label_ids(&self, config: &crate::config::Config) -> LabelIds {
        let mut c = self.counts.borrow_mut();
        LabelIds {
            routes: config
                .routes
                .iter()
                .map(|r| c.labels.id(&r.label))
                .collect(),
            no_route: c.labels.id(""),
            upstreams: config
                .upstreams
                .iter()
                .map(|u| {
                    let name = c.labels.id(&u.name);
                    (
                        name,
                        u.servers.iter().map(|s| c.labels.id(&s.label)).collect(),
                    )
                })
                .collect(),
        }
    }

    /// The label id of a listener (its name, else its address as written).
    pub fn label(&self, s: &str) -> u32 {
        self.counts.borrow_mut().labels.id(s)
    }

    /// A request answered: its status, duration and body bytes sent.
    pub fn request(&self, route: u32, status: u16, took: Duration, bytes: u64) {
        let mut c = self.counts.borrow_mut();
        *c.requests.entry((route, status)).or_insert(0) += 1;
        c.duration.observe(took);
        *c.bytes.entry(route).or_insert(0) += bytes;
    }

    /// An upstream's time from the first connect to the response head.
    pub fn upstream_time(&self, upstream: u32, took: Duration) {
        let mut c = self.counts.borrow_mut();
        c.upstream_time.entry(upstream).or_default().observe(took);
    }

    /// A connection accepted on a listener.
    pub fn accepted(&self, listener: u32) {
        *self
            .counts
            .borrow_mut()
            .accepted
            .entry(listener)
            .or_insert(0) += 1;
    }

    /// A TLS handshake on a listener, and whether it succeeded.
    pub fn handshake(&self, listener: u32, ok: bool) {
        let mut c = self.counts.borrow_mut();
        *c.handshakes.entry((listener, ok)).or_insert(0) += 1;
    }

    /// A cached route's GET/HEAD, by its index in `CACHE_STATUSES`.
    pub fn cache(&self, status: usize) {
        self.counts.borrow_mut().cache[status] += 1;
    }

    /// A refusal by the shield; connection-level reasons count under the
    /// route label of "no route" (`LabelIds::no_route`, the empty label).
    pub fn limited(&self, route: u32, reason: Limited) {
        *self
            .counts
            .borrow_mut()
            .limited
            .entry((route, reason))
            .or_insert(0) += 1;
    }

    pub fn upstream(&self, upstream: u32, server: u32, status: u16) {
        let mut c = self.counts.borrow_mut();
        *c.upstream.entry((upstream, server, status)).or_insert(0) += 1;
    }

    /// The counters with their label strings, to send to the admin thread.
    pub fn snapshot(&self, connections: usize) -> Snapshot {
        let c = self.counts.borrow();
        let name = |id: u32| c.labels.names[id as usize].clone();
        Snapshot {
            requests: c
                .requests
                .iter()
                .map(|(&(r, s), &n)| ((name(r), s), n))
                .collect(),
            upstream: c
                .upstream
                .iter()
                .map(|(&(u, sv, st), &n)| ((name(u), name(sv), st), n))
                .collect(),
            duration: c.duration,
            bytes: c.bytes.iter().map(|(&r, &n)| (name(r), n)).collect(),
            upstream_time: (c.upstream_time.iter())
                .map(|(&u, h)| (name(u), *h))
                .collect(),
            accepted: c.accepted.iter().map(|(&l, &n)| (name(l), n)).collect(),
            handshakes: (c.handshakes.iter())
                .map(|(&(l, ok), &n)| ((name(l), ok), n))
                .collect(),
            cache: c.cache,
            limited: c
                .limited
                .iter()
                .map(|(&(r, why), &n)| ((name(r), why), n))
                .collect(),
            connections,
            up: Vec::new(),
        }
    }
}

/// Counters of one worker, or the sum over all of them.
#[derive(Default, Debug, Clone)]
pub struct Snapshot {
    pub requests: HashMap<(String, u16), u64>,
    pub upstream: HashMap<(String, String, u16), u64>,
    pub duration: Histogram,
    pub bytes: HashMap<String, u64>,
    pub upstream_time: HashMap<String, Histogram>,
    pub accepted: HashMap<String, u64>,
    pub handshakes: HashMap<(String, bool), u64>,
    pub cache: [u64; 4],
    pub limited: HashMap<(String, Limited), u64>,
    pub connections: usize,
    /// (upstream, server, up) — filled in by the control plane.
    pub up: Vec<(String, String, bool)>,
}

impl Snapshot {
    pub fn add(&mut self, o: &Snapshot) {
        for (k, n) in &o.requests {
            *self.requests.entry(k.clone()).or_insert(0) += n;
        }
        for (k, n) in &o.upstream {
            *self.upstream.entry(k.clone()).or_insert(0) += n;
        }
        self.duration.add(&o.duration);
        for (k, n) in &o.bytes {
            *self.bytes.entry(k.clone()).or_insert(0) += n;
        }
        for (k, h) in &o.upstream_time {
            self.upstream_time.entry(k.clone()).or_default().add(h);
        }
        for (k, n) in &o.accepted {
            *self.accepted.entry(k.clone()).or_insert(0) += n;
        }
        for (k, n) in &o.handshakes {
            *self.handshakes.entry(k.clone()).or_insert(0) += n;
        }
        for (a, b) in self.cache.iter_mut().zip(o.cache) {
            *a += b;
        }
        for (k, n) in &o.limited {
            *self.limited.entry(k.clone()).or_insert(0) += n;
        }
        self.connections += o.connections;
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP ringside_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE ringside_requests_total counter\n");
        let mut reqs: Vec<_> = self.requests.iter().collect();
        reqs.sort();
        for ((route, status), n) in reqs {
            let _ = writeln!(
                out,
                "ringside_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                esc(route)
            );
        }
        out.push_str("# HELP ringside_upstream_requests_total Proxied requests, by upstream, server and status.\n");
        out.push_str("# TYPE ringside_upstream_requests_total counter\n");
        let mut ups: Vec<_> = self.upstream.iter().collect();
        ups.sort();
        for ((u, s, status), n) in ups {
            let _ = writeln!(
                out,
                "ringside_upstream_requests_total{{upstream=\"{}\",server=\"{}\",status=\"{status}\"}} {n}",
                esc(u),
                esc(s)
            );
        }
        out.push_str("# HELP ringside_upstream_up Whether a server is in use (1) or out (0).\n");
        out.push_str("# TYPE ringside_upstream_up gauge\n");
        for (u, s, up) in &self.up {
            let _ = writeln!(
                out,
                "ringside_upstream_up{{upstream=\"{}\",server=\"{}\"}} {}",
                esc(u),
                esc(s),
                u8::from(*up)
            );
        }
        out.push_str("# HELP ringside_connections_active Open client connections.\n");
        out.push_str("# TYPE ringside_connections_active gauge\n");
        let _ = writeln!(out, "ringside_connections_active {}", self.connections);
        out.push_str("# HELP ringside_cache_requests_total Cache lookups by result.\n");
        out.push_str("# TYPE ringside_cache_requests_total counter\n");
        for (s, n) in CACHE_STATUSES.iter().zip(self.cache) {
            let _ = writeln!(out, "ringside_cache_requests_total{{status=\"{s}\"}} {n}");
        }
        out.push_str("# HELP ringside_request_duration_seconds Time from a complete head to the last byte.\n");
        out.push_str("# TYPE ringside_request_duration_seconds histogram\n");
        self.duration
            .render(&mut out, "ringside_request_duration_seconds", "");
        self.render_added(&mut out);
        out.push_str("# HELP ringside_limited_total Requests and connections the edge shield refused, by route and reason.\n");
        out.push_str("# TYPE ringside_limited_total counter\n");
        let mut limited: Vec<_> = self.limited.iter().collect();
        limited.sort();
        for ((route, why), n) in limited {
            let _ = writeln!(
                out,
                "ringside_limited_total{{route=\"{}\",reason=\"{}\"}} {n}",
                esc(route),
                why.label()
            );
        }
        out
    }
}

impl Snapshot {
    /// The build, per-listener, per-route byte and upstream time metrics.
    fn render_added(&self, out: &mut String) {
        out.push_str("# HELP ringside_build_info The running build.\n");
        out.push_str("# TYPE ringside_build_info gauge\n");
        let version = env!("CARGO_PKG_VERSION");
        let _ = writeln!(out, "ringside_build_info{{version=\"{version}\"}} 1");
        out.push_str("# HELP ringside_connections_accepted_total Client connections accepted, by listener.\n");
        out.push_str("# TYPE ringside_connections_accepted_total counter\n");
        for (l, n) in sorted(&self.accepted) {
            let _ = writeln!(
                out,
                "ringside_connections_accepted_total{{listener=\"{}\"}} {n}",
                esc(l)
            );
        }
        out.push_str(
            "# HELP ringside_tls_handshakes_total TLS handshakes, by listener and result.\n",
        );
        out.push_str("# TYPE ringside_tls_handshakes_total counter\n");
        for ((l, ok), n) in sorted(&self.handshakes) {
            let result = if *ok { "ok" } else { "failed" };
            let _ = writeln!(
                out,
                "ringside_tls_handshakes_total{{listener=\"{}\",result=\"{result}\"}} {n}",
                esc(l)
            );
        }
        out.push_str("# HELP ringside_response_bytes_total Response body bytes sent, by route.\n");
        out.push_str("# TYPE ringside_response_bytes_total counter\n");
        for (r, n) in sorted(&self.bytes) {
            let _ = writeln!(
                out,
                "ringside_response_bytes_total{{route=\"{}\"}} {n}",
                esc(r)
            );
        }
        out.push_str("# HELP ringside_upstream_response_seconds Time from the first connect to the response head, by upstream.\n");
        out.push_str("# TYPE ringside_upstream_response_seconds histogram\n");
        for (u, h) in sorted(&self.upstream_time) {
            let labels = format!("upstream=\"{}\",", esc(u));
            h.render(out, "ringside_upstream_response_seconds", &labels);
        }
    }
}

/// A map's entries in key order, for stable output.
fn sorted<K: Ord, V>(m: &HashMap<K, V>) -> Vec<(&K, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
