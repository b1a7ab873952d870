//! What a data server's address from the bus may look like: `host:port`, nothing
//! else. The one home of that rule; [`super::Bus`] applies it when it decodes a
//! heartbeat or a locate reply, so nothing downstream sees an address that could
//! smuggle a scheme, a path, credentials or a query into a URL.
//!
//! Pure functions, no I/O: the address is checked for shape, not dialled.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest DNS name accepted (RFC 1035's 253 characters in text form).
pub const MAX_HOST_LEN: usize = 253;
/// The longest label of a DNS name (RFC 1035).
const MAX_LABEL_LEN: usize = 63;

/// Why a string is not a data server address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAddr {
    /// There is no `:port` after the host.
    #[error("no :port")]
    NoPort,
    /// The port is not a number from 1 to 65535.
    #[error("port is not a number from 1 to 65535")]
    BadPort,
    /// An IPv6 literal is not in brackets, or the brackets hold no IPv6 address.
    #[error("bad IPv6 literal (it must be in brackets)")]
    BadIpv6,
    /// The host is empty.
    #[error("empty host")]
    EmptyHost,
    /// The host is longer than [`MAX_HOST_LEN`].
    #[error("host longer than {MAX_HOST_LEN} characters")]
    HostTooLong,
    /// The host has a character other than letters, digits, `-` and `.`.
    #[error("host has a character other than letters, digits, '-' and '.'")]
    BadHostChar,
    /// The host has an empty label (`a..b`, a leading or trailing dot) or one
    /// longer than 63 characters, a label that starts or ends with `-`, or an
    /// IDNA label (`xn--…`): URL parsers decode those as punycode and refuse or
    /// rewrite the ones that do not decode, so such a name is not the address it
    /// seems (a data server's address needs no internationalized name).
    #[error("host has an empty, over-long, hyphen-edged or IDNA (xn--) label")]
    BadLabel,
    /// The host is all digits and dots but not an IPv4 address (`999.1.1.1`), or
    /// its last label is a number (`a.1`, `0x7f`), which URL parsers read as IPv4.
    #[error("numeric host is not an IPv4 address")]
    BadIpv4,
}

/// Checks that `addr` is `host:port` as API servers dial a data server: the host an
/// IPv4 literal, an IPv6 literal in brackets, or a DNS name (letters, digits, `-`
/// and `.`, at most 253 characters, no empty label); the port 1 to 65535 in
/// decimal. Anything else (a scheme, path, userinfo, query, whitespace) is refused.
pub fn validate_addr(addr: &str) -> Result<(), InvalidAddr> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or(InvalidAddr::BadIpv6)?;
        inside.parse::<Ipv6Addr>().map_err(|_| InvalidAddr::BadIpv6)?;
        let port = after.strip_prefix(':').ok_or(InvalidAddr::NoPort)?;
        (None, port)
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or(InvalidAddr::NoPort)?;
        if host.contains(':') {
            let v6 = host.parse::<Ipv6Addr>().is_ok();
            return Err(if v6 { InvalidAddr::BadIpv6 } else { InvalidAddr::BadHostChar });
        }
        (Some(host), port)
    };
    validate_port(port)?;
    match host {
        Some(host) => validate_host(host),
        None => Ok(()),
    }
}

fn validate_port(port: &str) -> Result<(), InvalidAddr> {
    // `u16::from_str` accepts a leading `+`; a port is digits only.
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidAddr::BadPort);
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(InvalidAddr::BadPort),
    }
}

fn validate_host(host: &str) -> Result<(), InvalidAddr> {
    if host.is_empty() {
        return Err(InvalidAddr::EmptyHost);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(InvalidAddr::HostTooLong);
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err(InvalidAddr::BadHostChar);
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host.parse::<Ipv4Addr>().map(|_| ()).map_err(|_| InvalidAddr::BadIpv4);
    }
    let label_ok = |l: &str| {
        let idna = l.len() >= 4 && l[..4].eq_ignore_ascii_case("xn--");
        !l.is_empty() && l.len() <= MAX_LABEL_LEN && !l.starts_with('-') && !l.ends_with('-') && !idna
    };
    if !host.split('.').all(label_ok) {
        return Err(InvalidAddr::BadLabel);
    }
    // A URL parser (WHATWG, as reqwest's) reads a host whose last label is a
    // number (`a.1`, `0x7f`) as IPv4: it would refuse `a.1` and dial `0x7f.1` as
    // 127.0.0.1, so such a name is not the address it seems.
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    if last.bytes().all(|b| b.is_ascii_digit()) || hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(InvalidAddr::BadIpv4);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses_pass() {
        for addr in [
            "127.0.0.1:1",
            "127.29.1.6:65535",
            "[::1]:8080",
            "[fe80::1:2]:80",
            "localhost:12345",
            "data-1.cluster.example:7000",
            "ds-0123456789abcdef0123456789abcdef.test:7001",
            "A.B-c.D:9",
        ] {
            assert_eq!(validate_addr(addr), Ok(()), "{addr}");
        }
        let longest = format!("{}.{}.{}.{}:1", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
        assert_eq!(validate_addr(&longest), Ok(()));
    }

    #[test]
    fn bad_addresses_name_what_is_wrong() {
        use InvalidAddr::*;
        for (addr, why) in [
            ("", NoPort),
            ("host", NoPort),
            ("host:", BadPort),
            ("host:0", BadPort),
            ("host:65536", BadPort),
            ("host:+80", BadPort),
            ("host:080a", BadPort),
            ("host:000080", BadPort),
            ("host: 80", BadPort),
            (":80", EmptyHost),
            ("::1:80", BadIpv6),
            ("[::1]", NoPort),
            ("[::1]80", NoPort),
            ("[::g]:80", BadIpv6),
            ("[127.0.0.1]:80", BadIpv6),
            ("[::1:80", BadIpv6),
            ("http://host:80", BadHostChar),
            ("host:80/path", BadPort),
            ("host:80?q=1", BadPort),
            ("user@host:80", BadHostChar),
            ("ho st:80", BadHostChar),
            ("host\n:80", BadHostChar),
            ("a/b:80", BadHostChar),
            ("a..b:80", BadLabel),
            (".a:80", BadLabel),
            ("a.:80", BadLabel),
            ("-a.b:80", BadLabel),
            ("a-.b:80", BadLabel),
            // Found by the bus_messages fuzz target: an `xn--` label that is not
            // valid punycode passed, and no URL could be made of it.
            ("XN--4CKncCC1.c:85", BadLabel),
            ("a.xn--nxasmq6b.com:80", BadLabel),
            ("999.1.1.1:80", BadIpv4),
            ("1.2.3:80", BadIpv4),
            ("héllo:80", BadHostChar),
            // Found by tests/fuzz_parsers.rs: a URL parser takes these for IPv4.
            ("a.0:1", BadIpv4),
            ("0x7f.1:80", BadIpv4),
            ("0x7f:80", BadIpv4),
            ("a.0XfF:80", BadIpv4),
            ("a.0x:80", BadIpv4),
        ] {
            assert_eq!(validate_addr(addr), Err(why.clone()), "{addr:?}");
        }
        assert_eq!(validate_addr(&format!("{}:1", "a".repeat(64))), Err(InvalidAddr::BadLabel));
        let too_long = format!("{}:1", ["a"; 128].join("."));
        assert_eq!(too_long.len(), 255 + 2);
        assert_eq!(validate_addr(&too_long), Err(InvalidAddr::HostTooLong));
    }

    #[test]
    fn no_input_panics() {
        for addr in ["[", "]", "[]:", "[]:1", ":", "::", "[::1]:", "\u{0}:1", "[\u{10ffff}]:1"] {
            assert!(validate_addr(addr).is_err(), "{addr:?}");
        }
    }
}
