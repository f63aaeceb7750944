//! Which requests of an intercepted port a claim takes: its [`Route`].
//!
//! A global claim ([`Route::GLOBAL`]) takes every connection, whatever it speaks. A filtered
//! claim takes only the HTTP requests whose headers and path match its [`Filter`], request by
//! request; the rest go to the app. A mirror gets a copy of what it matches while the app
//! keeps answering.
//!
//! Two stealing claims on one port must never be able to match the same request, so that
//! where a request goes does not depend on the order the claims came in. [`Filter::overlap`]
//! decides that conservatively: it calls two filters disjoint only when some header or the
//! path proves it (two different exact values, an exact value the other's regex refuses, two
//! prefixes neither of which extends the other). Two regexes on the same header are taken to
//! overlap, since no cheap test tells otherwise.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a claim does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Mode {
    /// Matching traffic goes to the laptop instead of the app.
    #[default]
    Steal,
    /// The app answers everything; the laptop gets a copy and its answers are dropped.
    Mirror,
}

/// A value test: the whole value equals the text, or the whole value matches the regex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pattern {
    Exact(String),
    Regex(String),
}

/// A test of one request header (names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lower case.
    pub name: String,
    pub value: Pattern,
}

/// A test of the request's path (without the query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatch {
    Prefix(String),
    Equal(String),
    /// Must match the whole path.
    Regex(String),
}

/// All of its tests must pass; an empty filter matches everything, HTTP or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Filter {
    pub headers: Vec<HeaderMatch>,
    pub path: Option<PathMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Route {
    pub mode: Mode,
    pub filter: Filter,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{name:?} is not a valid HTTP header name")]
    HeaderName { name: String },
    #[error("the regex {pattern:?} does not parse: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("the path {path:?} does not start with /")]
    Path { path: String },
}

impl Route {
    /// Every connection of the port, to the laptop.
    pub const GLOBAL: Route = Route {
        mode: Mode::Steal,
        filter: Filter {
            headers: Vec::new(),
            path: None,
        },
    };

    pub fn is_global(&self) -> bool {
        self.mode == Mode::Steal && self.filter.is_empty()
    }

    /// Whether this claim and `other` may not both hold the port: two stealing claims whose
    /// filters may match one request. Mirrors coexist with everything.
    pub fn conflicts_with(&self, other: &Route) -> bool {
        self.mode == Mode::Steal && other.mode == Mode::Steal && self.filter.overlap(&other.filter)
    }
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.path.is_none()
    }

    /// Whether some request could match both (conservative: `true` unless proven disjoint).
    pub fn overlap(&self, other: &Filter) -> bool {
        let headers_disjoint = self.headers.iter().any(|a| {
            other
                .headers
                .iter()
                .any(|b| a.name == b.name && patterns_disjoint(&a.value, &b.value))
        });
        let paths_disjoint = match (&self.path, &other.path) {
            (Some(a), Some(b)) => paths_disjoint(a, b),
            _ => false,
        };
        !(headers_disjoint || paths_disjoint)
    }

    /// Checks every name, path and regex, so that a bad one is refused before it is sent.
    pub fn validate(&self) -> Result<(), RouteError> {
        for h in &self.headers {
            let valid = !h.name.is_empty()
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                return Err(RouteError::HeaderName {
                    name: h.name.clone(),
                });
            }
            if let Pattern::Regex(r) = &h.value {
                whole(r)?;
            }
        }
        match &self.path {
            Some(PathMatch::Regex(r)) => {
                whole(r)?;
            }
            Some(PathMatch::Prefix(p) | PathMatch::Equal(p)) if !p.starts_with('/') => {
                return Err(RouteError::Path { path: p.clone() });
            }
            _ => {}
        }
        Ok(())
    }
}

/// `pattern` anchored at both ends, so that it must match the whole value.
pub fn whole(pattern: &str) -> Result<Regex, RouteError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|source| RouteError::Regex {
        pattern: pattern.into(),
        source: Box::new(source),
    })
}

fn matches_whole(pattern: &str, value: &str) -> bool {
    // An invalid regex matches nothing; validate() refuses it earlier anyway.
    whole(pattern).is_ok_and(|r| r.is_match(value))
}

fn patterns_disjoint(a: &Pattern, b: &Pattern) -> bool {
    match (a, b) {
        (Pattern::Exact(x), Pattern::Exact(y)) => x != y,
        (Pattern::Exact(x), Pattern::Regex(r)) | (Pattern::Regex(r), Pattern::Exact(x)) => {
            !matches_whole(r, x)
        }
        (Pattern::Regex(_), Pattern::Regex(_)) => false,
    }
}

fn paths_disjoint(a: &PathMatch, b: &PathMatch) -> bool {
    use PathMatch::*;
    match (a, b) {
        (Equal(x), Equal(y)) => x != y,
        (Prefix(x), Prefix(y)) => !x.starts_with(y.as_str()) && !y.starts_with(x.as_str()),
        (Equal(x), Prefix(p)) | (Prefix(p), Equal(x)) => !x.starts_with(p.as_str()),
        (Equal(x), Regex(r)) | (Regex(r), Equal(x)) => !matches_whole(r, x),
        (Prefix(_) | Regex(_), Regex(_)) | (Regex(_), Prefix(_)) => false,
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(v) => write!(f, "={v}"),
            Pattern::Regex(r) => write!(f, "~{r}"),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .headers
            .iter()
            .map(|h| format!("{}{}", h.name, h.value))
            .collect();
        match &self.path {
            Some(PathMatch::Prefix(p)) => parts.push(format!("path {p}*")),
            Some(PathMatch::Equal(p)) => parts.push(format!("path {p}")),
            Some(PathMatch::Regex(r)) => parts.push(format!("path ~{r}")),
            None => {}
        }
        if parts.is_empty() {
            f.write_str("all traffic")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            Mode::Steal => write!(f, "{}", self.filter),
            Mode::Mirror => write!(f, "mirror of {}", self.filter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: Pattern) -> Filter {
        Filter {
            headers: vec![HeaderMatch {
                name: name.into(),
                value,
            }],
            path: None,
        }
    }

    fn path(p: PathMatch) -> Filter {
        Filter {
            headers: Vec::new(),
            path: Some(p),
        }
    }

    fn exact(v: &str) -> Pattern {
        Pattern::Exact(v.into())
    }

    #[test]
    fn different_exact_headers_are_disjoint_and_the_same_overlap() {
        let one = header("x-dev", exact("one"));
        let two = header("x-dev", exact("two"));
        assert!(!one.overlap(&two));
        assert!(one.overlap(&one.clone()));
        // Another header does not prove anything: a request may carry both.
        assert!(one.overlap(&header("x-other", exact("two"))));
    }

    #[test]
    fn a_global_claim_overlaps_every_filter() {
        let global = Filter::default();
        assert!(global.overlap(&header("x-dev", exact("one"))));
        assert!(path(PathMatch::Prefix("/v2".into())).overlap(&global));
        assert!(Route::GLOBAL.conflicts_with(&Route::GLOBAL));
    }

    #[test]
    fn regexes_are_disjoint_from_exact_values_they_refuse() {
        let re = header("x-dev", Pattern::Regex("o.e".into()));
        assert!(re.overlap(&header("x-dev", exact("one"))));
        assert!(!re.overlap(&header("x-dev", exact("two"))));
        // The regex must match the whole value.
        assert!(!re.overlap(&header("x-dev", exact("ones"))));
        assert!(re.overlap(&header("x-dev", Pattern::Regex("t.*".into()))));
    }

    #[test]
    fn paths_are_disjoint_when_no_path_can_match_both() {
        let v1 = path(PathMatch::Prefix("/v1".into()));
        let v2 = path(PathMatch::Prefix("/v2".into()));
        assert!(!v1.overlap(&v2));
        assert!(v1.overlap(&path(PathMatch::Prefix("/v1/users".into()))));
        assert!(!v1.overlap(&path(PathMatch::Equal("/health".into()))));
        assert!(v1.overlap(&path(PathMatch::Equal("/v1/x".into()))));
        assert!(
            !path(PathMatch::Regex("/a/[0-9]+".into()))
                .overlap(&path(PathMatch::Equal("/a/b".into())))
        );
    }

    #[test]
    fn mirrors_conflict_with_nothing() {
        let mirror = Route {
            mode: Mode::Mirror,
            filter: Filter::default(),
        };
        assert!(!mirror.conflicts_with(&Route::GLOBAL));
        assert!(!Route::GLOBAL.conflicts_with(&mirror));
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert!(header("x dev", exact("a")).validate().is_err());
        assert!(
            header("x-dev", Pattern::Regex("(".into()))
                .validate()
                .is_err()
        );
        assert!(path(PathMatch::Prefix("v2".into())).validate().is_err());
        assert!(
            header("x-dev", exact("any value at all"))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn routes_read_as_their_tests() {
        let mut f = header("x-dev", exact("one"));
        f.path = Some(PathMatch::Prefix("/v2".into()));
        assert_eq!(f.to_string(), "x-dev=one, path /v2*");
        assert_eq!(Route::GLOBAL.to_string(), "all traffic");
    }
}
