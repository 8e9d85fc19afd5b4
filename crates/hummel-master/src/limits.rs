//! The bounds of the public surface, besides the body sizes (`crate::api::ApiJson`, per route)
//! and the connections (the binary's listener):
//!
//! - **Requests per client address** ([`Limits::check_request`], the [`rate_limit`]
//!   middleware): `MasterConfig::rate_limit` a second with bursts of
//!   [`crate::config::RATE_BURST_SECONDS`] times as many, by `governor` (GCRA, one cell per
//!   address). Beyond it: 429 `rate_limited` with `Retry-After`, before the handler runs and
//!   before any body is read. An address is an IPv4 address or an IPv6 /64 (a host commonly
//!   holds a whole /64, so finer keys would let it rotate).
//! - **Requests at once** ([`MAX_API_REQUESTS`]): tower's global concurrency limit behind a
//!   load shedder; beyond it, 503 `busy` with `Retry-After` at once instead of a queue.
//! - **New clients per address** ([`Limits::check_new_client`]): a client id is registered by
//!   its first report ([`crate::clients`]); an address registers at most
//!   [`NEW_CLIENTS_PER_HOUR`] an hour, so fake clients cannot fill the table from one host.
//!
//! Both apply to the routes anyone may call: the client API, the dashboard, `/build` and
//! `/metrics`. `/health` stays unlimited (monitoring must see a master under load), and so do
//! `/blob` (bounded by `--fallback-limit`; slaves replicate through it) and the slaves' routes
//! (slave token). Memory: one small entry per address seen recently; [`Limits::forget_idle`]
//! drops the entries of addresses back to a full budget.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::api::ApiError;
use crate::config::RATE_BURST_SECONDS;
use crate::master::Master;

/// Most requests to the public routes the master handles at once; more are answered 503
/// `busy` (with `Retry-After`) rather than queued. Each may hold a blocking thread (status,
/// placement, an index subtree); 64 keep a 2-core master responsive.
pub(crate) const MAX_API_REQUESTS: usize = 64;

/// New client ids one address may register an hour (and at once).
pub(crate) const NEW_CLIENTS_PER_HOUR: u32 = 60;

/// The per-address limiters.
pub(crate) struct Limits {
    /// `None` with `rate_limit` 0.
    requests: Option<DefaultKeyedRateLimiter<IpAddr>>,
    new_clients: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Limits {
    /// Limits of `rate` requests a second per address (0: unlimited).
    pub(crate) fn new(rate: u32) -> Limits {
        let requests = NonZeroU32::new(rate).map(|r| {
            let burst = NonZeroU32::new(rate.saturating_mul(RATE_BURST_SECONDS)).unwrap_or(r);
            RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
        });
        let per_hour = NonZeroU32::new(NEW_CLIENTS_PER_HOUR).unwrap_or(NonZeroU32::MIN);
        Limits {
            requests,
            new_clients: RateLimiter::keyed(Quota::per_hour(per_hour)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request of `addr`'s budget, or says how long to wait for one.
    pub(crate) fn check_request(&self, addr: IpAddr) -> Result<(), Duration> {
        match &self.requests {
            None => Ok(()),
            Some(l) => l
                .check_key(&address_key(addr))
                .map_err(|n| n.wait_time_from(self.clock.now())),
        }
    }

    /// Takes one new client of `addr`'s budget, or says how long to wait for one.
    pub(crate) fn check_new_client(&self, addr: IpAddr) -> Result<(), Duration> {
        self.new_clients
            .check_key(&address_key(addr))
            .map_err(|n| n.wait_time_from(self.clock.now()))
    }

    /// Forgets addresses whose budget is full again (they would start afresh anyway).
    pub(crate) fn forget_idle(&self) {
        if let Some(l) = &self.requests {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.new_clients.retain_recent();
        self.new_clients.shrink_to_fit();
    }

    /// Addresses currently remembered (both limiters).
    pub(crate) fn addresses(&self) -> usize {
        self.requests.as_ref().map_or(0, |l| l.len()) + self.new_clients.len()
    }
}

/// What a client address is limited by: the IPv4 address (also inside an IPv4-mapped IPv6
/// address), or the IPv6 address's /64.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The peer's address, when the server provides it (not in tests through `oneshot`).
pub(crate) fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}

/// Middleware of the public routes: 429 `rate_limited` beyond the address's rate.
pub(crate) async fn rate_limit(State(master): State<Master>, req: Request, next: Next) -> Response {
    if let Some(addr) = peer(&req)
        && let Err(wait) = master.inner.limits.check_request(addr.ip())
    {
        master
            .inner
            .metrics
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return ApiError::rate_limited(
            format!(
                "more than {} requests a second from this address; retry later",
                master.config().rate_limit
            ),
            wait,
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_waits() {
        let l = Limits::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..2 * RATE_BURST_SECONDS {
            assert!(l.check_request(a).is_ok());
        }
        let wait = l.check_request(a).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        // Another address has its own budget.
        assert!(l.check_request(b).is_ok());
        // Off: no limit.
        let off = Limits::new(0);
        for _ in 0..10_000 {
            assert!(off.check_request(a).is_ok());
        }
    }

    #[test]
    fn new_clients_per_address_are_bounded() {
        let l = Limits::new(0);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..NEW_CLIENTS_PER_HOUR {
            assert!(l.check_new_client(a).is_ok());
        }
        let wait = l.check_new_client(a).unwrap_err();
        assert!(wait > Duration::from_secs(30), "{wait:?}");
        // The same /64 is the same budget; another /64 is not.
        assert!(
            l.check_new_client("2001:db8::ffff".parse().unwrap())
                .is_err()
        );
        assert!(
            l.check_new_client("2001:db8:0:1::1".parse().unwrap())
                .is_ok()
        );
        assert!(l.addresses() >= 2);
    }

    #[test]
    fn addresses_are_keyed_by_host_or_v6_prefix() {
        let k = |s: &str| address_key(s.parse().unwrap()).to_string();
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
    }
}
