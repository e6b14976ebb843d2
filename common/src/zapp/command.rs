//! Splitting a ZApp `command` string into arguments the way Zoe's Docker
//! back-end did (docker-py applies Python's `shlex.split`): POSIX shell
//! words, quotes and backslashes, no expansion. A container runtime takes an
//! argument vector; a string that does not split (an unclosed quote) is a
//! validation error at submit time.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("unclosed {0} quote")]
    Unclosed(&'static str),
    #[error("a trailing backslash escapes nothing")]
    TrailingBackslash,
}

pub fn split_command(s: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err(SplitError::Unclosed("single")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        // Inside double quotes a backslash escapes only these.
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => word.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(SplitError::Unclosed("double")),
                        },
                        Some(ch) => word.push(ch),
                        None => return Err(SplitError::Unclosed("double")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(ch) => word.push(ch),
                    None => return Err(SplitError::TrailingBackslash),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_shlex() {
        let cases: &[(&str, &[&str])] = &[
            ("echo hi", &["echo", "hi"]),
            ("  a   b  ", &["a", "b"]),
            ("/bin/sh -c 'echo \"$X\"; echo done'", &["/bin/sh", "-c", "echo \"$X\"; echo done"]),
            (r#"a "b c" d"#, &["a", "b c", "d"]),
            (r#""x\"y" 'it'\''s'"#, &["x\"y", "it's"]),
            (r"a\ b", &["a b"]),
            ("''", &[""]),
            (r#""a\nb""#, &["a\\nb"]),
        ];
        for (input, want) in cases {
            assert_eq!(split_command(input).unwrap(), *want, "{input}");
        }
    }

    #[test]
    fn rejects_unbalanced() {
        assert_eq!(split_command("echo 'oops"), Err(SplitError::Unclosed("single")));
        assert_eq!(split_command("echo \"oops"), Err(SplitError::Unclosed("double")));
        assert_eq!(split_command("echo \\"), Err(SplitError::TrailingBackslash));
    }
}
