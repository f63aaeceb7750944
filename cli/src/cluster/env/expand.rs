//! Kubernetes' `$(VAR)` references in a literal `env[].value`.
//!
//! The rules are those of the kubelet's expansion package (a fork of Go's `os.Expand` with
//! parentheses): `$(NAME)` becomes NAME's value when NAME is known and stays as written when
//! it is not; `$$` is one literal `$`; a `$(` that is never closed, a `$` before any other
//! character and a `$` at the very end stay as they are. Nothing is expanded recursively: a
//! value brought in by a reference is not scanned again.

/// `input` with its references replaced by what `lookup` knows.
pub(crate) fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    // The parser's three special bytes (`$`, `(`, `)`) are ASCII, so every index below is a
    // char boundary.
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let Some(next) = after.chars().next() else {
            // A `$` that ends the input is copied as is.
            out.push('$');
            return out;
        };
        match next {
            '$' => {
                out.push('$');
                rest = &after[1..];
            }
            '(' => match after[1..].find(')') {
                Some(close) => {
                    let name = &after[1..1 + close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[1 + close + 1..];
                }
                None => {
                    // An unclosed reference: the `$(` is literal and scanning goes on after
                    // it, so a later `$$` is still an escape.
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            other => {
                // Not an expression: the `$` and the character after it are kept. (The
                // kubelet copies one byte here, which garbles a multi-byte character; this
                // keeps the character whole.)
                out.push('$');
                out.push(other);
                rest = &after[other.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn known(name: &str) -> Option<&'static str> {
        match name {
            "A" => Some("x"),
            "EMPTY" => Some(""),
            "SELF" => Some("$(A)"),
            _ => None,
        }
    }

    /// Cases from the kubelet's own expansion tests, written out again.
    #[test]
    fn follows_the_kubelet_rules() {
        let cases = [
            ("", ""),
            ("plain", "plain"),
            ("$(A)", "x"),
            ("pre-$(A)-post", "pre-x-post"),
            ("$(A)$(A)", "xx"),
            ("$(EMPTY)", ""),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(UNKNOWN)-$(A)", "$(UNKNOWN)-x"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$x"),
            ("$$$$(A)", "$$(A)"),
            ("$$", "$"),
            ("$", "$"),
            ("a$", "a$"),
            ("$A", "$A"),
            ("${A}", "${A}"),
            ("$(A", "$(A"),
            ("$(A$$", "$(A$"),
            ("$()", "$()"),
            ("$(A$(A))", "$(A$(A))"),
            ("$(SELF)", "$(A)"),
            ("100$é", "100$é"),
            ("é$(A)é", "éxé"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, known), want, "expanding {input:?}");
        }
    }
}
