//! JAAS login configuration files, as Java reads them (`-Djava.security.auth.login.config`):
//! named sections, each a list of login modules with a flag and `key=value` options.
//!
//! ```text
//! Server {
//!     org.apache.zookeeper.server.auth.DigestLoginModule required
//!     user_super="super_secret"
//!     user_alice="alice_secret";
//! };
//! ```
//!
//! Comments are `//` to the end of a line and `/* ... */`, as Java's parser takes them.

use std::collections::BTreeMap;

/// One login module of a section, with its options in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginModule {
    pub class: String,
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

/// A whole JAAS file: its sections by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jaas {
    pub sections: BTreeMap<String, Vec<LoginModule>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Punct(char),
}

impl Jaas {
    /// Parses a JAAS file's text; the error names the line and what was expected.
    pub fn parse(text: &str) -> Result<Jaas, String> {
        let tokens = tokenize(text)?;
        let mut p = Parser { tokens, at: 0 };
        let mut jaas = Jaas::default();
        while p.peek().is_some() {
            let (name, _) = p.word("a section name")?;
            p.punct('{')?;
            let mut modules = Vec::new();
            while !p.next_is('}') {
                modules.push(p.module()?);
            }
            p.punct('}')?;
            p.punct(';')?;
            jaas.sections.insert(name, modules);
        }
        Ok(jaas)
    }

    pub fn section(&self, name: &str) -> Option<&[LoginModule]> {
        self.sections.get(name).map(|m| m.as_slice())
    }
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(1, |(_, l)| *l)
    }

    fn next_is(&self, c: char) -> bool {
        self.peek() == Some(&Token::Punct(c))
    }

    fn punct(&mut self, c: char) -> Result<(), String> {
        if self.next_is(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("line {}: expected '{c}'", self.line()))
        }
    }

    fn word(&mut self, what: &str) -> Result<(String, usize), String> {
        match self.tokens.get(self.at) {
            Some((Token::Word(w), line)) => {
                self.at += 1;
                Ok((w.clone(), *line))
            }
            _ => Err(format!("line {}: expected {what}", self.line())),
        }
    }

    fn value(&mut self) -> Result<String, String> {
        match self.tokens.get(self.at) {
            Some((Token::Word(w) | Token::Quoted(w), _)) => {
                self.at += 1;
                Ok(w.clone())
            }
            _ => Err(format!("line {}: expected a value", self.line())),
        }
    }

    fn module(&mut self) -> Result<LoginModule, String> {
        let (class, _) = self.word("a login module class")?;
        let (flag, line) = self.word("a flag (required, requisite, sufficient, optional)")?;
        if !["required", "requisite", "sufficient", "optional"]
            .contains(&flag.to_lowercase().as_str())
        {
            return Err(format!("line {line}: {flag:?} is not a login module flag"));
        }
        let mut options = BTreeMap::new();
        while !self.next_is(';') {
            let (key, _) = self.word("an option name or ';'")?;
            self.punct('=')?;
            options.insert(key, self.value()?);
        }
        self.punct(';')?;
        Ok(LoginModule {
            class,
            flag,
            options,
        })
    }
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                loop {
                    match chars.next() {
                        Some('/') if prev == '*' => break,
                        Some(c) => {
                            line += usize::from(c == '\n');
                            prev = c;
                        }
                        None => return Err(format!("line {line}: unterminated comment")),
                    }
                }
            }
            '{' | '}' | ';' | '=' => out.push((Token::Punct(c), line)),
            '"' | '\'' => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') => match chars.next() {
                            Some(e) => s.push(e),
                            None => return Err(format!("line {start}: unterminated string")),
                        },
                        Some(ch) => {
                            line += usize::from(ch == '\n');
                            s.push(ch)
                        }
                        None => return Err(format!("line {start}: unterminated string")),
                    }
                }
                out.push((Token::Quoted(s), start));
            }
            _ => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "{};=\"'".contains(n) {
                        break;
                    }
                    w.push(n);
                    chars.next();
                }
                out.push((Token::Word(w), line));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zookeepers_documented_server_section() {
        let text = r#"
            // the server's users
            Server {
                org.apache.zookeeper.server.auth.DigestLoginModule required
                user_super="super_secret"
                user_alice="a \"quoted\" secret";
            };
            /* a client section,
               ignored by the server */
            Client {
                org.apache.zookeeper.server.auth.DigestLoginModule required
                username="alice" password="x";
            };
            QuorumServer {
                com.sun.security.auth.module.Krb5LoginModule required
                useKeyTab=true keyTab="/etc/zk.keytab" principal="zookeeper/host@EXAMPLE.COM";
            };"#;
        let jaas = Jaas::parse(text).unwrap();
        let server = jaas.section("Server").unwrap();
        assert_eq!(server.len(), 1);
        assert_eq!(
            server[0].class,
            "org.apache.zookeeper.server.auth.DigestLoginModule"
        );
        assert_eq!(server[0].options["user_super"], "super_secret");
        assert_eq!(server[0].options["user_alice"], "a \"quoted\" secret");
        assert_eq!(
            jaas.section("Client").unwrap()[0].options["username"],
            "alice"
        );
        let quorum = &jaas.section("QuorumServer").unwrap()[0];
        assert_eq!(quorum.options["useKeyTab"], "true");
        assert_eq!(quorum.options["keyTab"], "/etc/zk.keytab");
    }

    #[test]
    fn malformed_files_name_the_line() {
        let missing_semicolon = "Server {\n  Module required\n  a=\"b\"\n};";
        assert!(Jaas::parse(missing_semicolon)
            .unwrap_err()
            .starts_with("line 4"));
        let bad_flag = "Server {\n  Module always a=b;\n};";
        assert!(Jaas::parse(bad_flag)
            .unwrap_err()
            .contains("not a login module flag"));
        assert!(Jaas::parse("Server { M required a=\"b").is_err());
        assert_eq!(Jaas::parse("").unwrap(), Jaas::default());
    }
}
