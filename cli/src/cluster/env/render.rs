//! An environment written out for the tools that read it back.
//!
//! Each syntax writes what its reader gives back unchanged, and refuses what the reader
//! cannot hold (naming the key and a syntax that can), rather than write a file that loads a
//! different value:
//! - `docker`: `KEY=VALUE` lines for `docker run --env-file`, which takes the value verbatim
//!   up to the end of the line: no quoting exists, so no value can span lines.
//! - `compose`: the `.env` syntax of Docker Compose v2 (compose-go's dotenv parser). Values
//!   are single-quoted, which Compose takes literally, unless they hold a quote, a backslash
//!   or a line break; those are double-quoted with `\\`, `\"`, `\$`, `\n` and `\r` escapes,
//!   and `\$` keeps Compose from interpolating.
//! - `sh`: `export KEY='VALUE'` lines for `source` in sh, bash or zsh; inside single quotes
//!   only the quote itself needs care (`'\''`), and line breaks are kept as they are.
//! - `json`: one object, keys sorted.

use std::fmt;

use super::{Env, EnvError};

/// The syntax of an env file.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum EnvSyntax {
    /// `KEY=VALUE` lines, as `docker run --env-file` reads them.
    #[default]
    Docker,
    /// The `.env` syntax of Docker Compose.
    Compose,
    /// `export KEY='VALUE'` lines for a POSIX shell's `source`.
    Sh,
    /// One JSON object.
    Json,
}

impl fmt::Display for EnvSyntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnvSyntax::Docker => "docker",
            EnvSyntax::Compose => "compose",
            EnvSyntax::Sh => "sh",
            EnvSyntax::Json => "json",
        })
    }
}

/// Docker reads an env file with Go's default line scanner, which fails on a line (newline
/// included) longer than 64 KiB.
const DOCKER_MAX_LINE: usize = 64 * 1024;

pub(crate) fn render(env: &Env, syntax: EnvSyntax) -> Result<String, EnvError> {
    match syntax {
        EnvSyntax::Docker => docker(env),
        EnvSyntax::Compose => compose(env),
        EnvSyntax::Sh => sh(env),
        EnvSyntax::Json => {
            let mut text = serde_json::to_string_pretty(&env.vars).map_err(EnvError::Json)?;
            text.push('\n');
            Ok(text)
        }
    }
}

fn refuse(key: &str, syntax: EnvSyntax, reason: &str, instead: &'static str) -> EnvError {
    EnvError::Unrepresentable {
        key: key.to_string(),
        syntax,
        reason: reason.to_string(),
        instead,
    }
}

fn docker(env: &Env) -> Result<String, EnvError> {
    let refuse = |key: &str, reason: &str| refuse(key, EnvSyntax::Docker, reason, "json or sh");
    let mut out = String::new();
    for (key, value) in env.iter() {
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '=') {
            return Err(refuse(key, "the name has a space, a line break or `=`"));
        }
        if key.starts_with('#') {
            return Err(refuse(key, "a line starting with `#` is a comment"));
        }
        if value.contains('\n') {
            return Err(refuse(key, "the value spans lines"));
        }
        // The line scanner drops a carriage return before the newline.
        if value.ends_with('\r') {
            return Err(refuse(key, "the value ends with a carriage return"));
        }
        if key.len() + 1 + value.len() + 1 > DOCKER_MAX_LINE {
            return Err(refuse(key, "the line is longer than docker reads (64 KiB)"));
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('\n');
    }
    Ok(out)
}

/// The names Compose's parser accepts: letters, digits, `_`, `.`, `-`, `[` and `]`.
fn compose_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']'))
}

fn compose(env: &Env) -> Result<String, EnvError> {
    let mut out = String::new();
    for (key, value) in env.iter() {
        if !compose_key(key) {
            return Err(refuse(
                key,
                EnvSyntax::Compose,
                "Compose reads only letters, digits, `_`, `.`, `-`, `[` and `]` in a name",
                "docker or json",
            ));
        }
        out.push_str(key);
        out.push('=');
        if value.contains(['\'', '\\', '\n', '\r']) {
            out.push('"');
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    // `\$` reaches Compose's interpolation as `$$`, a literal dollar.
                    '$' => out.push_str("\\$"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('"');
        } else {
            // Single quotes: no escapes, no interpolation, nothing to change.
            out.push('\'');
            out.push_str(value);
            out.push('\'');
        }
        out.push('\n');
    }
    Ok(out)
}

/// A name `export` accepts in every POSIX shell.
fn shell_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn sh(env: &Env) -> Result<String, EnvError> {
    let mut out = String::new();
    for (key, value) in env.iter() {
        if !shell_name(key) {
            return Err(refuse(
                key,
                EnvSyntax::Sh,
                "a shell variable name is letters, digits and `_`, not starting with a digit",
                "docker or json",
            ));
        }
        out.push_str("export ");
        out.push_str(key);
        out.push_str("='");
        // Close the quote, add an escaped quote, reopen.
        out.push_str(&value.replace('\'', "'\\''"));
        out.push_str("'\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::{Env, EnvError, EnvSyntax};

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Values that trip naive writers. None spans lines, so every syntax can hold them.
    const AWKWARD: &[(&str, &str)] = &[
        ("BACKSLASH", r"C:\temp\new"),
        ("DOLLAR", "$HOME ${USER} $(X) $$ 5$"),
        ("DOUBLE", r#"say "hi""#),
        ("EMPTY", ""),
        ("EQUALS", "a=b==c"),
        ("HASH", "#not a comment # nor this"),
        ("SINGLE", "it's 'quoted'"),
        ("SPACES", "  padded  value "),
        ("TAB", "a\tb"),
        ("TRAILING_BACKSLASH", "ends\\"),
        ("UNICODE", "grüße ✓"),
    ];

    #[test]
    fn docker_writes_values_verbatim() {
        let text = env(AWKWARD).render(EnvSyntax::Docker).expect("docker");
        let want: String = AWKWARD.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        assert_eq!(text, want);
    }

    #[test]
    fn docker_refuses_what_its_reader_would_change() {
        for (key, value, reason) in [
            ("CERT", "line1\nline2", "the value spans lines"),
            ("CR", "dos\r", "the value ends with a carriage return"),
            ("A B", "x", "the name has a space, a line break or `=`"),
            ("#X", "x", "a line starting with `#` is a comment"),
        ] {
            let err = env(&[(key, value)])
                .render(EnvSyntax::Docker)
                .expect_err("unrepresentable");
            assert_eq!(
                err.to_string(),
                format!("cannot write {key} in docker syntax: {reason}; use the json or sh syntax")
            );
        }
        let long = "x".repeat(64 * 1024);
        let err = env(&[("BIG", &long)]).render(EnvSyntax::Docker);
        assert!(matches!(err, Err(EnvError::Unrepresentable { .. })));
        // A carriage return inside a value survives the scanner.
        assert!(env(&[("CR", "a\rb")]).render(EnvSyntax::Docker).is_ok());
    }

    /// Compose v2's reading of one quoted value (compose-go's dotenv parser): the closing
    /// quote is the first one not after a backslash; in double quotes, backslash escapes,
    /// then `$$` as a literal dollar.
    fn compose_value(quoted: &str) -> String {
        let mut chars = quoted.chars();
        let quote = chars.next().expect("a quote");
        let mut raw = String::new();
        let mut escaped = false;
        for c in chars.by_ref() {
            if c == quote && !escaped {
                break;
            }
            if c == '\\' && !escaped {
                escaped = true;
                continue;
            }
            if escaped && c != quote {
                raw.push('\\');
            }
            escaped = false;
            raw.push(c);
        }
        assert_eq!(chars.as_str(), "", "nothing after the closing quote");
        if quote == '\'' {
            return raw;
        }
        let mut out = String::new();
        let mut it = raw.chars().peekable();
        while let Some(c) = it.next() {
            match (c, it.peek().copied()) {
                ('\\', Some(n @ ('n' | 'r' | '\\' | '"' | '$'))) => {
                    it.next();
                    out.push_str(match n {
                        'n' => "\n",
                        'r' => "\r",
                        '\\' => "\\",
                        '"' => "\"",
                        _ => "$$",
                    });
                }
                (c, _) => out.push(c),
            }
        }
        // Interpolation: only `$$` may remain, as every dollar was escaped.
        out.replace("$$", "$")
    }

    #[test]
    fn compose_quotes_so_that_values_round_trip() {
        let mut pairs = AWKWARD.to_vec();
        pairs.extend([
            ("MULTI", "line1\nline2\r\n"),
            ("MIXED", "it's $5 \\n not a newline\\"),
            ("dotted.name-1", "x"),
        ]);
        let text = env(&pairs).render(EnvSyntax::Compose).expect("compose");
        let mut lines = text.lines();
        for (key, value) in env(&pairs).iter() {
            let line = lines.next().expect("a line per variable");
            let quoted = line
                .strip_prefix(key)
                .and_then(|l| l.strip_prefix('='))
                .expect("KEY=");
            assert_eq!(compose_value(quoted), value, "{key} from {line}");
        }
        assert_eq!(
            lines.next(),
            None,
            "one line per variable, newlines escaped"
        );
        assert!(text.contains("EMPTY=''\n"));
        assert!(text.contains("DOLLAR='$HOME ${USER} $(X) $$ 5$'\n"));
        assert!(text.contains(r#"SINGLE="it's 'quoted'""#));
        assert!(text.contains(r#"MIXED="it's \$5 \\n not a newline\\""#));
        let err = env(&[("A B", "x")]).render(EnvSyntax::Compose);
        assert!(matches!(err, Err(EnvError::Unrepresentable { .. })));
    }

    #[test]
    fn sh_round_trips_through_a_real_shell() {
        let mut pairs = AWKWARD.to_vec();
        pairs.push(("MULTI", "line1\nline2\n"));
        let vars = env(&pairs);
        let text = vars.render(EnvSyntax::Sh).expect("sh");
        assert!(text.contains("export SINGLE='it'\\''s '\\''quoted'\\'''\n"));
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = dir.path().join("env.sh");
        std::fs::write(&file, &text).expect("written");
        // Print each variable NUL-terminated, in name order.
        let names: Vec<&str> = vars.iter().map(|(k, _)| k).collect();
        let script = names
            .iter()
            .map(|n| format!("printf '%s\\0' \"${n}\""))
            .collect::<Vec<_>>()
            .join("; ");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(". \"$0\"; {script}"))
            .arg(&file)
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).expect("text");
        let got: Vec<&str> = got.split_terminator('\0').collect();
        let want: Vec<&str> = vars.iter().map(|(_, v)| v).collect();
        assert_eq!(got, want);

        let err = env(&[("a.b", "x")])
            .render(EnvSyntax::Sh)
            .expect_err("not a name");
        assert_eq!(
            err.to_string(),
            "cannot write a.b in sh syntax: a shell variable name is letters, digits and `_`, \
             not starting with a digit; use the docker or json syntax"
        );
        assert!(env(&[("1X", "x")]).render(EnvSyntax::Sh).is_err());
    }

    #[test]
    fn json_is_one_sorted_object() {
        let mut pairs = AWKWARD.to_vec();
        pairs.push(("MULTI", "line1\nline2"));
        let vars = env(&pairs);
        let text = vars.render(EnvSyntax::Json).expect("json");
        assert!(text.starts_with("{\n  \"BACKSLASH\": "), "{text}");
        assert!(text.ends_with("}\n"));
        let back: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).expect("json");
        let back: Vec<(&str, &str)> = back
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("<not a string>")))
            .collect();
        assert_eq!(back, vars.iter().collect::<Vec<_>>());
        assert_eq!(
            Env::default().render(EnvSyntax::Json).expect("json"),
            "{}\n"
        );
    }

    #[test]
    fn syntaxes_have_their_cli_names() {
        let names: Vec<String> = [
            EnvSyntax::Docker,
            EnvSyntax::Compose,
            EnvSyntax::Sh,
            EnvSyntax::Json,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names, ["docker", "compose", "sh", "json"]);
        assert_eq!(EnvSyntax::default(), EnvSyntax::Docker);
        assert_eq!(
            <EnvSyntax as clap::ValueEnum>::from_str("compose", true),
            Ok(EnvSyntax::Compose)
        );
    }
}
