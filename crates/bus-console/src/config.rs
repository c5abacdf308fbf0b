//! What the console is allowed to do and for whom: the operator token,
//! the hosts it answers to, its rate bound and its audit file.

use std::path::{Path, PathBuf};

/// The environment variable holding the operator token.
pub const TOKEN_ENV: &str = "BUS_CONSOLE_TOKEN";

/// The environment variable naming a file that holds the operator token
/// (its first line; surrounding whitespace is ignored).
pub const TOKEN_FILE_ENV: &str = "BUS_CONSOLE_TOKEN_FILE";

/// The shortest token accepted: a guessable token is no lock.
pub const MIN_TOKEN_LEN: usize = 16;

/// The operator token could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read the console token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token is shorter than [`MIN_TOKEN_LEN`].
    #[error("the console token must be at least {MIN_TOKEN_LEN} characters")]
    TooShort,
}

/// A secret that allows the console's mutating actions and shows message
/// contents. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A token from its text (trimmed), at least [`MIN_TOKEN_LEN`] long.
    pub fn new(secret: &str) -> Result<Self, TokenError> {
        let secret = secret.trim();
        if secret.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort);
        }
        Ok(Self(secret.to_owned()))
    }

    /// The first line of `path`.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::new(text.lines().next().unwrap_or(""))
    }

    /// From [`TOKEN_ENV`], else the file named by [`TOKEN_FILE_ENV`], else
    /// `file` when given; `Ok(None)` when none is set. The command line is
    /// never a source: other users can read a process's arguments.
    pub fn from_env_or_file(file: Option<&Path>) -> Result<Option<Self>, TokenError> {
        if let Ok(secret) = std::env::var(TOKEN_ENV)
            && !secret.trim().is_empty()
        {
            return Self::new(&secret).map(Some);
        }
        if let Some(path) = std::env::var_os(TOKEN_FILE_ENV) {
            return Self::from_file(Path::new(&path)).map(Some);
        }
        file.map(Self::from_file).transpose()
    }

    /// Whether `offered` is this token, in time independent of where they
    /// differ.
    pub(crate) fn matches(&self, offered: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != offered.len() {
            return false;
        }
        mine.iter()
            .zip(offered)
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The console's settings.
///
/// ```
/// use bus_console::{ConsoleConfig, Token};
///
/// let mut config = ConsoleConfig::default();
/// config.token = Some(Token::new("a-long-operator-secret").unwrap());
/// config.allowed_hosts.push("bus.internal".into());
/// assert!(config.allowed_hosts.contains(&"localhost".to_owned()));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsoleConfig {
    /// The operator token. Without one every mutating action is refused;
    /// with one, mutations, payloads, headers and error texts need it as
    /// `Authorization: Bearer <token>`.
    pub token: Option<Token>,
    /// Host names (without port) the `Host` header may carry; anything
    /// else gets 421, which stops DNS rebinding. Default: `localhost`,
    /// `127.0.0.1`, `[::1]`.
    pub allowed_hosts: Vec<String>,
    /// Requests per second over all clients (default 50), with bursts of
    /// [`burst`](Self::burst); past it 429.
    pub requests_per_second: f64,
    /// The largest burst of requests (default 200).
    pub burst: u32,
    /// Where each mutation appends its audit line (JSON), besides the
    /// `bus_console::audit` tracing target. `None`: tracing only.
    pub audit_file: Option<PathBuf>,
    /// The largest page of letters a request may ask for (default 200).
    pub max_page: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            token: None,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
            requests_per_second: 50.0,
            burst: 200,
            audit_file: None,
            max_page: 200,
        }
    }
}
