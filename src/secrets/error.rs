//! The one error type of the secrets module: every message names the file or setting it is
//! about, carries `hint:` lines where the fix is not obvious, and never contains secret material.

use std::path::PathBuf;

/// Everything that can go wrong while handling secrets at rest.
///
/// Invariant: no variant holds plaintext, key material or more than ~20 characters of a value
/// the user supplied, so `Display` and `Debug` are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// An `age1pq1…` recipient (hybrid ML-KEM): the age crate cannot encrypt to it.
    #[error(
        "{origin}: post-quantum recipients are not supported (`age1pq1…`)\n\
         hint: use an X25519 recipient (`age-keygen -y KEYFILE` prints one) or an ssh-ed25519 public key"
    )]
    PostQuantumRecipient { origin: String },

    /// A recipient string that is no age or SSH public key we can encrypt to.
    #[error(
        "{origin}: not a usable age recipient: {excerpt:?}{reason}\n\
         hint: expected `age1…` (from `age-keygen`), `ssh-ed25519 AAAA…` or `ssh-rsa AAAA…`"
    )]
    InvalidRecipient {
        origin: String,
        /// At most the first 20 characters of the entry.
        excerpt: String,
        /// Empty, or ` (detail)`.
        reason: String,
    },

    /// Neither the profile list nor the recipients file yields a recipient.
    #[error(
        "no age recipients to encrypt to ({origin})\n\
         hint: add your public key (`age-keygen -y KEYFILE`) to secrets.recipients or to the .recipients file"
    )]
    NoRecipients { origin: String },

    /// An identity source exists but cannot be read.
    #[error("cannot read age identities from {origin}: {detail}")]
    IdentityUnreadable { origin: String, detail: String },

    /// An identity source holds something that is not an identity (the line is never echoed).
    #[error(
        "{origin}: line {line} is not an age identity\n\
         hint: expected `AGE-SECRET-KEY-1…` lines (from `age-keygen`) or an unencrypted OpenSSH private key"
    )]
    IdentityInvalidLine { origin: String, line: usize },

    /// An identity kind talix cannot use (post-quantum, plugin, passphrase-protected SSH key …).
    #[error("{origin}: {what} is not supported\nhint: {hint}")]
    IdentityUnsupported {
        origin: String,
        what: &'static str,
        hint: &'static str,
    },

    /// An identity source with no identity in it.
    #[error("{origin}: contains no age identity")]
    IdentityEmpty { origin: String },

    /// No identity source exists at all.
    #[error(
        "no age identity found to decrypt the secrets\n\
         hint: looked in, in this order: {searched}\n\
         hint: pass --identity FILE, or set SOPS_AGE_KEY_FILE to your age-keygen key file"
    )]
    NoIdentityFound { searched: String },

    /// The file is encrypted, but to none of the identities we hold.
    #[error(
        "{file}: no matching identity: none of the {count} age identities from {origin} can decrypt it\n\
         hint: the file is encrypted to other keys; a current recipient must add your public key \
         to the recipients and run `talix secrets rekey`"
    )]
    NoMatchingIdentity {
        file: String,
        origin: String,
        count: usize,
    },

    /// Authentication of the header or the payload failed.
    #[error(
        "{file}: integrity check failed: the encrypted data was modified or corrupted after encryption\n\
         hint: restore the file from version control (`git checkout -- FILE`)"
    )]
    Tampered { file: String },

    /// The file ends before the age header or the armor is complete.
    #[error(
        "{file}: truncated age file: it ends before the encrypted data is complete\n\
         hint: restore the file from version control (`git checkout -- FILE`)"
    )]
    Truncated { file: String },

    /// Neither binary age nor ASCII-armored age.
    #[error(
        "{file}: not an age-encrypted file (no `age-encryption.org/v1` header and no \
         `-----BEGIN AGE ENCRYPTED FILE-----` armor)\n\
         hint: a plaintext bundle must be imported (`talix secrets init --from FILE`), not stored as is"
    )]
    NotAgeFile { file: String },

    /// A valid age file of a kind talix does not decrypt (passphrase, newer format).
    #[error("{file}: {what} is not supported\nhint: {hint}")]
    UnsupportedAgeFile {
        file: String,
        what: &'static str,
        hint: &'static str,
    },

    /// The age library refused to encrypt.
    #[error("cannot encrypt: {detail}")]
    Encrypt { detail: String },

    /// No tmpfs/ramfs is available for private scratch files.
    #[error(
        "no memory-backed directory for plaintext scratch files: {tried}\n\
         hint: talix refuses to write plaintext secrets to a persistent disk; mount a tmpfs \
         (e.g. /dev/shm) or set TALIX_PRIVATE_TMP to a directory on tmpfs"
    )]
    NoPrivateTmpfs { tried: String },

    /// `TALIX_PRIVATE_TMP` (or an explicit base) is not on tmpfs/ramfs.
    #[error(
        "{path}: not on tmpfs or ramfs (filesystem magic {magic:#x}); refusing to put plaintext secrets there\n\
         hint: point TALIX_PRIVATE_TMP at a tmpfs directory such as /dev/shm"
    )]
    NotTmpfs { path: PathBuf, magic: i64 },

    /// A scratch file name that would escape its directory.
    #[error("invalid private file name {name:?}: must be a plain file name")]
    BadPrivateName { name: String },

    /// The bundle text is not YAML (the message never quotes the text).
    #[error("{origin}: not valid YAML ({location})")]
    BundleYaml { origin: String, location: String },

    /// The bundle parsed but misses required fields or holds unusable certificates.
    #[error("{origin}: invalid Talos secrets bundle: {}", problems.join("; "))]
    BundleInvalid {
        origin: String,
        problems: Vec<String>,
    },

    /// `talosctl gen secrets` could not be started.
    #[error("cannot run {program}: {detail}")]
    TalosctlSpawn { program: PathBuf, detail: String },

    /// `talosctl gen secrets` failed; its stderr is carried along.
    #[error("`{program} gen secrets` failed ({status}):\n{stderr}")]
    TalosctlFailed {
        program: PathBuf,
        status: String,
        stderr: String,
    },

    /// `talosctl gen secrets` exited 0 but produced nothing.
    #[error("`{program} gen secrets` exited successfully but wrote no bundle")]
    TalosctlNoOutput { program: PathBuf },

    /// `talosctl gen secrets` did not finish in time.
    #[error(
        "`{program} gen secrets` did not finish within {limit_s} s and was stopped\n\
         hint: raise TALIX_EXEC_TIMEOUT_S if it legitimately takes longer"
    )]
    TalosctlTimedOut { program: PathBuf, limit_s: u64 },

    /// A bundle (or a file read as one) is larger than any real bundle.
    #[error("{origin}: larger than {limit} bytes; a Talos secrets bundle is about 9 KiB")]
    BundleTooLarge { origin: String, limit: usize },

    /// A talosctl version string we cannot compare.
    #[error("cannot parse talosctl version {version:?} (expected e.g. v1.12.0)")]
    BadTalosctlVersion { version: String },

    /// `init` without `force` on an existing file.
    #[error(
        "{path}: already exists; refusing to overwrite the cluster secrets\n\
         hint: pass --force to replace it (every config derived from it changes)"
    )]
    AlreadyExists { path: PathBuf },

    /// `init --force` would replace the bundle the cluster was bootstrapped with.
    #[error(
        "{path}: refusing to replace the secrets bundle the cluster was bootstrapped with (bundle {bundle})\n\
         hint: a new bundle means new CAs and a new etcd encryption key; the running cluster \
         rejects configs made from it\n\
         hint: only to rebuild the cluster from scratch, pass --i-know-this-breaks-the-cluster"
    )]
    WouldBreakCluster { path: PathBuf, bundle: String },

    /// `edit` of the bundle the cluster was bootstrapped with, without the explicit flag.
    #[error(
        "{path}: refusing to edit the secrets bundle the cluster was bootstrapped with (bundle {bundle})\n\
         hint: changed CAs, keys or tokens make every running node reject the configs talix \
         generates from the edited bundle, and the next `talix up` would push them to every node\n\
         hint: only if you mean to break (or rebuild) the cluster, pass --i-know-this-breaks-the-cluster"
    )]
    EditWouldBreakCluster { path: PathBuf, bundle: String },

    /// `rekey` to recipients none of the operator's identities match.
    #[error(
        "{path}: refusing to re-encrypt to {recipients} recipient(s) none of your identities can decrypt\n\
         hint: afterwards you could no longer show, edit, build or up with this bundle; only the \
         holders of those recipients' keys could\n\
         hint: add your own recipient to secrets.recipients, or pass --i-know-this-locks-me-out"
    )]
    RekeyLocksOut { path: PathBuf, recipients: usize },

    /// `edit` without `$VISUAL`/`$EDITOR` and without a terminal.
    #[error(
        "no editor: $VISUAL and $EDITOR are unset and there is no terminal for vi\n\
         hint: set EDITOR (e.g. EDITOR=nano), or run `talix secrets edit` from a terminal"
    )]
    NoEditor,

    /// The editor exited unsuccessfully; nothing was changed.
    #[error("editor `{editor}` failed ({status}); {path} is unchanged")]
    EditorFailed {
        editor: String,
        status: String,
        path: PathBuf,
    },

    /// The edited bundle is invalid; nothing was changed.
    #[error("{path} is unchanged: the edited bundle was rejected: {source}")]
    EditRejected {
        path: PathBuf,
        #[source]
        source: Box<SecretsError>,
    },

    /// An I/O error; `fs_err` errors already name their path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl SecretsError {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// At most the first 20 characters of a user-supplied value, for error messages.
pub(crate) fn excerpt(value: &str) -> String {
    let mut out: String = value.chars().take(20).collect();
    if value.chars().count() > 20 {
        out.push('…');
    }
    out
}
