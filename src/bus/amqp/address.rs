//! The broker's address: parsing an `amqp://` URL into connection arguments,
//! never showing the password in logs or errors.

use amqprs::connection::OpenConnectionArguments;

use super::HEARTBEAT_SECS;
use crate::bus::BusError;

/// A parsed `amqp://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct BrokerAddress {
    host: String,
    port: u16,
    user: String,
    password: String,
    vhost: String,
    heartbeat: u16,
}

impl std::fmt::Display for BrokerAddress {
    /// `host:port/vhost`, without credentials, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} vhost {}", self.host, self.port, self.vhost)
    }
}

impl std::fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "amqp://{}:***@{}", self.user, self)
    }
}

impl BrokerAddress {
    /// Parses `amqp://[user[:password]@]host[:port][/vhost][?heartbeat=N]`, with the
    /// AMQP URI spec's defaults (guest, guest, 5672, `/`). The vhost is
    /// percent-decoded (`%2f` is `/`); an empty vhost (a trailing `/`) means `/`
    /// too, as most clients read it. Other query parameters are ignored.
    pub(super) fn parse(url: &str) -> Result<BrokerAddress, BusError> {
        let bad = |reason: &str| BusError::BadUrl { url: crate::report::redact_url(url), reason: reason.to_string() };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("expected amqp://host"))?;
        if scheme.eq_ignore_ascii_case("amqps") {
            return Err(bad("amqps (TLS) is not supported; use amqp://"));
        }
        if !scheme.eq_ignore_ascii_case("amqp") {
            return Err(bad("the scheme must be amqp://"));
        }
        if rest.contains('#') {
            return Err(bad("a fragment (#) has no meaning here"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => ("guest".to_string(), "guest".to_string()),
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                (percent_decode(user).map_err(|r| bad(&r))?, percent_decode(password).map_err(|r| bad(&r))?)
            }
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (inside, after) = bracketed.split_once(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (format!("[{inside}]"), port)
        } else {
            match hostport.split_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (hostport.to_string(), None),
            }
        };
        let host =
            if host.is_empty() { "localhost".to_string() } else { percent_decode(&host).map_err(|r| bad(&r))? };
        let port = match port {
            None => 5672,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        let vhost = match path {
            None | Some("") => "/".to_string(),
            Some(p) if p.contains('/') => return Err(bad("the vhost is one path segment (write / as %2f)")),
            Some(p) => percent_decode(p).map_err(|r| bad(&r))?,
        };
        let mut heartbeat = HEARTBEAT_SECS;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "heartbeat" {
                heartbeat = value.parse().map_err(|_| bad("heartbeat must be a number of seconds"))?;
            } else {
                tracing::warn!(parameter = key, "ignoring an unknown parameter of the bus URL");
            }
        }
        Ok(BrokerAddress { host, port, user, password, vhost, heartbeat })
    }

    pub(super) fn connection_arguments(&self) -> OpenConnectionArguments {
        OpenConnectionArguments::new(&self.host, self.port, &self.user, &self.password)
            .virtual_host(&self.vhost)
            .heartbeat(self.heartbeat)
            .connection_name(&format!("cairn pid {}", std::process::id()))
            .finish()
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("bad % escape in {s:?}"))?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| format!("bad % escape in {s:?}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(url: &str) -> BrokerAddress {
        match BrokerAddress::parse(url) {
            Ok(a) => a,
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn url_with_everything() {
        let a = parse("amqp://alice:s%40cret@rabbit.example:5673/prod?heartbeat=30");
        assert_eq!(
            a,
            BrokerAddress {
                host: "rabbit.example".into(),
                port: 5673,
                user: "alice".into(),
                password: "s@cret".into(),
                vhost: "prod".into(),
                heartbeat: 30,
            }
        );
    }

    #[test]
    fn default_vhost_written_three_ways() {
        for url in [
            "amqp://guest:guest@127.0.0.1:5672",
            "amqp://guest:guest@127.0.0.1:5672/",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://guest:guest@127.0.0.1:5672/%2F",
        ] {
            let a = parse(url);
            assert_eq!((a.host.as_str(), a.port, a.vhost.as_str()), ("127.0.0.1", 5672, "/"), "{url}");
            assert_eq!(a.heartbeat, HEARTBEAT_SECS);
        }
    }

    #[test]
    fn defaults_for_missing_parts() {
        let a = parse("amqp://rabbit");
        assert_eq!((a.user.as_str(), a.password.as_str(), a.port), ("guest", "guest", 5672));
        assert_eq!(parse("amqp://[::1]:5000").host, "[::1]");
        assert_eq!(parse("amqp://[::1]").port, 5672);
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_password() {
        for url in [
            "http://rabbit",
            "amqps://rabbit",
            "rabbit:5672",
            "amqp://u:pw@rabbit:notaport",
            "amqp://u:pw@rabbit:0",
            "amqp://u:pw@rabbit/a/b",
            "amqp://u:pw@rabbit/%zz",
            "amqp://u:pw@[::1",
            "amqp://u:pw@rabbit?heartbeat=soon",
        ] {
            match BrokerAddress::parse(url) {
                Err(BusError::BadUrl { url: shown, .. }) => {
                    assert!(!shown.contains(":pw@"), "{shown}")
                }
                other => panic!("{url}: expected BadUrl, got {other:?}"),
            }
        }
    }
}
