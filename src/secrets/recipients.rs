//! Who can read the secrets: age recipients from the profile's `secrets.recipients` list and an
//! optional `<name>.recipients` file (the `age -R` format), parsed with errors that say where a
//! bad entry came from without echoing it in full.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::error::{SecretsError, excerpt};

/// One public key to encrypt to.
#[derive(Clone)]
enum RecipientKey {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

#[derive(Clone)]
struct RecipientEntry {
    key: RecipientKey,
    /// Where it was read from, e.g. `profiles/homelab.yaml: secrets.recipients[1]`.
    origin: String,
}

/// A non-empty list of age recipients, each remembering where it came from.
#[derive(Clone)]
pub struct Recipients {
    entries: Vec<RecipientEntry>,
}

impl Recipients {
    /// Parse the profile's list (`list_origin` such as `profiles/homelab.yaml: secrets.recipients`;
    /// entry `i` is reported as `<list_origin>[i]`) plus, when `recipients_file` is given and
    /// exists, that file (one recipient per line, `#` comments and blank lines ignored; a file
    /// that does not exist is skipped). An empty result is an error.
    pub fn from_sources(
        list: &[String],
        list_origin: &str,
        recipients_file: Option<&Path>,
    ) -> Result<Self, SecretsError> {
        let mut entries = Vec::new();
        for (index, value) in list.iter().enumerate() {
            let origin = format!("{list_origin}[{index}]");
            entries.push(parse_entry(value, origin)?);
        }
        if let Some(path) = recipients_file
            && path.exists()
        {
            let text = read_recipients_file(path)?;
            entries.extend(parse_recipients_text(&text, &path.display().to_string())?);
        }
        if entries.is_empty() {
            let mut origin = list_origin.to_string();
            if let Some(path) = recipients_file {
                origin.push_str(&format!(" and {}", path.display()));
            }
            return Err(SecretsError::NoRecipients { origin });
        }
        Ok(Self { entries })
    }

    /// Parse recipients given one per string, each with its own origin label.
    pub fn from_labelled(values: &[(String, String)]) -> Result<Self, SecretsError> {
        let entries = values
            .iter()
            .map(|(origin, value)| parse_entry(value, origin.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err(SecretsError::NoRecipients {
                origin: "an empty list".into(),
            });
        }
        Ok(Self { entries })
    }

    /// Number of recipients.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a `Recipients` value is never empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The public keys as text (`age1…`, `ssh-ed25519 AAAA…`), in order.
    pub fn public_keys(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| match &e.key {
                RecipientKey::X25519(r) => r.to_string(),
                RecipientKey::Ssh(r) => r.to_string(),
            })
            .collect()
    }

    /// The origin label of each recipient, in order.
    pub fn origins(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.origin.clone()).collect()
    }

    /// The keys as the age crate wants them.
    pub(crate) fn as_age(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.entries.iter().map(|e| match &e.key {
            RecipientKey::X25519(r) => r as &dyn age::Recipient,
            RecipientKey::Ssh(r) => r as &dyn age::Recipient,
        })
    }
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.public_keys()).finish()
    }
}

/// Largest recipients file read (one line per key: far more than any team needs).
pub const MAX_RECIPIENTS_FILE_BYTES: u64 = 256 * 1024;

/// Read a recipients file: a regular file of at most [`MAX_RECIPIENTS_FILE_BYTES`], UTF-8.
pub fn read_recipients_file(path: &Path) -> Result<String, SecretsError> {
    use std::io::Read;
    let bad = |why: String| {
        SecretsError::io(
            format!("read recipients file {}", path.display()),
            std::io::Error::other(why),
        )
    };
    let meta = fs_err::metadata(path).map_err(|e| SecretsError::io("read recipients file", e))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    fs_err::File::open(path)
        .map_err(|e| SecretsError::io("read recipients file", e))?
        .take(MAX_RECIPIENTS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SecretsError::io("read recipients file", e))?;
    if bytes.len() as u64 > MAX_RECIPIENTS_FILE_BYTES {
        return Err(bad(format!(
            "larger than {MAX_RECIPIENTS_FILE_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))
}

/// Check one recipient as encryption would parse it; the error is the full message (without
/// origin), for `validate`.
pub fn check_recipient(value: &str) -> Result<(), String> {
    parse_entry(value, String::new()).map(|_| ()).map_err(|e| {
        let text = e.to_string();
        let text = text.strip_prefix(": ").unwrap_or(&text);
        text.lines().next().unwrap_or_default().to_string()
    })
}

/// Check a recipients file; returns `(line, message)` for each bad line, or one `(0, message)`
/// when the file cannot be read.
pub fn check_recipients_file(path: &Path) -> Vec<(usize, String)> {
    let text = match read_recipients_file(path) {
        Ok(t) => t,
        Err(e) => return vec![(0, e.to_string())],
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .filter_map(|(i, l)| check_recipient(l).err().map(|m| (i + 1, m)))
        .collect()
}

/// Parse the `age -R` format: one recipient per line, `#` comments, blank lines.
fn parse_recipients_text(text: &str, file: &str) -> Result<Vec<RecipientEntry>, SecretsError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        entries.push(parse_entry(line, format!("{file}:{}", index + 1))?);
    }
    Ok(entries)
}

fn parse_entry(value: &str, origin: String) -> Result<RecipientEntry, SecretsError> {
    let value = value.trim();
    let invalid = |reason: &str| SecretsError::InvalidRecipient {
        origin: origin.clone(),
        excerpt: excerpt(value),
        reason: if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        },
    };
    if value.starts_with("age1pq1") {
        return Err(SecretsError::PostQuantumRecipient { origin });
    }
    if value.starts_with("age1") {
        return match age::x25519::Recipient::from_str(value) {
            Ok(key) => Ok(RecipientEntry {
                key: RecipientKey::X25519(key),
                origin,
            }),
            Err(_) => Err(invalid(
                "not a valid X25519 key; plugin recipients are not supported",
            )),
        };
    }
    if value.starts_with("ssh-") || value.starts_with("ecdsa-") || value.starts_with("sk-") {
        use age::ssh::ParseRecipientKeyError as E;
        return match age::ssh::Recipient::from_str(value) {
            Ok(key) => Ok(RecipientEntry {
                key: RecipientKey::Ssh(key),
                origin,
            }),
            Err(E::RsaModulusTooSmall) => Err(invalid("ssh-rsa keys need at least 2048 bits")),
            Err(E::RsaModulusTooLarge) => Err(invalid("ssh-rsa key too large")),
            Err(E::Ignore) | Err(E::Unsupported(_)) => Err(invalid(
                "unsupported SSH key type; use ssh-ed25519 or ssh-rsa",
            )),
            Err(_) => Err(invalid("malformed SSH public key")),
        };
    }
    if value.is_empty() {
        return Err(invalid("empty entry"));
    }
    Err(invalid(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const X25519: &str = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj";

    #[test]
    fn parses_x25519_with_origin() {
        let r = Recipients::from_sources(&[X25519.to_string()], "p.yaml: secrets.recipients", None)
            .unwrap();
        assert_eq!(r.public_keys(), vec![X25519.to_string()]);
        assert_eq!(
            r.origins(),
            vec!["p.yaml: secrets.recipients[0]".to_string()]
        );
    }

    #[test]
    fn post_quantum_names_origin() {
        let err = Recipients::from_sources(
            &[
                X25519.to_string(),
                "age1pq1qqqqqqqqqqqqqqqqqqqqqqqqqqqqq".to_string(),
            ],
            "profiles/homelab.yaml: secrets.recipients",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "profiles/homelab.yaml: secrets.recipients[1]: post-quantum recipients are not supported"
            ),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_cut_to_twenty_chars() {
        let err = Recipients::from_sources(
            &["this-is-not-a-key-and-it-goes-on-and-on".to_string()],
            "p.yaml: secrets.recipients",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "p.yaml: secrets.recipients[0]: not a usable age recipient: \"this-is-not-a-key-an…\""
            ),
            "{err}"
        );
        assert!(!err.contains("goes-on"));
    }

    #[test]
    fn malformed_ssh_key_and_labelled_entries() {
        let err = Recipients::from_labelled(&[
            ("a".to_string(), X25519.to_string()),
            (
                "--recipient[2]".to_string(),
                "ssh-ed25519 AAAAnotbase64!!".to_string(),
            ),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "--recipient[2]: not a usable age recipient: \"ssh-ed25519 AAAAnotb…\" \
                 (malformed SSH public key)"
            ),
            "{err}"
        );
        let ok = Recipients::from_labelled(&[("a".to_string(), X25519.to_string())]).unwrap();
        assert_eq!(ok.len(), 1);
        assert!(Recipients::from_labelled(&[]).is_err());
    }

    #[test]
    fn empty_list_is_an_error() {
        let err = Recipients::from_sources(&[], "p.yaml: secrets.recipients", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no age recipients to encrypt to (p.yaml: secrets.recipients)"),
            "{err}"
        );
    }

    #[test]
    fn recipients_file_skips_comments_and_reports_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("homelab.recipients");
        fs_err::write(&path, format!("# team\n\n{X25519}\n  # x\nbogus\n")).unwrap();
        let err = Recipients::from_sources(&[], "p", Some(&path))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}:5: not a usable age recipient", path.display())),
            "{err}"
        );
        fs_err::write(&path, format!("# team\n\n{X25519}\n")).unwrap();
        let r = Recipients::from_sources(&[], "p", Some(&path)).unwrap();
        assert_eq!(r.origins(), vec![format!("{}:3", path.display())]);
    }
}
