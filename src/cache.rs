//! Stage 4, answer: the response cache. One `Cache` per worker (in its `Shard`),
//! holding `cache.size / workers` bytes, evicting the least recently used
//! entry first; no lock, no cross-core traffic (the contract's "a request
//! that lands on another worker may MISS").
//!
//! This file is the store and the contract's caching rules (what is looked
//! up, what is stored and for how long); `serve/cached.rs` is the request
//! path around it (hits, coalesced misses).
//!
//! Choices where the contract is silent:
//! - An entry larger than [`ENTRY_SHARE`] of the shard is not stored (its
//!   body still streams to the client), so one large file cannot flush the
//!   whole shard.
//! - A HEAD miss goes upstream as HEAD and stores nothing (there is no body
//!   to store); a later GET fills the entry, which then answers HEADs too.
//! - A bypassed request (Authorization, or Cache-Control: no-cache) stores
//!   nothing either: an answer to an authorised request is not for others.
//! - `Vary` (other than `*`) is honoured: the entry remembers the request's
//!   values of the fields it names, and a request with other values misses
//!   (and its answer replaces the entry).
//! - The body is stored as the upstream sent it (identity unless the upstream
//!   encoded it); gzip is applied per client on the way out.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use httparse::Header;

use crate::{
    config::Route,
    http::parse::{list, trim, RequestHead, ResponseHead},
};

/// The largest entry is this fraction of the shard (1/8): large enough for
/// any page or API answer in a 256 MiB cache on 16 cores (2 MiB each), small
/// enough that one entry never evicts most of the shard.
pub const ENTRY_SHARE: usize = 8;

/// Bytes counted per entry beyond its key, head and body: the slot, the map
/// entry and the `Rc<Entry>` allocation, rounded up.
const OVERHEAD: usize = 160;

/// A field an answer's `Vary` named: its lowercase name and the value the
/// storing request had (`None`: it had none).
pub type VaryField = (Box<str>, Option<Box<[u8]>>);

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    pub status: u16,
    /// The status line and the fields as a client gets them, each ending in
    /// CRLF, without framing, connection, `X-Cache-Status` or the route's
    /// `add_response_headers` (added per answer), and without the blank line.
    pub head: Box<[u8]>,
    pub body: Bytes,
    pub expires: Instant,
    /// (lowercase field name, the value the storing request had) for each
    /// field the answer's `Vary` named.
    pub vary: Box<[VaryField]>,
    /// The ETag, written per answer (weak when that answer is compressed).
    pub etag: Option<Box<[u8]>>,
    /// The lowercase media type (gzip decides by it) and whether the body
    /// must go as it came (`gzip::as_is`).
    pub media: Box<str>,
    pub as_is: bool,
}

impl Entry {
    fn size(&self, key: &[u8]) -> usize {
        key.len() + self.head.len() + self.body.len() + OVERHEAD
    }

    /// Whether a request with these fields may be answered by this entry.
    pub fn varies_with(&self, headers: &[Header<'_>]) -> bool {
        self.vary.iter().any(|(name, stored)| {
            let now = headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value);
            now != stored.as_deref()
        })
    }
}

/// What a lookup found.
pub enum Lookup {
    Hit(Rc<Entry>),
    /// There was an entry, past its validity (now removed).
    Expired,
    Miss,
}

/// A slot of the LRU list (indexes into `Cache::slots`; `NIL` ends it).
struct Slot {
    key: Rc<[u8]>,
    entry: Option<Rc<Entry>>,
    size: usize,
    prev: u32,
    next: u32,
}

const NIL: u32 = u32::MAX;

/// One worker's entries: a map from key to slot, and the slots in a doubly
/// linked list, most recently used first.
pub struct Cache {
    map: HashMap<Rc<[u8]>, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    used: usize,
    capacity: usize,
}

impl Cache {
    /// A shard of `capacity` bytes (0 turns storing off).
    pub fn new(capacity: usize) -> Self {
        Cache {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            used: 0,
            capacity,
        }
    }

    /// The largest entry this shard stores.
    pub fn entry_cap(&self) -> usize {
        self.capacity / ENTRY_SHARE
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Finds `key`; a hit becomes the most recently used entry, an expired
    /// entry is dropped.
    pub fn lookup(&mut self, key: &[u8], now: Instant) -> Lookup {
        let Some(&i) = self.map.get(key) else {
            return Lookup::Miss;
        };
        let slot = &self.slots[i as usize];
        let entry = slot.entry.as_ref().expect("a mapped slot holds an entry");
        if entry.expires <= now {
            self.remove_slot(i);
            return Lookup::Expired;
        }
        let entry = entry.clone();
        self.unlink(i);
        self.push_front(i);
        Lookup::Hit(entry)
    }

    /// Stores `entry` under `key` (replacing any older one), evicting least
    /// recently used entries to make room. False when it is over the
    /// per-entry cap.
    pub fn insert(&mut self, key: &[u8], entry: Entry) -> bool {
        let size = entry.size(key);
        if size > self.entry_cap() {
            return false;
        }
        if let Some(&old) = self.map.get(key) {
            self.remove_slot(old);
        }
        while self.used + size > self.capacity && self.tail != NIL {
            self.remove_slot(self.tail);
        }
        let key: Rc<[u8]> = key.into();
        let slot = Slot {
            key: key.clone(),
            entry: Some(Rc::new(entry)),
            size,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.used += size;
        true
    }

    fn remove_slot(&mut self, i: u32) {
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        self.map.remove(&slot.key);
        slot.entry = None;
        slot.key = Rc::from(&[][..]);
        self.used -= slot.size;
        self.free.push(i);
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.slots[o as usize].prev = i,
        }
        self.head = i;
    }
}

/// Fetches in flight per key on one worker (request coalescing): the first
/// miss leads, later misses for the key wait for its `Flight` to end.
#[derive(Default)]
pub struct Flights {
    map: RefCell<HashMap<Rc<[u8]>, async_channel::Receiver<()>>>,
}

/// Held by the request that fetches a key; dropping it (stored, not
/// storable, failed, or the task cancelled) wakes the waiters.
pub struct Flight<'a> {
    flights: &'a Flights,
    key: Rc<[u8]>,
    _done: async_channel::Sender<()>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.flights.map.borrow_mut().remove(&self.key);
    }
}

pub enum Join<'a> {
    /// Nobody fetches this key: fetch it, holding the flight.
    Lead(Flight<'a>),
    /// Someone does: wait on this (it closes when they are done).
    Wait(async_channel::Receiver<()>),
}

impl Flights {
    pub fn join(&self, key: &[u8]) -> Join<'_> {
        let mut map = self.map.borrow_mut();
        if let Some(rx) = map.get(key) {
            return Join::Wait(rx.clone());
        }
        let (tx, rx) = async_channel::bounded(1);
        let key: Rc<[u8]> = key.into();
        map.insert(key.clone(), rx);
        Join::Lead(Flight {
            flights: self,
            key,
            _done: tx,
        })
    }
}

/// How a cached route's GET/HEAD meets the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheReq {
    /// Lowercase Host, a space, the target as sent.
    pub key: Vec<u8>,
    pub bypass: bool,
    /// The `X-Cache-Status` this request gets, settled by the lookup.
    pub status: Cell<Status>,
}

/// The `X-Cache-Status` values of the contract (in `stats::CACHE_STATUSES`
/// order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Expired,
    Bypass,
}

impl Status {
    /// The index `stats::CACHE_STATUSES` counts it under.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Status::Hit => b"HIT",
            Status::Miss => b"MISS",
            Status::Expired => b"EXPIRED",
            Status::Bypass => b"BYPASS",
        }
    }
}

/// The cache side of a request: `None` unless it is a GET or HEAD on a
/// route with `cache`. Authorization or `Cache-Control: no-cache` bypass.
pub fn request(route: &Route, req: &RequestHead<'_, '_>) -> Option<CacheReq> {
    if route.cache.is_empty() || !matches!(req.method, "GET" | "HEAD") {
        return None;
    }
    let bypass = req.header("authorization").is_some()
        || has_token(req.headers, "cache-control", b"no-cache");
    let host = req.host.unwrap_or(b"");
    let mut key = Vec::with_capacity(host.len() + 1 + req.origin.len());
    key.extend(host.iter().map(u8::to_ascii_lowercase));
    key.push(b' ');
    if req.spans.rooted {
        key.push(b'/');
    }
    key.extend_from_slice(req.origin.as_bytes());
    let status = Cell::new(if bypass { Status::Bypass } else { Status::Miss });
    Some(CacheReq {
        key,
        bypass,
        status,
    })
}

/// How long the answer may be stored, by the contract's rules: a listed
/// status, no Set-Cookie, no `Cache-Control: no-store | private |
/// no-cache`, no `Vary: *`; `s-maxage`, else `max-age`, overrides the
/// configured validity. `None`: not stored.
pub fn validity(route: &Route, res: &ResponseHead<'_, '_>) -> Option<Duration> {
    let configured = route
        .cache
        .iter()
        .find(|(status, _)| *status == res.status)?
        .1;
    let mut s_maxage = None;
    let mut max_age = None;
    for h in res.headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        if name.eq_ignore_ascii_case("vary") && list(h.value).any(|v| v == b"*") {
            return None;
        }
        if !name.eq_ignore_ascii_case("cache-control") {
            continue;
        }
        for directive in list(h.value) {
            let (k, v) = match directive.iter().position(|&b| b == b'=') {
                Some(eq) => (trim(&directive[..eq]), Some(trim(&directive[eq + 1..]))),
                None => (directive, None),
            };
            let is = |n: &str| k.eq_ignore_ascii_case(n.as_bytes());
            if is("no-store") || is("private") || is("no-cache") {
                return None;
            }
            if is("s-maxage") {
                s_maxage = v.and_then(seconds);
            } else if is("max-age") {
                max_age = v.and_then(seconds);
            }
        }
    }
    let validity = s_maxage.or(max_age).map_or(configured, Duration::from_secs);
    (!validity.is_zero()).then_some(validity)
}

/// `delta-seconds`, quoted or not (RFC 9111 section 1.2.2).
fn seconds(v: &[u8]) -> Option<u64> {
    let v = v
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Longer than u64 means "very long": RFC 9111 says use 2^31.
    Some(std::str::from_utf8(v).ok()?.parse().unwrap_or(1 << 31))
}

/// The lowercase names an answer's `Vary` lists.
pub fn vary_names(res: &ResponseHead<'_, '_>) -> Vec<Box<str>> {
    let mut names: Vec<Box<str>> = Vec::new();
    for h in res
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("vary"))
    {
        for name in list(h.value) {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            if !names.iter().any(|n| **n == *name) {
                names.push(name.into());
            }
        }
    }
    names
}

/// Whether a field of `headers` lists `token` (comma-separated, any case).
pub fn has_token(headers: &[Header<'_>], name: &str, token: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| list(h.value))
        .any(|t| {
            let t = t.split(|&b| b == b'=').next().unwrap_or(t);
            trim(t).eq_ignore_ascii_case(token)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: usize, ttl: Duration) -> Entry {
        Entry {
            status: 200,
            head: b"HTTP/1.1 200 OK\r\n"[..].into(),
            body: Bytes::from(vec![b'x'; body]),
            expires: Instant::now() + ttl,
            vary: Box::new([]),
            media: "text/plain".into(),
            etag: None,
            as_is: false,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn hit_miss_and_expiry() {
        let mut c = Cache::new(1 << 20);
        assert!(matches!(c.lookup(b"h /a", Instant::now()), Lookup::Miss));
        assert!(c.insert(b"h /a", entry(10, HOUR)));
        assert!(matches!(c.lookup(b"h /a", Instant::now()), Lookup::Hit(_)));
        assert!(c.insert(b"h /b", entry(10, Duration::ZERO)));
        assert!(matches!(c.lookup(b"h /b", Instant::now()), Lookup::Expired));
        assert!(matches!(c.lookup(b"h /b", Instant::now()), Lookup::Miss));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn evicts_least_recently_used() {
        // Each entry counts 2 + 17 + 200 + 160 = 379 bytes: 8 fit in 3200.
        let mut c = Cache::new(3200);
        for i in 1..=8 {
            assert!(c.insert(format!("k{i}").as_bytes(), entry(200, HOUR)));
        }
        assert_eq!(c.used(), 8 * 379);
        // k1 is used again, so k2 is now the least recently used.
        assert!(matches!(c.lookup(b"k1", Instant::now()), Lookup::Hit(_)));
        assert!(c.insert(b"k9", entry(200, HOUR)));
        assert!(c.used() <= 3200);
        assert!(matches!(c.lookup(b"k2", Instant::now()), Lookup::Miss));
        for k in [&b"k1"[..], b"k3", b"k9"] {
            assert!(matches!(c.lookup(k, Instant::now()), Lookup::Hit(_)));
        }
    }

    #[test]
    fn over_the_entry_cap_is_refused_and_replacing_keeps_accounts() {
        let mut c = Cache::new(8000);
        assert!(!c.insert(b"big", entry(2000, HOUR)));
        assert!(c.insert(b"k", entry(100, HOUR)));
        let one = c.used();
        assert!(c.insert(b"k", entry(100, HOUR)));
        assert_eq!(c.used(), one);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn coalescing_flights() {
        let f = Flights::default();
        let lead = match f.join(b"k") {
            Join::Lead(l) => l,
            Join::Wait(_) => panic!("first must lead"),
        };
        let Join::Wait(rx) = f.join(b"k") else {
            panic!("second must wait")
        };
        assert!(!rx.is_closed());
        drop(lead);
        assert!(rx.is_closed());
        assert!(matches!(f.join(b"k"), Join::Lead(_)));
    }
}
