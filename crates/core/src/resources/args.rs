//! `{{args.name}}` substitution without injection.
//!
//! Argo substitutes args textually everywhere, so a crafted value can rewrite a GraphQL query,
//! a condition or an address. We substitute per context: plain strings (they reach OAP as
//! GraphQL *variables*, never as query text), addresses (host-safe characters only), MQE
//! expressions and raw GraphQL (inside a string literal the value is escaped or refused; outside
//! one it must be a single number or name token). Conditions never see text substitution: args
//! are variables there (see `analysis::expr`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*args\.([A-Za-z0-9_.\-]+)\s*\}\}").expect("static regex"));
static ANY_TEMPLATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{[^}]*\}\}").expect("static regex"));
static NAME_TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("static regex"));
static HOST_TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9.\-:\[\]]+$").expect("static regex"));

/// Where a substituted value lands; decides what is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgContext {
    /// A value sent as data (GraphQL variable, header value, entity name).
    Plain,
    /// Host (and port) part of a URL.
    Address,
    /// An MQE expression (single-quoted strings).
    Mqe,
    /// A raw GraphQL document (double-quoted and block strings).
    GraphQl,
}

/// Why a substitution was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// `{{args.x}}` names an arg with no value.
    #[error("args.{0} was not resolved: it has no value (declare a default or pass --arg {0}=...)")]
    Unresolved(String),
    /// A value is unsafe in its context.
    #[error("args.{name}: value {value:?} is not allowed here: {why}")]
    Unsafe {
        /// Arg name.
        name: String,
        /// The offending value.
        value: String,
        /// What makes the value unsafe there (shown after the value).
        why: String,
    },
    /// A `{{...}}` that is not an args reference.
    #[error("unsupported template {0:?}: only {{{{args.NAME}}}} is supported")]
    Unsupported(String),
}

/// Names of all args referenced by `{{args.x}}` in `text`.
pub fn referenced_args(text: &str) -> Vec<String> {
    PLACEHOLDER
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .collect()
}

/// `{{...}}` occurrences that are not `{{args.NAME}}`.
pub fn unsupported_templates(text: &str) -> Vec<String> {
    ANY_TEMPLATE
        .find_iter(text)
        .map(|m| m.as_str().to_string())
        .filter(|t| !PLACEHOLDER.is_match(t))
        .collect()
}

/// Substitutes every `{{args.x}}` of `text` for its context.
pub fn substitute(
    text: &str,
    args: &BTreeMap<String, String>,
    ctx: ArgContext,
) -> Result<String, ArgError> {
    if let Some(t) = unsupported_templates(text).into_iter().next() {
        return Err(ArgError::Unsupported(t));
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in PLACEHOLDER.captures_iter(text) {
        let whole = caps.get(0).expect("group 0 always exists");
        let name = &caps[1];
        let value = args
            .get(name)
            .ok_or_else(|| ArgError::Unresolved(name.to_string()))?;
        let unsafe_value = |why: &str| ArgError::Unsafe {
            name: name.to_string(),
            value: value.clone(),
            why: why.to_string(),
        };
        if value.chars().any(char::is_control) {
            return Err(unsafe_value("control characters are never allowed"));
        }
        out.push_str(&text[last..whole.start()]);
        let piece = match ctx {
            ArgContext::Plain => value.clone(),
            ArgContext::Address => {
                if !HOST_TOKEN.is_match(value) {
                    return Err(unsafe_value(
                        "an address part may only contain letters, digits, '.', '-', ':', '[' and ']'",
                    ));
                }
                value.clone()
            }
            ArgContext::Mqe => match quote_state(text, whole.start(), &['\'']) {
                Some(_) => {
                    if value.contains(['\'', '"', '\\']) {
                        return Err(unsafe_value(
                            "quotes and backslashes cannot appear inside an MQE string",
                        ));
                    }
                    value.clone()
                }
                None => token_only(value).map_err(|w| unsafe_value(&w))?,
            },
            ArgContext::GraphQl => match graphql_string_state(text, whole.start()) {
                GqlState::String => escape_graphql_string(value),
                GqlState::BlockString => {
                    if value.contains(['"', '\\']) {
                        return Err(unsafe_value(
                            "quotes and backslashes cannot appear inside a block string",
                        ));
                    }
                    value.clone()
                }
                GqlState::Code => token_only(value).map_err(|w| unsafe_value(&w))?,
            },
        };
        out.push_str(&piece);
        last = whole.end();
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Outside string literals a value must be one number or one name, so it cannot add syntax.
fn token_only(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.parse::<f64>().is_ok_and(f64::is_finite) && !v.contains(['e', 'E'])
        || NAME_TOKEN.is_match(v)
    {
        Ok(v.to_string())
    } else {
        Err("outside a string literal only a single number or name is allowed".into())
    }
}

/// Escapes a value as the content of a GraphQL `"..."` string.
pub fn escape_graphql_string(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s
}

/// Which quote (if any) is open at byte `pos`, for simple single-char-quote languages.
fn quote_state(text: &str, pos: usize, quotes: &[char]) -> Option<char> {
    let mut open: Option<char> = None;
    let mut escaped = false;
    for c in text[..pos].chars() {
        match open {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    open = None;
                }
            }
            None if quotes.contains(&c) => open = Some(c),
            None => {}
        }
    }
    open
}

enum GqlState {
    Code,
    String,
    BlockString,
}

fn graphql_string_state(text: &str, pos: usize) -> GqlState {
    let b = &text.as_bytes()[..pos];
    let mut i = 0;
    let mut state = GqlState::Code;
    while i < b.len() {
        match state {
            GqlState::Code => {
                if b[i..].starts_with(b"\"\"\"") {
                    state = GqlState::BlockString;
                    i += 3;
                    continue;
                } else if b[i] == b'"' {
                    state = GqlState::String;
                } else if b[i] == b'#' {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
            }
            GqlState::String => {
                if b[i] == b'\\' {
                    i += 2;
                    continue;
                } else if b[i] == b'"' {
                    state = GqlState::Code;
                }
            }
            GqlState::BlockString => {
                if b[i..].starts_with(b"\\\"\"\"") {
                    i += 4;
                    continue;
                } else if b[i..].starts_with(b"\"\"\"") {
                    state = GqlState::Code;
                    i += 3;
                    continue;
                }
            }
        }
        i += 1;
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_substitution_trims_tag_whitespace() {
        let a = args(&[("service", "reviews.bookinfo")]);
        assert_eq!(
            substitute("{{ args.service }}", &a, ArgContext::Plain).unwrap(),
            "reviews.bookinfo"
        );
        assert_eq!(
            substitute("x-{{args.service}}-y", &a, ArgContext::Plain).unwrap(),
            "x-reviews.bookinfo-y"
        );
    }

    #[test]
    fn unresolved_arg_is_an_error() {
        assert_eq!(
            substitute("{{args.nope}}", &args(&[]), ArgContext::Plain),
            Err(ArgError::Unresolved("nope".into()))
        );
    }

    #[test]
    fn control_characters_are_rejected_everywhere() {
        let a = args(&[("s", "a\nb")]);
        for ctx in [
            ArgContext::Plain,
            ArgContext::Address,
            ArgContext::Mqe,
            ArgContext::GraphQl,
        ] {
            assert!(matches!(
                substitute("{{args.s}}", &a, ctx),
                Err(ArgError::Unsafe { .. })
            ));
        }
    }

    #[test]
    fn graphql_string_values_are_escaped() {
        let a = args(&[("service", r#"x", normal: false) { evil } #"#)]);
        let q = r#"query { a(name: "{{args.service}}") }"#;
        let out = substitute(q, &a, ArgContext::GraphQl).unwrap();
        assert_eq!(
            out,
            r#"query { a(name: "x\", normal: false) { evil } #") }"#
        );
    }

    #[test]
    fn graphql_code_position_accepts_only_tokens() {
        let q = "query { a(first: {{args.n}}) }";
        assert_eq!(
            substitute(q, &args(&[("n", "5")]), ArgContext::GraphQl).unwrap(),
            "query { a(first: 5) }"
        );
        assert!(substitute(q, &args(&[("n", "5) { x")]), ArgContext::GraphQl).is_err());
    }

    #[test]
    fn mqe_inside_quotes_and_outside() {
        let e = "service_percentile{p='{{args.p}}'} > {{args.max}}";
        let ok = substitute(e, &args(&[("p", "99"), ("max", "300")]), ArgContext::Mqe).unwrap();
        assert_eq!(ok, "service_percentile{p='99'} > 300");
        assert!(
            substitute(
                e,
                &args(&[("p", "99'} or x{a='"), ("max", "1")]),
                ArgContext::Mqe
            )
            .is_err()
        );
        assert!(
            substitute(
                e,
                &args(&[("p", "99"), ("max", "1 + service_sla")]),
                ArgContext::Mqe
            )
            .is_err()
        );
    }

    #[test]
    fn address_values_are_host_tokens() {
        let a = "http://{{args.host}}:12800";
        assert!(substitute(a, &args(&[("host", "oap.skywalking")]), ArgContext::Address).is_ok());
        assert!(substitute(a, &args(&[("host", "evil.com/x?")]), ArgContext::Address).is_err());
        assert!(substitute(a, &args(&[("host", "user@evil")]), ArgContext::Address).is_err());
    }

    #[test]
    fn unsupported_templates_are_reported() {
        assert_eq!(
            unsupported_templates("{{workflow.x}} {{args.y}}"),
            vec!["{{workflow.x}}"]
        );
        assert!(matches!(
            substitute("{{ secrets.x }}", &args(&[]), ArgContext::Plain),
            Err(ArgError::Unsupported(_))
        ));
    }

    #[test]
    fn referenced_args_found() {
        assert_eq!(
            referenced_args("{{args.a}} {{ args.b-c }}"),
            vec!["a", "b-c"]
        );
    }
}
