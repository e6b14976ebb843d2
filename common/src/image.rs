//! Container image references, parsed with the grammar of the distribution
//! project (`[domain/]path[:tag][@digest]`), so that a reference is judged well
//! formed the same way a registry or containerd would judge it.

use std::fmt;

/// Registry used when a reference names none, as Docker does.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Tag used when a reference names neither tag nor digest, as Docker does.
pub const DEFAULT_TAG: &str = "latest";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (with port), if the reference names one.
    pub domain: Option<String>,
    /// Repository path, e.g. `library/busybox` or `team/app`.
    pub path: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImageRefError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ImageRefError> {
    Err(ImageRefError(msg.into()))
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        if s.is_empty() {
            return err("must not be empty");
        }
        if s.len() > 255 + 128 + 72 {
            return err("is too long");
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                check_digest(d)?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/', so that a
        // registry port (`host:5000/x`) is not taken for a tag.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                check_tag(t)?;
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return err("has no repository name");
        }
        if name.len() > 255 {
            return err("repository name must be at most 255 characters");
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                check_domain(first)?;
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        for component in path.split('/') {
            check_path_component(component)?;
        }
        Ok(ImageRef { domain, path: path.to_string(), tag, digest })
    }

    /// True when the reference names neither a tag nor a digest, so `:latest` is implied.
    pub fn tag_implied(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// The fully qualified form containerd and registries use:
    /// `docker.io/library/busybox:latest`.
    pub fn canonical(&self) -> String {
        let domain = self.domain.as_deref().unwrap_or(DEFAULT_DOMAIN);
        let path = if self.domain.is_none() && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        };
        let mut out = format!("{domain}/{path}");
        match (&self.tag, &self.digest) {
            (Some(t), _) => {
                out.push(':');
                out.push_str(t);
            }
            (None, None) => {
                out.push(':');
                out.push_str(DEFAULT_TAG);
            }
            (None, Some(_)) => {}
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d);
        }
        out
    }

    /// Registry host to contact, defaulting to Docker Hub.
    pub fn registry(&self) -> &str {
        self.domain.as_deref().unwrap_or(DEFAULT_DOMAIN)
    }

    /// Whether a cluster's registry allow-list lets this image be named:
    /// any registry when the list is empty, else only those listed (host,
    /// with its port if it has one, compared as written).
    pub fn registry_allowed(&self, allowed: &[String]) -> bool {
        allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(self.registry()))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.domain {
            write!(f, "{d}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn check_domain(d: &str) -> Result<(), ImageRefError> {
    let (host, port) = if let Some(stripped) = d.strip_prefix('[') {
        // IPv6 literal: [::1]:5000
        let Some((inside, after)) = stripped.split_once(']') else {
            return err(format!("registry `{d}` has an unclosed `[`"));
        };
        if inside.is_empty() || !inside.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return err(format!("registry `{d}` is not a valid IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if after.is_empty() => (None, None),
            None => return err(format!("registry `{d}` is malformed")),
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(host) = host {
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return err(format!("registry host `{host}` is not a valid host name"));
            }
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || port.parse::<u16>().is_err())
    {
        return err(format!("registry port `{port}` is not a valid port"));
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn check_path_component(c: &str) -> Result<(), ImageRefError> {
    let bad = || {
        err(format!(
            "repository path component `{c}` must be lowercase letters and digits, separated by `.`, `_`, `__` or dashes"
        ))
    };
    if c.is_empty() {
        return err("repository path has an empty component");
    }
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__`, or any number of `-`.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn check_tag(t: &str) -> Result<(), ImageRefError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = t.chars();
    match chars.next() {
        Some(c) if word(c) => {}
        _ => return err(format!("tag `{t}` must start with a letter, digit or `_`")),
    }
    if t.len() > 128 {
        return err("tag must be at most 128 characters");
    }
    if !chars.all(|c| word(c) || c == '.' || c == '-') {
        return err(format!("tag `{t}` may only contain letters, digits, `_`, `.` and `-`"));
    }
    Ok(())
}

fn check_digest(d: &str) -> Result<(), ImageRefError> {
    let Some((alg, hex)) = d.split_once(':') else {
        return err(format!("digest `{d}` must be `algorithm:hex`"));
    };
    let alg_ok = !alg.is_empty()
        && alg
            .split(['+', '.', '_', '-'])
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    if !alg_ok {
        return err(format!("digest algorithm `{alg}` is malformed"));
    }
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if !hex_ok {
        return err("digest must have at least 32 lowercase hex digits");
    }
    if alg == "sha256" && hex.len() != 64 {
        return err("a sha256 digest has exactly 64 hex digits");
    }
    if alg == "sha512" && hex.len() != 128 {
        return err("a sha512 digest has exactly 128 hex digits");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_allow_list_is_by_host_and_port() {
        let allowed = vec!["registry.example:5000".to_string(), "zoe.local".to_string()];
        let ok = |s: &str| ImageRef::parse(s).unwrap().registry_allowed(&allowed);
        assert!(ok("registry.example:5000/spark:3.5") && ok("zoe.local/busybox:1"));
        assert!(!ok("registry.example/spark:3.5"), "another port is another registry");
        assert!(!ok("busybox"), "Docker Hub is a registry like any other");
        assert!(ImageRef::parse("busybox").unwrap().registry_allowed(&[]), "an empty list allows any");
    }

    #[test]
    fn accepts_common_forms() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("team/app:v1", "docker.io/team/app:v1"),
            ("localhost/zoe/busybox:test", "localhost/zoe/busybox:test"),
            ("127.0.0.1:5000/zoe/busybox:1", "127.0.0.1:5000/zoe/busybox:1"),
            ("registry.local/demo/head:1.0", "registry.local/demo/head:1.0"),
            ("[::1]:5000/a/b:c", "[::1]:5000/a/b:c"),
            ("a__b/c-d---e.f_g:tag", "docker.io/a__b/c-d---e.f_g:tag"),
        ];
        for (input, canonical) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.canonical(), canonical, "{input}");
            assert_eq!(r.to_string(), input);
        }
        let d = format!("busybox@sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&d).unwrap();
        assert!(!r.tag_implied());
        assert_eq!(r.canonical(), format!("docker.io/library/{}", d));
        assert!(ImageRef::parse("busybox").unwrap().tag_implied());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "/busybox",
            "busybox/",
            "a//b",
            "a..b",
            "-a",
            "host:99999/a",
            "busybox@sha256:abc",
            "busybox@md5",
            "bad host.com/a",
            "a b",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
