//! Principals: who a connection is, as Kafka names it (`User:NAME`).
//! A TLS client certificate's subject is written as an RFC 2253
//! distinguished name (`CN=app,OU=eng,O=Acme`, last RDN first, as Java's
//! `X500Principal.getName()` writes it) and mapped to a name by Kafka's
//! `ssl.principal.mapping.rules`: `RULE:pattern/replacement/[LU]` entries
//! and `DEFAULT`, separated by commas; the first rule whose pattern matches
//! the whole name applies.

use regex::Regex;

/// Kafka's principal of a connection nobody authenticated.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Option<Case>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Lower,
    Upper,
}

/// Parsed `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl PrincipalMapper {
    pub fn parse(rules: &str) -> Result<Self, String> {
        let mut parsed = Vec::new();
        let mut rest = rules.trim_start();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                parsed.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("rule '{rest}' has no '/' after its pattern"))?;
                let (replacement, after) = until_slash(after).ok_or_else(|| {
                    format!(
                        "rule '{rest}' has no '/' after its replacement (RULE:pattern/replacement/)"
                    )
                })?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Some(Case::Lower), &after[1..]),
                    Some('U') => (Some(Case::Upper), &after[1..]),
                    _ => (None, after),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("rule pattern '{pattern}': {e}"))?;
                parsed.push(Rule::Replace {
                    pattern,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "'{rest}' is neither DEFAULT nor RULE:pattern/replacement/[LU]"
                ));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("expected ',' between rules at '{rest}'")),
            }
        }
        if parsed.is_empty() {
            return Err("no rule given (DEFAULT keeps the whole name)".into());
        }
        Ok(Self { rules: parsed })
    }

    /// The principal's name for distinguished name `dn`, or `None` when
    /// no rule matches it (Kafka then fails the authentication).
    pub fn map(&self, dn: &str) -> Option<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Some(dn.to_string()),
                Rule::Replace {
                    pattern,
                    replacement,
                    case,
                } => {
                    if !pattern.is_match(dn) {
                        continue;
                    }
                    let name = pattern.replace_all(dn, replacement.as_str()).to_string();
                    return Some(match case {
                        Some(Case::Lower) => name.to_lowercase(),
                        Some(Case::Upper) => name.to_uppercase(),
                        None => name,
                    });
                }
            }
        }
        None
    }
}

/// Text up to the first unescaped '/', with `\/` unescaped, and the rest
/// after that '/'.
fn until_slash(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' if text[at + 1..].starts_with('/') => {
                out.push('/');
                chars.next();
            }
            '/' => return Some((out, &text[at + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's `$1` group references as the regex crate's `${1}` (so `$1x`
/// stays group 1 followed by `x`, as in Java).
fn java_replacement(replacement: &str) -> String {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if next == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(next);
                    }
                }
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut group = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    group.push(*d);
                    chars.next();
                }
                out.push_str(&format!("${{{group}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// The RFC 2253 form of a certificate subject given as its RDNs in
/// certificate order, each a list of `(attribute, value)`.
pub fn rfc2253(rdns: &[Vec<(String, String)>]) -> String {
    rdns.iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(|(attribute, value)| format!("{attribute}={}", escape(value)))
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdn(a: &str, v: &str) -> Vec<(String, String)> {
        vec![(a.to_string(), v.to_string())]
    }

    #[test]
    fn subjects_are_written_last_rdn_first_with_escapes() {
        let subject = [
            rdn("C", "US"),
            rdn("O", "Acme, Inc."),
            rdn("OU", "eng"),
            rdn("CN", "app"),
        ];
        assert_eq!(rfc2253(&subject), r"CN=app,OU=eng,O=Acme\, Inc.,C=US");
        assert_eq!(rfc2253(&[rdn("CN", " x+y ")]), r"CN=\ x\+y\ ");
    }

    #[test]
    fn rules_map_as_kafka_documents_them() {
        let mapper = PrincipalMapper::parse(
            r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, DEFAULT",
        )
        .expect("parses");
        assert_eq!(
            mapper
                .map("CN=kafka-broker,OU=ServiceUsers,O=Org")
                .as_deref(),
            Some("kafka-broker")
        );
        assert_eq!(
            mapper
                .map("CN=Admin,OU=Admin,O=Apache,L=SF,ST=CA,C=US")
                .as_deref(),
            Some("admin@admin")
        );
        assert_eq!(mapper.map("cn=alice,o=x").as_deref(), Some("ALICE"));
        assert_eq!(mapper.map("O=nobody").as_deref(), Some("O=nobody"));
        let strict = PrincipalMapper::parse(r"RULE:^CN=([^,]*)$/$1/").expect("parses");
        assert_eq!(strict.map("CN=a,O=b"), None, "no rule matches");
        let slash = PrincipalMapper::parse(r"RULE:^CN=(.*)\/x$/$1\/y/").expect("parses");
        assert_eq!(slash.map("CN=a/x").as_deref(), Some("a/y"));
        let dollar = PrincipalMapper::parse(r"RULE:^CN=(.*)$/$1x/").expect("parses");
        assert_eq!(dollar.map("CN=a").as_deref(), Some("ax"));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!(PrincipalMapper::parse("").is_err());
        assert!(
            PrincipalMapper::parse("RULE:abc")
                .expect_err("no slash")
                .contains("'/'")
        );
        assert!(PrincipalMapper::parse("RULE:(/x/").is_err(), "bad regex");
        assert!(PrincipalMapper::parse("NOPE").is_err());
        assert!(PrincipalMapper::parse("DEFAULT DEFAULT").is_err());
    }
}
