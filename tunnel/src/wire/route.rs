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
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Matching traffic goes to the laptop instead of the app.
    #[default]
    Steal,
    /// The app answers everything; the laptop gets a copy and its answers are dropped.
    Mirror,
}

/// A value test: the whole value equals `value`, or (with `regex`) matches it as a regex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pattern {
    pub value: String,
    pub regex: bool,
}

impl Pattern {
    pub fn exact(value: impl Into<String>) -> Pattern {
        Pattern {
            value: value.into(),
            regex: false,
        }
    }

    pub fn regex(value: impl Into<String>) -> Pattern {
        Pattern {
            value: value.into(),
            regex: true,
        }
    }
}

/// A test of one request header (names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lower case.
    pub name: String,
    pub value: Pattern,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    Prefix,
    Equal,
    /// Must match the whole path.
    Regex,
}

/// A test of the request's path (without the query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMatch {
    pub kind: PathKind,
    pub value: String,
}

impl PathMatch {
    pub fn prefix(value: impl Into<String>) -> PathMatch {
        PathMatch {
            kind: PathKind::Prefix,
            value: value.into(),
        }
    }

    pub fn equal(value: impl Into<String>) -> PathMatch {
        PathMatch {
            kind: PathKind::Equal,
            value: value.into(),
        }
    }

    pub fn regex(value: impl Into<String>) -> PathMatch {
        PathMatch {
            kind: PathKind::Regex,
            value: value.into(),
        }
    }
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
            if h.value.regex {
                whole(&h.value.value)?;
            }
        }
        match &self.path {
            Some(p) if p.kind == PathKind::Regex => {
                whole(&p.value)?;
            }
            Some(p) if !p.value.starts_with('/') => {
                return Err(RouteError::Path {
                    path: p.value.clone(),
                });
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
    match (a.regex, b.regex) {
        (false, false) => a.value != b.value,
        (false, true) => !matches_whole(&b.value, &a.value),
        (true, false) => !matches_whole(&a.value, &b.value),
        (true, true) => false,
    }
}

fn paths_disjoint(a: &PathMatch, b: &PathMatch) -> bool {
    use PathKind::*;
    let (x, y) = (a.value.as_str(), b.value.as_str());
    match (a.kind, b.kind) {
        (Equal, Equal) => x != y,
        (Prefix, Prefix) => !x.starts_with(y) && !y.starts_with(x),
        (Equal, Prefix) => !x.starts_with(y),
        (Prefix, Equal) => !y.starts_with(x),
        (Equal, Regex) => !matches_whole(y, x),
        (Regex, Equal) => !matches_whole(x, y),
        (Prefix | Regex, Regex) | (Regex, Prefix) => false,
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.regex { "~" } else { "=" };
        write!(f, "{op}{}", self.value)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .headers
            .iter()
            .map(|h| format!("{}{}", h.name, h.value))
            .collect();
        if let Some(p) = &self.path {
            parts.push(match p.kind {
                PathKind::Prefix => format!("path {}*", p.value),
                PathKind::Equal => format!("path {}", p.value),
                PathKind::Regex => format!("path ~{}", p.value),
            });
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
        Pattern::exact(v)
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
        assert!(path(PathMatch::prefix("/v2")).overlap(&global));
        assert!(Route::GLOBAL.conflicts_with(&Route::GLOBAL));
    }

    #[test]
    fn regexes_are_disjoint_from_exact_values_they_refuse() {
        let re = header("x-dev", Pattern::regex("o.e"));
        assert!(re.overlap(&header("x-dev", exact("one"))));
        assert!(!re.overlap(&header("x-dev", exact("two"))));
        // The regex must match the whole value.
        assert!(!re.overlap(&header("x-dev", exact("ones"))));
        assert!(re.overlap(&header("x-dev", Pattern::regex("t.*"))));
    }

    #[test]
    fn paths_are_disjoint_when_no_path_can_match_both() {
        let v1 = path(PathMatch::prefix("/v1"));
        let v2 = path(PathMatch::prefix("/v2"));
        assert!(!v1.overlap(&v2));
        assert!(v1.overlap(&path(PathMatch::prefix("/v1/users"))));
        assert!(!v1.overlap(&path(PathMatch::equal("/health"))));
        assert!(v1.overlap(&path(PathMatch::equal("/v1/x"))));
        assert!(!path(PathMatch::regex("/a/[0-9]+")).overlap(&path(PathMatch::equal("/a/b"))));
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
        assert!(header("x-dev", Pattern::regex("(")).validate().is_err());
        assert!(path(PathMatch::prefix("v2")).validate().is_err());
        assert!(
            header("x-dev", exact("any value at all"))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn routes_read_as_their_tests() {
        let mut f = header("x-dev", exact("one"));
        f.path = Some(PathMatch::prefix("/v2"));
        assert_eq!(f.to_string(), "x-dev=one, path /v2*");
        assert_eq!(Route::GLOBAL.to_string(), "all traffic");
    }
}
