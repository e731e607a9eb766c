//! Who we are when decrypting: age identities found the way SOPS users expect (explicit flag,
//! `TALIX_AGE_KEY_FILE`, `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`, the SOPS `keys.txt`), remembering
//! which source was used so error messages can name it.

use fs_err::os::unix::fs::OpenOptionsExt;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use secrecy::zeroize::Zeroizing;

use super::error::SecretsError;

/// Where a set of identities came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `--identity FILE`.
    Explicit(PathBuf),
    /// `$TALIX_AGE_KEY_FILE`.
    TalixKeyFile(PathBuf),
    /// `$SOPS_AGE_KEY_FILE`.
    SopsKeyFile(PathBuf),
    /// `$SOPS_AGE_KEY` (the keys themselves).
    SopsKeyInline,
    /// `$XDG_CONFIG_HOME/sops/age/keys.txt` or `~/.config/sops/age/keys.txt`.
    DefaultKeysFile(PathBuf),
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit(p) => write!(f, "--identity {}", p.display()),
            Self::TalixKeyFile(p) => write!(f, "$TALIX_AGE_KEY_FILE ({})", p.display()),
            Self::SopsKeyFile(p) => write!(f, "$SOPS_AGE_KEY_FILE ({})", p.display()),
            Self::SopsKeyInline => f.write_str("$SOPS_AGE_KEY"),
            Self::DefaultKeysFile(p) => f.write_str(&p.display().to_string()),
        }
    }
}

/// The age identities used for decryption, and their source.
///
/// Invariant: never empty. `Debug` shows only the source and the count.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    source: IdentitySource,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({} from {})", self.keys.len(), self.source)
    }
}

/// Environment variables consulted by [`Identities::discover`].
pub const ENV_TALIX_KEY_FILE: &str = "TALIX_AGE_KEY_FILE";
/// SOPS's key file variable.
pub const ENV_SOPS_KEY_FILE: &str = "SOPS_AGE_KEY_FILE";
/// SOPS's inline keys variable.
pub const ENV_SOPS_KEY: &str = "SOPS_AGE_KEY";

impl Identities {
    /// Find identities in the SOPS order; the first source that exists wins:
    /// `explicit` (`--identity FILE`), `$TALIX_AGE_KEY_FILE`, `$SOPS_AGE_KEY_FILE`,
    /// `$SOPS_AGE_KEY`, then `$XDG_CONFIG_HOME/sops/age/keys.txt` (or
    /// `$HOME/.config/sops/age/keys.txt` when `XDG_CONFIG_HOME` is unset or empty).
    ///
    /// A named file (flag or variable) that cannot be read is an error, not a fall-through.
    /// Empty variables count as unset.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, SecretsError> {
        Self::discover_with_env(explicit, &|name| std::env::var_os(name))
    }

    /// [`Identities::discover`] with the environment supplied by `env` (for tests and callers
    /// that hold their own environment map).
    pub fn discover_with_env(
        explicit: Option<&Path>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Self, SecretsError> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(path) = explicit {
            return Self::from_file(path, IdentitySource::Explicit(path.to_path_buf()));
        }
        let mut searched = vec!["--identity (not given)".to_string()];
        match var(ENV_TALIX_KEY_FILE) {
            Some(path) => {
                let path = PathBuf::from(path);
                return Self::from_file(&path, IdentitySource::TalixKeyFile(path.clone()));
            }
            None => searched.push(format!("${ENV_TALIX_KEY_FILE} (unset)")),
        }
        match var(ENV_SOPS_KEY_FILE) {
            Some(path) => {
                let path = PathBuf::from(path);
                return Self::from_file(&path, IdentitySource::SopsKeyFile(path.clone()));
            }
            None => searched.push(format!("${ENV_SOPS_KEY_FILE} (unset)")),
        }
        match var(ENV_SOPS_KEY) {
            Some(keys) => {
                let text = Zeroizing::new(keys.to_string_lossy().into_owned());
                return Self::from_text(&text, IdentitySource::SopsKeyInline);
            }
            None => searched.push(format!("${ENV_SOPS_KEY} (unset)")),
        }
        match default_keys_file(&var) {
            Some(path) if path.exists() => {
                return Self::from_file(&path, IdentitySource::DefaultKeysFile(path.clone()));
            }
            Some(path) => searched.push(format!("{} (not found)", path.display())),
            None => searched.push("~/.config/sops/age/keys.txt (HOME unset)".to_string()),
        }
        Err(SecretsError::NoIdentityFound {
            searched: searched.join(", "),
        })
    }

    /// Read an `age-keygen` key file (comments, several keys) or an unencrypted OpenSSH
    /// private key (ed25519 or RSA).
    pub fn from_file(path: &Path, source: IdentitySource) -> Result<Self, SecretsError> {
        let text = fs_err::read_to_string(path).map_err(|e| SecretsError::IdentityUnreadable {
            origin: source.to_string(),
            detail: e.to_string(),
        })?;
        let text = Zeroizing::new(text);
        Self::from_text(&text, source)
    }

    /// Parse identities from text in either accepted format.
    pub fn from_text(text: &str, source: IdentitySource) -> Result<Self, SecretsError> {
        let origin = source.to_string();
        let keys = if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            vec![parse_ssh_identity(text, &origin)?]
        } else {
            parse_age_identities(text, &origin)?
        };
        if keys.is_empty() {
            return Err(SecretsError::IdentityEmpty { origin });
        }
        Ok(Self { keys, source })
    }

    /// Where these identities came from.
    pub fn source(&self) -> &IdentitySource {
        &self.source
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: an `Identities` value is never empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }
}

fn default_keys_file(var: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let config_home = match var("XDG_CONFIG_HOME") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        _ => PathBuf::from(var("HOME")?).join(".config"),
    };
    Some(config_home.join("sops").join("age").join("keys.txt"))
}

fn parse_age_identities(
    text: &str,
    origin: &str,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, SecretsError> {
    let mut keys: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Ok(key) = age::x25519::Identity::from_str(line) {
            keys.push(Box::new(key));
            continue;
        }
        let unsupported = |what, hint| SecretsError::IdentityUnsupported {
            origin: format!("{origin}: line {}", index + 1),
            what,
            hint,
        };
        if line.starts_with("AGE-SECRET-KEY-PQ-1") {
            return Err(unsupported(
                "a post-quantum identity (AGE-SECRET-KEY-PQ-1…)",
                "use an X25519 key from `age-keygen` (without -pq)",
            ));
        }
        if line.starts_with("AGE-PLUGIN-") {
            return Err(unsupported(
                "a plugin identity (AGE-PLUGIN-…)",
                "use an X25519 key from `age-keygen`",
            ));
        }
        return Err(SecretsError::IdentityInvalidLine {
            origin: origin.to_string(),
            line: index + 1,
        });
    }
    Ok(keys)
}

fn parse_ssh_identity(
    text: &str,
    origin: &str,
) -> Result<Box<dyn age::Identity + Send + Sync>, SecretsError> {
    let identity = age::ssh::Identity::from_buffer(text.as_bytes(), Some(origin.to_string()))
        .map_err(|_| SecretsError::IdentityInvalidLine {
            origin: origin.to_string(),
            line: 1,
        })?;
    let unsupported = |what, hint| SecretsError::IdentityUnsupported {
        origin: origin.to_string(),
        what,
        hint,
    };
    match identity {
        age::ssh::Identity::Unencrypted(_) => Ok(Box::new(identity)),
        age::ssh::Identity::Encrypted(_) => Err(unsupported(
            "a passphrase-protected OpenSSH key",
            "use an unencrypted key file (e.g. a dedicated `ssh-keygen -t ed25519 -N ''` key) or an age key",
        )),
        age::ssh::Identity::Unsupported(_) => Err(unsupported(
            "this OpenSSH key type",
            "use an ssh-ed25519 or ssh-rsa key, or an age key",
        )),
    }
}

/// Create a new `age-keygen`-style identity file at `path` (mode 0600, refusing to overwrite)
/// and return its public recipient (`age1…`).
pub fn generate_identity_file(path: &Path) -> Result<String, SecretsError> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let secret = identity.to_string();
    let contents = Zeroizing::new(format!(
        "# created: {created}\n# public key: {recipient}\n{}\n",
        secret.expose_secret()
    ));
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SecretsError::io("create identity file", e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| SecretsError::io("write identity file", e))?;
    Ok(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn generated_file_is_0600_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        let recipient = generate_identity_file(&path).unwrap();
        assert!(recipient.starts_with("age1"));
        let mode = fs_err::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ids = Identities::from_file(&path, IdentitySource::Explicit(path.clone())).unwrap();
        assert_eq!(ids.len(), 1);
        assert!(generate_identity_file(&path).is_err(), "must not overwrite");
    }

    #[test]
    fn discovery_order_follows_sops() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| {
            let path = dir.path().join(n);
            generate_identity_file(&path).unwrap();
            path
        };
        let (explicit, talix, sops_file) = (p("explicit"), p("talix"), p("sops"));
        let xdg = dir.path().join("xdg");
        fs_err::create_dir_all(xdg.join("sops/age")).unwrap();
        generate_identity_file(&xdg.join("sops/age/keys.txt")).unwrap();
        let inline = fs_err::read_to_string(&talix).unwrap();
        let all = [
            ("TALIX_AGE_KEY_FILE", talix.to_str().unwrap()),
            ("SOPS_AGE_KEY_FILE", sops_file.to_str().unwrap()),
            ("SOPS_AGE_KEY", inline.as_str()),
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
            ("HOME", "/nonexistent-home"),
        ];
        let ids = Identities::discover_with_env(Some(&explicit), &env_of(&all)).unwrap();
        assert_eq!(ids.source(), &IdentitySource::Explicit(explicit.clone()));
        let ids = Identities::discover_with_env(None, &env_of(&all)).unwrap();
        assert_eq!(ids.source(), &IdentitySource::TalixKeyFile(talix.clone()));
        let ids = Identities::discover_with_env(None, &env_of(&all[1..])).unwrap();
        assert_eq!(
            ids.source(),
            &IdentitySource::SopsKeyFile(sops_file.clone())
        );
        let ids = Identities::discover_with_env(None, &env_of(&all[2..])).unwrap();
        assert_eq!(ids.source(), &IdentitySource::SopsKeyInline);
        let ids = Identities::discover_with_env(None, &env_of(&all[3..])).unwrap();
        assert_eq!(
            ids.source(),
            &IdentitySource::DefaultKeysFile(xdg.join("sops/age/keys.txt"))
        );
        // Empty variables count as unset; HOME is the fallback when XDG_CONFIG_HOME is empty.
        let home = dir.path().join("home");
        fs_err::create_dir_all(home.join(".config/sops/age")).unwrap();
        generate_identity_file(&home.join(".config/sops/age/keys.txt")).unwrap();
        let ids = Identities::discover_with_env(
            None,
            &env_of(&[
                ("TALIX_AGE_KEY_FILE", ""),
                ("XDG_CONFIG_HOME", ""),
                ("HOME", home.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(
            ids.source(),
            &IdentitySource::DefaultKeysFile(home.join(".config/sops/age/keys.txt"))
        );
    }

    #[test]
    fn nothing_found_lists_places_searched() {
        let err = Identities::discover_with_env(None, &env_of(&[("HOME", "/nonexistent-home")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no age identity found to decrypt the secrets\n\
             hint: looked in, in this order: --identity (not given), $TALIX_AGE_KEY_FILE (unset), \
             $SOPS_AGE_KEY_FILE (unset), $SOPS_AGE_KEY (unset), \
             /nonexistent-home/.config/sops/age/keys.txt (not found)\n\
             hint: pass --identity FILE, or set SOPS_AGE_KEY_FILE to your age-keygen key file"
        );
    }

    #[test]
    fn missing_named_file_is_an_error_not_a_fallthrough() {
        let err = Identities::discover_with_env(
            None,
            &env_of(&[("SOPS_AGE_KEY_FILE", "/nonexistent/keys.txt")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "cannot read age identities from $SOPS_AGE_KEY_FILE (/nonexistent/keys.txt): "
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_lines_are_reported_by_number_without_content() {
        let err = Identities::from_text(
            "# c\nAGE-SECRET-KEY-1NOTAREALKEYATALL\n",
            IdentitySource::SopsKeyInline,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("$SOPS_AGE_KEY: line 2 is not an age identity"),
            "{err}"
        );
        assert!(!err.contains("NOTAREAL"));
        let err = Identities::from_text("AGE-SECRET-KEY-PQ-1XYZ\n", IdentitySource::SopsKeyInline)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "$SOPS_AGE_KEY: line 1: a post-quantum identity (AGE-SECRET-KEY-PQ-1…) is not supported"
            ),
            "{err}"
        );
        let err = Identities::from_text("# only comments\n", IdentitySource::SopsKeyInline)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "$SOPS_AGE_KEY: contains no age identity");
    }
}
