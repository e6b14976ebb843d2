//! Zoe's environment templates: Python `str.format` strings with a fixed set
//! of keys. Parsing is separate from rendering so that an unknown key is a
//! validation error at submit time, never a failure when a container starts.

use std::fmt;

/// One placeholder a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    UserName,
    ExecutionId,
    ExecutionName,
    DeploymentName,
    /// `{dns_name#self}`: the instance the variable is rendered for.
    DnsNameSelf,
    /// `{dns_name#<instance>}`: another instance of the same execution.
    DnsName(String),
    /// `{ip_port}` in a port's `url_template`.
    IpPort,
    /// `{proxy_path}` in a port's `url_template`.
    ProxyPath,
}

impl Placeholder {
    fn from_key(key: &str) -> Option<Placeholder> {
        Some(match key {
            "user_name" => Placeholder::UserName,
            "execution_id" => Placeholder::ExecutionId,
            "execution_name" => Placeholder::ExecutionName,
            "deployment_name" => Placeholder::DeploymentName,
            "dns_name#self" => Placeholder::DnsNameSelf,
            "ip_port" => Placeholder::IpPort,
            "proxy_path" => Placeholder::ProxyPath,
            _ => match key.strip_prefix("dns_name#") {
                Some(inst) if !inst.is_empty() => Placeholder::DnsName(inst.to_string()),
                _ => return None,
            },
        })
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placeholder::UserName => f.write_str("{user_name}"),
            Placeholder::ExecutionId => f.write_str("{execution_id}"),
            Placeholder::ExecutionName => f.write_str("{execution_name}"),
            Placeholder::DeploymentName => f.write_str("{deployment_name}"),
            Placeholder::DnsNameSelf => f.write_str("{dns_name#self}"),
            Placeholder::DnsName(i) => write!(f, "{{dns_name#{i}}}"),
            Placeholder::IpPort => f.write_str("{ip_port}"),
            Placeholder::ProxyPath => f.write_str("{proxy_path}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Placeholder),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{0}}}`")]
    Unknown(String),
    #[error("a `{{` at byte {0} is never closed (write `{{{{` for a literal brace)")]
    Unclosed(usize),
    #[error("a lone `}}` at byte {0} (write `}}}}` for a literal brace)")]
    LoneClose(usize),
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < s.len() {
            let c = bytes[i];
            if c == b'{' {
                if bytes.get(i + 1) == Some(&b'{') {
                    text.push('{');
                    i += 2;
                    continue;
                }
                let Some(len) = s[i + 1..].find('}') else {
                    return Err(TemplateError::Unclosed(i));
                };
                let key = &s[i + 1..i + 1 + len];
                let ph = Placeholder::from_key(key).ok_or_else(|| TemplateError::Unknown(key.to_string()))?;
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Var(ph));
                i += len + 2;
            } else if c == b'}' {
                if bytes.get(i + 1) == Some(&b'}') {
                    text.push('}');
                    i += 2;
                    continue;
                }
                return Err(TemplateError::LoneClose(i));
            } else {
                // Copy one UTF-8 character.
                let ch = s[i..].chars().next().expect("in bounds");
                text.push(ch);
                i += ch.len_utf8();
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template { pieces })
    }

    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Text(_) => None,
        })
    }

    /// Renders with `value` supplying each placeholder's text.
    pub fn render(&self, mut value: impl FnMut(&Placeholder) -> String) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => out.push_str(&value(v)),
            }
        }
        out
    }
}

/// What an environment template is rendered against.
#[derive(Debug, Clone)]
pub struct EnvContext<'a> {
    pub user_name: &'a str,
    pub execution_id: u64,
    pub execution_name: &'a str,
    pub deployment_name: &'a str,
    /// The instance the variable is for.
    pub instance: &'a str,
    /// The instance's port the service proxy serves `{proxy_path}` for
    /// (its group's first proxied TCP port).
    pub proxy_port: Option<u16>,
}

impl EnvContext<'_> {
    pub fn value(&self, p: &Placeholder) -> String {
        match p {
            Placeholder::UserName => self.user_name.to_string(),
            Placeholder::ExecutionId => self.execution_id.to_string(),
            Placeholder::ExecutionName => self.execution_name.to_string(),
            Placeholder::DeploymentName => self.deployment_name.to_string(),
            Placeholder::DnsNameSelf => dns_name(self.instance, self.execution_id),
            Placeholder::DnsName(i) => dns_name(i, self.execution_id),
            Placeholder::ProxyPath => match self.proxy_port {
                Some(port) => proxy_path(self.execution_id, self.instance, port),
                None => String::new(),
            },
            // Not valid in environment values; validation rejects it there.
            Placeholder::IpPort => String::new(),
        }
    }
}

/// The path the service proxy serves one port of one instance under (no
/// trailing slash): `/<execution-id>/<instance>/<port>`. A notebook told
/// it at start (Jupyter's `base_url`) builds its links under it.
pub fn proxy_path(execution_id: u64, instance: &str, port: u16) -> String {
    format!("/{execution_id}/{instance}/{port}")
}

/// The cluster-wide DNS name of an instance: `<instance>.<execution-id>.zoe`.
/// Containers of an execution also resolve the bare instance name.
pub fn dns_name(instance: &str, execution_id: u64) -> String {
    format!("{instance}.{execution_id}.zoe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let t = Template::parse("spark://{dns_name#master0}:7077 by {user_name} {{x}}").unwrap();
        let ctx = EnvContext {
            user_name: "ada",
            execution_id: 42,
            execution_name: "e",
            deployment_name: "prod",
            instance: "worker0",
            proxy_port: Some(8888),
        };
        assert_eq!(t.render(|p| ctx.value(p)), "spark://master0.42.zoe:7077 by ada {x}");
        let t = Template::parse("{dns_name#self}/{execution_id}/{execution_name}/{deployment_name}").unwrap();
        assert_eq!(t.render(|p| ctx.value(p)), "worker0.42.zoe/42/e/prod");
        assert_eq!(Template::parse("{proxy_path}/").unwrap().render(|p| ctx.value(p)), "/42/worker0/8888/");
        assert_eq!(Template::parse("héllo wörld").unwrap().render(|_| String::new()), "héllo wörld");
    }

    #[test]
    fn rejects_bad_templates() {
        assert_eq!(Template::parse("{nope}"), Err(TemplateError::Unknown("nope".into())));
        assert_eq!(Template::parse("{dns_name#}"), Err(TemplateError::Unknown("dns_name#".into())));
        assert_eq!(Template::parse("{user_name!r}"), Err(TemplateError::Unknown("user_name!r".into())));
        assert_eq!(Template::parse("abc {user_name"), Err(TemplateError::Unclosed(4)));
        assert_eq!(Template::parse("a}b"), Err(TemplateError::LoneClose(1)));
    }
}
