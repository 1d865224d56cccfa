//! The egress policy: which addresses an outbound connection that a tenant directs
//! (adapter HTTP, provider and lookup URLs, webhooks) may reach.
//!
//! By default every address that is not plainly on the public internet is refused:
//! loopback, private, shared (CGNAT), link-local, unique-local, multicast,
//! unspecified, broadcast, documentation and benchmarking ranges, and the IPv6 forms
//! that carry an IPv4 address (mapped, compatible, 6to4, NAT64) by the address they
//! carry. The operator allows ranges with `--egress-allow` (a gateway on a private
//! network, or the loopback simulators of the tests).
//!
//! The check is made on the address actually connected to: [`Egress::client_builder`]
//! gives reqwest a resolver that drops refused addresses from every answer, so a name
//! that resolves to an internal address (or starts to, DNS rebinding) is never
//! connected to; URLs with a literal address skip resolution in reqwest, so
//! [`Egress::check_url`] checks them before the request. The `url` crate's WHATWG
//! parsing has already turned `127.1`, `2130706433` and `0x7f.1` into `127.0.0.1`.
//! Proxies from the environment are not used, since a proxy would connect for us.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, OnceLock};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The flag, variable and file key an operator allows ranges with (for messages).
pub const HOW_TO_ALLOW: &str =
    "an operator can allow it with --egress-allow CIDR (DIALGATE_EGRESS_ALLOW, or egress_allow in the config file)";

/// Address ranges an operator allowed, in `--egress-allow` form: CIDRs or single
/// addresses, separated by commas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<IpNet>);

impl AllowList {
    /// The allowance the tests and the bench use for their loopback servers.
    pub fn loopback() -> Self {
        Self(vec![
            IpNet::V4(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).expect("/8 is a valid prefix")),
            IpNet::V6(Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).expect("/128 is a valid prefix")),
        ])
    }

    /// The ranges, as given.
    pub fn ranges(&self) -> &[IpNet] {
        &self.0
    }

    /// Adds the ranges of `other`.
    pub fn extend(&mut self, other: &AllowList) {
        for net in &other.0 {
            if !self.0.contains(net) {
                self.0.push(*net);
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl FromStr for AllowList {
    type Err = String;

    /// Parses `CIDR,...`: each entry an address with an optional prefix length
    /// (`10.0.0.0/8`, `fd00::/8`, `192.168.1.20`); blanks around entries are ignored.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = if entry.contains('/') {
                let net = IpNet::from_str(entry)
                    .map_err(|_| format!("{entry:?} is not a CIDR range like 10.0.0.0/8"))?;
                if net.trunc() != net {
                    return Err(format!(
                        "{entry:?} has host bits set; did you mean {}?",
                        net.trunc()
                    ));
                }
                net
            } else {
                IpNet::from(
                    IpAddr::from_str(entry)
                        .map_err(|_| format!("{entry:?} is not an address or a CIDR range"))?,
                )
            };
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(Self(nets))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl<'de> serde::Deserialize<'de> for AllowList {
    /// A TOML list of ranges, or one string of comma-separated ranges.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let text = match Form::deserialize(deserializer)? {
            Form::One(text) => text,
            Form::Many(list) => list.join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an address is not on the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    Unspecified,
    ThisNetwork,
    Loopback,
    Private,
    Shared,
    LinkLocal,
    UniqueLocal,
    SiteLocal,
    Multicast,
    Broadcast,
    Reserved,
    Documentation,
    Benchmarking,
    ProtocolAssignments,
    Teredo,
    Nat64Local,
    Discard,
}

impl Internal {
    /// The kind in a few words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Internal::Unspecified => "unspecified",
            Internal::ThisNetwork => "\"this network\"",
            Internal::Loopback => "loopback",
            Internal::Private => "private",
            Internal::Shared => "shared address space (CGNAT)",
            Internal::LinkLocal => "link-local",
            Internal::UniqueLocal => "unique-local",
            Internal::SiteLocal => "site-local",
            Internal::Multicast => "multicast",
            Internal::Broadcast => "broadcast",
            Internal::Reserved => "reserved",
            Internal::Documentation => "documentation",
            Internal::Benchmarking => "benchmarking",
            Internal::ProtocolAssignments => "protocol assignments",
            Internal::Teredo => "Teredo",
            Internal::Nat64Local => "local-use NAT64",
            Internal::Discard => "discard-only",
        }
    }
}

fn v4(text: &str) -> Ipv4Net {
    text.parse().expect("a valid IPv4 range in the table")
}

fn v6(text: &str) -> Ipv6Net {
    text.parse().expect("a valid IPv6 range in the table")
}

/// IPv4 ranges that are not the public internet (IANA's special-purpose registry,
/// less the few that are globally reachable anycast).
static V4_TABLE: LazyLock<Vec<(Ipv4Net, Internal)>> = LazyLock::new(|| {
    vec![
        (v4("0.0.0.0/32"), Internal::Unspecified),
        (v4("0.0.0.0/8"), Internal::ThisNetwork),
        (v4("10.0.0.0/8"), Internal::Private),
        (v4("100.64.0.0/10"), Internal::Shared),
        (v4("127.0.0.0/8"), Internal::Loopback),
        (v4("169.254.0.0/16"), Internal::LinkLocal),
        (v4("172.16.0.0/12"), Internal::Private),
        (v4("192.0.0.0/24"), Internal::ProtocolAssignments),
        (v4("192.0.2.0/24"), Internal::Documentation),
        (v4("192.88.99.0/24"), Internal::Reserved),
        (v4("192.168.0.0/16"), Internal::Private),
        (v4("198.18.0.0/15"), Internal::Benchmarking),
        (v4("198.51.100.0/24"), Internal::Documentation),
        (v4("203.0.113.0/24"), Internal::Documentation),
        (v4("224.0.0.0/4"), Internal::Multicast),
        (v4("255.255.255.255/32"), Internal::Broadcast),
        (v4("240.0.0.0/4"), Internal::Reserved),
    ]
});

/// IPv6 ranges that are not the public internet and carry no IPv4 address.
static V6_TABLE: LazyLock<Vec<(Ipv6Net, Internal)>> = LazyLock::new(|| {
    vec![
        (v6("::/128"), Internal::Unspecified),
        (v6("::1/128"), Internal::Loopback),
        (v6("64:ff9b:1::/48"), Internal::Nat64Local),
        (v6("100::/64"), Internal::Discard),
        (v6("2001::/32"), Internal::Teredo),
        (v6("2001:2::/48"), Internal::Benchmarking),
        (v6("2001:db8::/32"), Internal::Documentation),
        // The rest of the IETF protocol assignments (ORCHID and the like).
        (v6("2001::/23"), Internal::ProtocolAssignments),
        (v6("3fff::/20"), Internal::Documentation),
        (v6("fc00::/7"), Internal::UniqueLocal),
        (v6("fe80::/10"), Internal::LinkLocal),
        (v6("fec0::/10"), Internal::SiteLocal),
        (v6("ff00::/8"), Internal::Multicast),
    ]
});

/// The IPv4 address an IPv6 address carries and is connected to through: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4
/// (`2002:AABB:CCDD::/48`).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let octets = ip.octets();
    let last = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return Some(mapped);
    }
    if segments[..6] == [0; 6] && u32::from(last) > 1 {
        // IPv4-compatible (deprecated); `::` and `::1` are themselves.
        return Some(last);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last);
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

/// Why `ip` is not a public internet address, if it is not.
pub fn classify(ip: IpAddr) -> Option<Internal> {
    match ip {
        IpAddr::V4(ip) => V4_TABLE
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, kind)| *kind),
        IpAddr::V6(ip) => {
            if let Some(inner) = embedded_v4(ip) {
                return classify(IpAddr::V4(inner));
            }
            V6_TABLE
                .iter()
                .find(|(net, _)| net.contains(&ip))
                .map(|(_, kind)| *kind)
        }
    }
}

/// A connection the policy refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress policy refused {target}: {reason}; {HOW_TO_ALLOW}")]
pub struct Refused {
    /// The host as the URL named it.
    pub target: String,
    pub reason: String,
}

/// The policy: the default refusals less what the operator allowed.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow: AllowList,
}

impl Policy {
    pub fn new(allow: AllowList) -> Self {
        Self { allow }
    }

    /// The ranges the operator allowed.
    pub fn allowed(&self) -> &AllowList {
        &self.allow
    }

    /// Why `ip` may not be connected to, if it may not. An allowed range covers an
    /// IPv6 form that carries an allowed IPv4 address too.
    pub fn refusal(&self, ip: IpAddr) -> Option<Internal> {
        if self.allow.contains(ip) {
            return None;
        }
        if let IpAddr::V6(v6) = ip {
            if let Some(inner) = embedded_v4(v6) {
                if self.allow.contains(IpAddr::V4(inner)) {
                    return None;
                }
            }
        }
        classify(ip)
    }

    /// Checks a literal address named by `target`.
    pub fn check_ip(&self, target: &str, ip: IpAddr) -> Result<(), Refused> {
        match self.refusal(ip) {
            None => Ok(()),
            Some(kind) => Err(Refused {
                target: target.to_owned(),
                reason: format!("{} address", kind.describe()),
            }),
        }
    }

    /// Checks what can be checked of `url` without resolving it: the scheme, and a
    /// literal address. A name is checked when it is resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let target = url.host_str().unwrap_or_default().to_owned();
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused {
                target,
                reason: format!("the scheme {} is not http or https", url.scheme()),
            });
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(&target, IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(&target, IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(Refused {
                target,
                reason: "the URL names no host".into(),
            }),
        }
    }

    /// Checks a grant entry (`host` or `host:port`, IPv6 in brackets) whose host is a
    /// literal address; names pass here and are checked when resolved.
    pub fn check_grant(&self, entry: &str) -> Result<(), Refused> {
        match reqwest::Url::parse(&format!("http://{entry}/")) {
            Ok(url) => self.check_url(&url),
            Err(_) => Ok(()),
        }
    }

    /// The addresses of `resolved` that may be connected to, or why none may.
    fn filter(
        &self,
        name: &str,
        resolved: impl Iterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let mut allowed = Vec::new();
        let mut refused = None;
        for addr in resolved {
            match self.refusal(addr.ip()) {
                None => allowed.push(addr),
                Some(kind) => refused = Some(kind),
            }
        }
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            // The address itself is not named: the tenant chose the name, but what an
            // internal name resolves to is the operator's business.
            (true, Some(kind)) => Err(Refused {
                target: name.to_owned(),
                reason: format!("the name resolves to a {} address", kind.describe()),
            }),
            (true, None) => Err(Refused {
                target: name.to_owned(),
                reason: "the name resolves to no address".into(),
            }),
        }
    }
}

/// The policy with the resolver that applies it; cheap to clone.
#[derive(Clone, Default)]
pub struct Egress {
    policy: Arc<Policy>,
    /// The client adapters share (connection pools, TLS roots).
    shared: Arc<OnceLock<reqwest::Client>>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("allow", &self.policy.allow.to_string())
            .finish()
    }
}

impl Egress {
    pub fn new(allow: AllowList) -> Self {
        Self {
            policy: Arc::new(Policy::new(allow)),
            shared: Arc::default(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Checks what can be checked of `url` before a request (see [`Policy::check_url`]).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        self.policy.check_url(url)
    }

    /// The client shared by the holders of this policy, built on first use from
    /// [`Egress::client_builder`] and `configure` (later calls' `configure` is not
    /// used: one kind of caller, the adapters, shares it).
    pub fn client(
        &self,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> reqwest::Client {
        self.shared
            .get_or_init(|| {
                configure(self.client_builder())
                    .build()
                    .unwrap_or_else(|err| {
                        // Only a TLS backend that cannot start fails here; a client
                        // without our resolver would pass anything, so none is used.
                        tracing::error!("cannot build the outbound HTTP client: {err}");
                        reqwest::Client::builder()
                            .dns_resolver(Arc::new(Resolver {
                                policy: Arc::new(Policy::default()),
                            }))
                            .no_proxy()
                            .redirect(reqwest::redirect::Policy::none())
                            .build()
                            .unwrap_or_default()
                    })
            })
            .clone()
    }

    /// A reqwest client builder that resolves through the policy, follows no
    /// redirects and uses no proxy. Requests must still pass [`Egress::check_url`].
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(Resolver {
                policy: Arc::clone(&self.policy),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
    }
}

/// The policy's refusal somewhere in `err`'s chain of causes, if it is one.
pub fn refusal_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = err.source();
    }
    None
}

/// Resolves names with the system resolver and keeps only the addresses the policy
/// allows, so what reqwest connects to is what was checked.
struct Resolver {
    policy: Arc<Policy>,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = policy.filter(&host, resolved)?;
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).expect("a URL")
    }

    #[test]
    fn internal_ipv4_ranges_are_classified() {
        let cases = [
            ("0.0.0.0", Internal::Unspecified),
            ("0.1.2.3", Internal::ThisNetwork),
            ("10.1.2.3", Internal::Private),
            ("100.64.0.1", Internal::Shared),
            ("100.127.255.254", Internal::Shared),
            ("127.0.0.1", Internal::Loopback),
            ("127.255.255.254", Internal::Loopback),
            ("169.254.169.254", Internal::LinkLocal),
            ("172.16.0.1", Internal::Private),
            ("172.31.255.255", Internal::Private),
            ("192.0.0.8", Internal::ProtocolAssignments),
            ("192.0.2.1", Internal::Documentation),
            ("192.168.1.1", Internal::Private),
            ("198.18.0.1", Internal::Benchmarking),
            ("198.19.255.255", Internal::Benchmarking),
            ("198.51.100.7", Internal::Documentation),
            ("203.0.113.9", Internal::Documentation),
            ("224.0.0.1", Internal::Multicast),
            ("239.255.255.250", Internal::Multicast),
            ("240.0.0.1", Internal::Reserved),
            ("255.255.255.255", Internal::Broadcast),
        ];
        for (address, kind) in cases {
            assert_eq!(classify(ip(address)), Some(kind), "{address}");
        }
    }

    #[test]
    fn public_ipv4_addresses_are_not_internal() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(classify(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn internal_ipv6_ranges_are_classified() {
        let cases = [
            ("::", Internal::Unspecified),
            ("::1", Internal::Loopback),
            ("fc00::1", Internal::UniqueLocal),
            ("fd12:3456::1", Internal::UniqueLocal),
            ("fe80::1", Internal::LinkLocal),
            ("febf::1", Internal::LinkLocal),
            ("fec0::1", Internal::SiteLocal),
            ("ff02::1", Internal::Multicast),
            ("2001:db8::1", Internal::Documentation),
            ("2001:0:4136:e378::1", Internal::Teredo),
            ("2001:2::1", Internal::Benchmarking),
            ("2001:20::1", Internal::ProtocolAssignments),
            ("3fff::1", Internal::Documentation),
            ("64:ff9b:1::1", Internal::Nat64Local),
            ("100::1", Internal::Discard),
        ];
        for (address, kind) in cases {
            assert_eq!(classify(ip(address)), Some(kind), "{address}");
        }
        for address in ["2606:4700::1111", "2a00:1450::1", "2400:cb00::1"] {
            assert_eq!(classify(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_are_judged_by_the_ipv4_they_carry() {
        let cases = [
            ("::ffff:127.0.0.1", Some(Internal::Loopback)),
            ("::ffff:7f00:1", Some(Internal::Loopback)),
            ("::ffff:10.0.0.1", Some(Internal::Private)),
            ("::ffff:169.254.169.254", Some(Internal::LinkLocal)),
            ("::127.0.0.1", Some(Internal::Loopback)),
            ("::10.1.1.1", Some(Internal::Private)),
            ("64:ff9b::127.0.0.1", Some(Internal::Loopback)),
            ("64:ff9b::192.168.0.1", Some(Internal::Private)),
            ("2002:7f00:1::", Some(Internal::Loopback)),
            ("2002:c0a8:101::1", Some(Internal::Private)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
            ("2002:808:808::1", None),
        ];
        for (address, expected) in cases {
            assert_eq!(classify(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn allow_lists_parse_cidrs_and_single_addresses() {
        let list: AllowList = " 127.0.0.0/8, ::1 ,10.0.0.5,fd00::/8,"
            .parse()
            .expect("a list");
        assert_eq!(list.to_string(), "127.0.0.0/8,::1/128,10.0.0.5/32,fd00::/8");
        assert_eq!(
            "".parse::<AllowList>().expect("empty"),
            AllowList::default()
        );
        for bad in [
            "127.0.0.0/33",
            "localhost",
            "10.0.0.1/8",
            "1.2.3/8",
            "::1/129",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<AllowList>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_allowed_range_covers_the_ipv6_forms_of_its_addresses() {
        let policy = Policy::new("127.0.0.0/8".parse().expect("list"));
        assert_eq!(policy.refusal(ip("127.0.0.1")), None);
        assert_eq!(policy.refusal(ip("127.9.9.9")), None);
        assert_eq!(policy.refusal(ip("::ffff:127.0.0.1")), None);
        assert_eq!(policy.refusal(ip("::1")), Some(Internal::Loopback));
        assert_eq!(policy.refusal(ip("10.0.0.1")), Some(Internal::Private));
        let strict = Policy::default();
        assert_eq!(strict.refusal(ip("127.0.0.1")), Some(Internal::Loopback));
        assert_eq!(strict.refusal(ip("8.8.8.8")), None);
    }

    #[test]
    fn numeric_host_forms_are_normalised_before_the_check() {
        let strict = Policy::default();
        for form in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://127.000.000.001/",
            "http://0.0.0.0:8080/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "https://10.1/",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            let err = strict.check_url(&url(form)).expect_err(form);
            assert!(
                err.to_string().starts_with("egress policy refused"),
                "{err}"
            );
            assert!(err.to_string().contains("--egress-allow"), "{err}");
        }
        assert!(strict.check_url(&url("https://api.example.com/x")).is_ok());
        assert!(strict.check_url(&url("http://8.8.8.8/")).is_ok());
        assert!(strict.check_url(&url("ftp://8.8.8.8/")).is_err());
    }

    #[test]
    fn grants_with_a_literal_internal_address_are_refused() {
        let strict = Policy::default();
        for grant in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]:80",
            "0.0.0.0",
            "127.1:9",
        ] {
            assert!(strict.check_grant(grant).is_err(), "{grant}");
        }
        for grant in ["api.example.com", "api.example.com:8443", "8.8.8.8:443"] {
            assert!(strict.check_grant(grant).is_ok(), "{grant}");
        }
        let loopback = Policy::new(AllowList::loopback());
        assert!(loopback.check_grant("127.0.0.1:8080").is_ok());
        assert!(loopback.check_grant("[::1]:8080").is_ok());
    }

    #[test]
    fn resolved_answers_keep_only_allowed_addresses() {
        let strict = Policy::default();
        let answer = |list: &[&str]| {
            list.iter()
                .map(|a| SocketAddr::new(ip(a), 0))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let err = strict
            .filter("internal.example", answer(&["10.0.0.1", "127.0.0.1"]))
            .expect_err("all internal");
        assert!(err.to_string().contains("internal.example"), "{err}");
        assert!(!err.to_string().contains("10.0.0.1"), "{err}");
        let kept = strict
            .filter("mixed.example", answer(&["10.0.0.1", "8.8.8.8"]))
            .expect("one public");
        assert_eq!(kept, vec![SocketAddr::new(ip("8.8.8.8"), 0)]);
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost() {
        use reqwest::dns::Resolve as _;
        let resolver = Resolver {
            policy: Arc::new(Policy::default()),
        };
        let name = reqwest::dns::Name::from_str("localhost").expect("name");
        let err = match resolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err,
        };
        assert!(refusal_in(err.as_ref()).is_some(), "{err}");
        let allowing = Resolver {
            policy: Arc::new(Policy::new(AllowList::loopback())),
        };
        let name = reqwest::dns::Name::from_str("localhost").expect("name");
        let addrs: Vec<SocketAddr> = allowing.resolve(name).await.expect("allowed").collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    proptest! {
        #[test]
        fn every_address_in_an_allowed_range_is_allowed(a: u32, prefix in 0u8..=32) {
            let net = Ipv4Net::new(Ipv4Addr::from(a), prefix).expect("prefix").trunc();
            let list: AllowList = net.to_string().parse().expect("parses back");
            let policy = Policy::new(list);
            let inside = u32::from(net.network()) | (a & !u32::from(net.netmask()));
            prop_assert_eq!(policy.refusal(IpAddr::V4(Ipv4Addr::from(inside))), None);
        }

        #[test]
        fn an_address_parses_as_its_own_range(a: u128) {
            let address = Ipv6Addr::from(a);
            let list: AllowList = address.to_string().parse().expect("parses");
            prop_assert_eq!(list.ranges(), &[IpNet::from(IpAddr::V6(address))][..]);
        }

        #[test]
        fn mapped_forms_classify_like_their_ipv4(a: u32) {
            let inner = Ipv4Addr::from(a);
            prop_assert_eq!(
                classify(IpAddr::V6(inner.to_ipv6_mapped())),
                classify(IpAddr::V4(inner))
            );
        }

        #[test]
        fn the_url_parser_agrees_with_the_classification(a: u32) {
            let inner = Ipv4Addr::from(a);
            let policy = Policy::default();
            // The decimal form of the address, which WHATWG parsing normalises.
            let parsed = url(&format!("http://{a}/"));
            prop_assert_eq!(parsed.host(), Some(url::Host::Ipv4(inner)));
            prop_assert_eq!(
                policy.check_url(&parsed).is_err(),
                classify(IpAddr::V4(inner)).is_some()
            );
        }
    }
}
