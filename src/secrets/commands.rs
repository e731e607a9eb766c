//! The operations behind `talix secrets init|show|rekey|edit|verify`, taking explicit paths,
//! recipients and identities (the CLI resolves those from the profile and the environment).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::digest::Digest;

use super::bundle::{bundle_hash, validate_bundle};
use super::crypt::write_encrypted_atomically;
use super::crypt::{decrypt, decrypt_file, encrypt_armored, write_atomically};
use super::error::SecretsError;
use super::identities::Identities;
use super::private_dir::PrivateDir;
use super::recipients::Recipients;
use super::secret_bytes::SecretBytes;
use super::talosctl_gen::generate_bundle_with_talosctl;

/// Where a new bundle comes from.
#[derive(Debug)]
pub enum BundleSource {
    /// Run `talosctl gen secrets --talos-version <contract>`.
    Talosctl {
        /// The talosctl executable.
        program: PathBuf,
        /// The pinned config contract, e.g. `v1.11`.
        contract: String,
        /// The talosctl client version, e.g. `v1.12.0` (decides `-o -` vs FIFO).
        talosctl_version: String,
    },
    /// An existing plaintext bundle (import).
    Plaintext(SecretBytes),
}

/// Options of [`SecretsCommands::init`].
#[derive(Debug, Clone, Copy, Default)]
pub struct InitOptions {
    /// Replace an existing encrypted bundle.
    pub force: bool,
    /// The bundle hash the cluster was bootstrapped with (from the lock file), if any.
    pub bootstrapped_with: Option<Digest>,
    /// Allow replacing even the bundle the cluster was bootstrapped with.
    pub i_know_this_breaks_the_cluster: bool,
}

/// What [`SecretsCommands::edit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    /// The plaintext is byte-for-byte the same; the file was not rewritten.
    Unchanged(Digest),
    /// The bundle was re-encrypted with new content.
    Changed {
        /// Hash before the edit.
        before: Digest,
        /// Hash after the edit.
        after: Digest,
    },
}

/// Guards of [`SecretsCommands::edit_guarded`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EditGuard {
    /// The bundle hash the cluster was bootstrapped with (from the lock file), if any.
    pub bootstrapped_with: Option<Digest>,
    /// Allow editing even the bundle the cluster was bootstrapped with.
    pub i_know_this_breaks_the_cluster: bool,
}

/// The editor command line for `secrets edit`: `$VISUAL`, else `$EDITOR`, else `vi` — but `vi`
/// only on a terminal (stdin and stdout): without one it would print the plaintext buffer to
/// whatever stdout is.
pub fn choose_editor(
    env: &dyn Fn(&str) -> Option<String>,
    on_terminal: bool,
) -> Result<String, SecretsError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    match set("VISUAL").or_else(|| set("EDITOR")) {
        Some(editor) => Ok(editor),
        None if on_terminal => Ok("vi".to_string()),
        None => Err(SecretsError::NoEditor),
    }
}

/// The secrets subcommands as library calls.
#[derive(Debug)]
pub struct SecretsCommands;

impl SecretsCommands {
    /// Create the encrypted bundle at `secrets_path` from `source`, encrypted to `recipients`.
    /// Returns the new bundle hash.
    ///
    /// Refuses an existing file unless `options.force`; with `force`, refuses when the existing
    /// bundle's hash equals `options.bootstrapped_with` unless
    /// `options.i_know_this_breaks_the_cluster` (reading it needs `identities`; if it cannot be
    /// read, the error is returned).
    pub fn init(
        secrets_path: &Path,
        recipients: &Recipients,
        source: BundleSource,
        options: InitOptions,
        identities: Option<&Identities>,
    ) -> Result<Digest, SecretsError> {
        if secrets_path.exists() {
            if !options.force {
                return Err(SecretsError::AlreadyExists {
                    path: secrets_path.to_path_buf(),
                });
            }
            if let Some(bootstrapped) = options.bootstrapped_with
                && !options.i_know_this_breaks_the_cluster
            {
                let identities = match identities {
                    Some(ids) => ids,
                    None => Err(SecretsError::WouldBreakCluster {
                        path: secrets_path.to_path_buf(),
                        bundle: bootstrapped.short(),
                    })?,
                };
                let current = decrypt_file(secrets_path, identities)?;
                if bundle_hash(&current) == bootstrapped {
                    return Err(SecretsError::WouldBreakCluster {
                        path: secrets_path.to_path_buf(),
                        bundle: bootstrapped.short(),
                    });
                }
            }
        }
        let bundle = match source {
            BundleSource::Talosctl {
                program,
                contract,
                talosctl_version,
            } => generate_bundle_with_talosctl(&program, &contract, &talosctl_version)?,
            BundleSource::Plaintext(bundle) => {
                validate_bundle(&bundle, "imported bundle")?;
                bundle
            }
        };
        write_encrypted_atomically(secrets_path, &bundle, recipients)?;
        Ok(bundle_hash(&bundle))
    }

    /// Decrypt and return the bundle (not validated, so a broken bundle can still be inspected).
    pub fn show(secrets_path: &Path, identities: &Identities) -> Result<SecretBytes, SecretsError> {
        decrypt_file(secrets_path, identities)
    }

    /// Re-encrypt the bundle to the current `recipients` (after adding or removing a key).
    /// The plaintext is unchanged; returns its hash.
    /// Refuses when none of `identities` can decrypt the result (see
    /// [`SecretsCommands::rekey_checked`]).
    pub fn rekey(
        secrets_path: &Path,
        identities: &Identities,
        recipients: &Recipients,
    ) -> Result<Digest, SecretsError> {
        Self::rekey_checked(secrets_path, identities, recipients, false)
    }

    /// [`SecretsCommands::rekey`]; the new ciphertext is decrypted with `identities` before it
    /// replaces the file, and unless `allow_lockout` a result the operator cannot read is
    /// refused with [`SecretsError::RekeyLocksOut`] (the file is left as it was).
    pub fn rekey_checked(
        secrets_path: &Path,
        identities: &Identities,
        recipients: &Recipients,
        allow_lockout: bool,
    ) -> Result<Digest, SecretsError> {
        let bundle = decrypt_file(secrets_path, identities)?;
        let ciphertext = encrypt_armored(&bundle, recipients)?;
        let readable = decrypt(&ciphertext, identities, "re-encrypted bundle")
            .is_ok_and(|back| back == bundle);
        if !readable && !allow_lockout {
            return Err(SecretsError::RekeyLocksOut {
                path: secrets_path.to_path_buf(),
                recipients: recipients.len(),
            });
        }
        write_atomically(secrets_path, &ciphertext)?;
        Ok(bundle_hash(&bundle))
    }

    /// Decrypt, validate and return the bundle hash.
    pub fn verify(secrets_path: &Path, identities: &Identities) -> Result<Digest, SecretsError> {
        let bundle = decrypt_file(secrets_path, identities)?;
        validate_bundle(&bundle, &secrets_path.display().to_string())?;
        Ok(bundle_hash(&bundle))
    }

    /// Open the decrypted bundle in `editor` (a shell command line such as `$EDITOR`, run as
    /// `sh -c '<editor> "$1"'`) on a 0600 file in a [`PrivateDir`], validate the result and
    /// re-encrypt it to `recipients`. An unchanged buffer is not rewritten. A failing editor or
    /// an invalid bundle leaves `secrets_path` untouched; the scratch file is always removed.
    pub fn edit(
        secrets_path: &Path,
        identities: &Identities,
        recipients: &Recipients,
        editor: &str,
    ) -> Result<EditOutcome, SecretsError> {
        Self::edit_guarded(
            secrets_path,
            identities,
            recipients,
            editor,
            EditGuard::default(),
        )
    }

    /// [`SecretsCommands::edit`], refusing up front (before any plaintext is written) to edit
    /// the bundle a cluster was bootstrapped with unless `guard` allows it.
    ///
    /// SIGTERM, SIGINT or SIGHUP while the editor runs stop the editor, remove the scratch
    /// directory and then end talix with that signal.
    pub fn edit_guarded(
        secrets_path: &Path,
        identities: &Identities,
        recipients: &Recipients,
        editor: &str,
        guard: EditGuard,
    ) -> Result<EditOutcome, SecretsError> {
        let before = decrypt_file(secrets_path, identities)?;
        if let Some(bootstrapped) = guard.bootstrapped_with
            && bundle_hash(&before) == bootstrapped
            && !guard.i_know_this_breaks_the_cluster
        {
            return Err(SecretsError::EditWouldBreakCluster {
                path: secrets_path.to_path_buf(),
                bundle: bootstrapped.short(),
            });
        }
        let private = PrivateDir::create()?;
        let scratch = private.write_secret("secrets.yaml", &before)?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&scratch)
            .spawn()
            .map_err(|e| SecretsError::io(format!("run editor `{editor}`"), e))?;
        super::private_dir::set_scrub_child(child.id());
        let status = child.wait();
        super::private_dir::set_scrub_child(0);
        if let Some(sig) = super::private_dir::pending_signal() {
            drop(private);
            super::private_dir::reraise(sig);
        }
        let status = status.map_err(|e| SecretsError::io(format!("run editor `{editor}`"), e))?;
        if !status.success() {
            return Err(SecretsError::EditorFailed {
                editor: editor.to_string(),
                status: status.to_string(),
                path: secrets_path.to_path_buf(),
            });
        }
        let after = SecretBytes::new(
            fs_err::read(&scratch).map_err(|e| SecretsError::io("read edited bundle", e))?,
        );
        drop(private);
        let before_hash = bundle_hash(&before);
        if after == before {
            return Ok(EditOutcome::Unchanged(before_hash));
        }
        validate_bundle(&after, "edited bundle").map_err(|e| SecretsError::EditRejected {
            path: secrets_path.to_path_buf(),
            source: Box::new(e),
        })?;
        write_encrypted_atomically(secrets_path, &after, recipients)?;
        Ok(EditOutcome::Changed {
            before: before_hash,
            after: bundle_hash(&after),
        })
    }
}
