//! How errors and addresses are written into messages and logs: an error with
//! all its causes on one line ([`error_chain`]), and a URL with its password
//! masked ([`redact_url`]). A leaf: it uses nothing of cairn, and every room
//! that reports may use it.

/// The error and its sources on one line, each cause once: a client library's
/// top-level message alone often hides the cause (reqwest's "error sending
/// request"), while some errors repeat their source's text in their own.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text
}

/// `url` with its password masked, wherever the URL carries one: the user info
/// (`scheme://user:***@host`) or a `password=` query parameter
/// (`password=***`). Anything that is not such a URL comes back as it is.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let head = match head.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '#']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{hosts}{path}"),
                    None => head.to_string(),
                },
                None => head.to_string(),
            }
        }
        None => head.to_string(),
    };
    match query {
        Some(query) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***".to_string(),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{head}?{}", pairs.join("&"))
        }
        None => head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db?schema=s"), "postgres://u:***@h:5432/db?schema=s");
        assert_eq!(redact_url("postgres://u@h/db?password=secret&x=1"), "postgres://u@h/db?password=***&x=1");
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqp://u:p@h#frag"), "amqp://u:***@h#frag");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let e = Layer("error sending request", Some(Box::new(Layer("connection refused", None))));
        assert_eq!(error_chain(&e), "error sending request: connection refused");
        let repeats = Layer("open failed: disk full", Some(Box::new(Layer("disk full", None))));
        assert_eq!(error_chain(&repeats), "open failed: disk full");
    }
}
