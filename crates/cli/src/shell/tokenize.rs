//! Splitting a shell line into words, the way a POSIX shell would for the
//! plain cases: whitespace separates words; `'…'` keeps everything
//! literally; `"…"` keeps everything but lets `\` escape `"`, `\`, `$` and
//! `` ` ``; outside quotes `\` escapes the next character. A line whose
//! first word starts with `#` is a comment. No expansion of any kind.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizeError {
    UnclosedQuote(char),
    TrailingBackslash,
}

impl fmt::Display for TokenizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizeError::UnclosedQuote(q) => {
                write!(f, "unclosed {q} quote; close it or escape it with \\{q}")
            }
            TokenizeError::TrailingBackslash => {
                write!(f, "the line ends with a lone \\; escape it as \\\\")
            }
        }
    }
}

impl std::error::Error for TokenizeError {}

/// Split `line` into words.
pub fn tokenize(line: &str) -> Result<Vec<String>, TokenizeError> {
    let mut words = Vec::new();
    // The word being built; `None` between words (so `''` still makes an
    // empty word).
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '#' if word.is_none() && words.is_empty() => return Ok(Vec::new()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(TokenizeError::UnclosedQuote('\'')),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => w.push(e),
                            Some(other) => {
                                w.push('\\');
                                w.push(other);
                            }
                            None => return Err(TokenizeError::UnclosedQuote('"')),
                        },
                        Some(c) => w.push(c),
                        None => return Err(TokenizeError::UnclosedQuote('"')),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(e) => word.get_or_insert_with(String::new).push(e),
                None => return Err(TokenizeError::TrailingBackslash),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        tokenize(line).unwrap()
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(
            words("  task  ubuntu:latest\t-cpu_cores 5 "),
            ["task", "ubuntu:latest", "-cpu_cores", "5"]
        );
        assert!(words("").is_empty());
        assert!(words("   ").is_empty());
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(
            words(r#"run -- sh -c "echo hi; exit 3""#),
            ["run", "--", "sh", "-c", "echo hi; exit 3"]
        );
        assert_eq!(
            words("run -- echo 'a \"b\" c'"),
            ["run", "--", "echo", "a \"b\" c"]
        );
        assert_eq!(words(r#"a"b c"'d e'f"#), ["ab cd ef"]);
        assert_eq!(words("x '' \"\""), ["x", "", ""]);
    }

    #[test]
    fn backslashes_escape() {
        assert_eq!(words(r"echo a\ b \'q\'"), ["echo", "a b", "'q'"]);
        assert_eq!(words(r#"echo "a\"b\\c\n""#), ["echo", r#"a"b\c\n"#]);
        assert_eq!(words(r"echo 'no\escape'"), ["echo", r"no\escape"]);
    }

    #[test]
    fn comments_only_at_the_start() {
        assert!(words("# a comment").is_empty());
        assert!(words("   #x").is_empty());
        assert_eq!(words("echo a#b #c"), ["echo", "a#b", "#c"]);
    }

    #[test]
    fn unclosed_quotes_are_errors() {
        assert_eq!(
            tokenize("echo 'abc"),
            Err(TokenizeError::UnclosedQuote('\''))
        );
        assert_eq!(
            tokenize("echo \"abc"),
            Err(TokenizeError::UnclosedQuote('"'))
        );
        assert_eq!(
            tokenize("echo \"abc\\"),
            Err(TokenizeError::UnclosedQuote('"'))
        );
        assert_eq!(
            tokenize("echo abc\\"),
            Err(TokenizeError::TrailingBackslash)
        );
        assert!(
            tokenize("echo 'abc")
                .unwrap_err()
                .to_string()
                .contains("unclosed ' quote")
        );
    }
}
