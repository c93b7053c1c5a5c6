//! Keeping secrets out of logs and error messages: URLs lose their
//! passwords, and settings holding a password or key print as `***` when
//! formatted with `{:?}`.

use std::fmt;

use serde::Deserialize;

/// `url` with the password of its `user:password@` part replaced by `***`
/// (and any `password=` query parameter too). Anything else is unchanged.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| authority_start + i);
        // The last '@' of the authority ends the user information (a
        // password may itself hold '@' when not percent-encoded).
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(authority_start + colon + 1..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

/// A metadata store URL: `{:?}` shows it without its password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(pub String);

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(&self.0), f)
    }
}

/// A secret setting (a token, a password): `{:?}` shows `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `{:?}` of an optional secret: `Some("***")` or `None`.
pub(crate) struct Hidden<'a>(pub &'a Option<String>);

impl fmt::Debug for Hidden<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(\"***\")"),
            None => f.write_str("None"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_urls() {
        assert_eq!(
            redact_url("postgres://strata:s3cr3t@db:5432/strata"),
            "postgres://strata:***@db:5432/strata"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x?sslmode=require"),
            "postgres://u:***@db/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://db/x?user=u&password=p&sslmode=verify-full"),
            "postgresql://db/x?user=u&password=***&sslmode=verify-full"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact_url("sqlite:///var/lib/strata/m.db"),
            "sqlite:///var/lib/strata/m.db"
        );
        assert_eq!(
            format!("{:?}", StoreUrl("postgres://a:b@h/d".into())),
            "\"postgres://a:***@h/d\""
        );
        assert_eq!(format!("{:?}", Secret("t".into())), "\"***\"");
        assert_eq!(format!("{:?}", Hidden(&Some("k".into()))), "Some(\"***\")");
    }
}
