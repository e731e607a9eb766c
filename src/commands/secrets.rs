//! `talix secrets init|show|rekey|edit|verify`: the CLI over [`crate::secrets::SecretsCommands`],
//! keeping the lock file and the store's `secrets` step in step with the encrypted file.

use std::io::Write;
use std::path::Path;

use super::{CliError, Result, Session};
use crate::cli::{ContractArgs, SecretsAction};
use crate::secrets::SecretsCommands;
use crate::store::Store;

pub(super) fn secrets_cmd(
    open: &dyn Fn(&Path, &ContractArgs) -> Result<Session>,
    action: &SecretsAction,
) -> Result<()> {
    let no_contract_change = ContractArgs::default();
    let profile = match action {
        SecretsAction::Init { profile, .. }
        | SecretsAction::Show(profile)
        | SecretsAction::Rekey { profile, .. }
        | SecretsAction::Edit { profile, .. }
        | SecretsAction::Verify { profile, .. } => &profile.profile,
    };
    // Plaintext scratch of an earlier run that was killed (SIGKILL, power loss of the shell…).
    for dir in crate::secrets::PrivateDir::sweep() {
        eprintln!(
            "note: removed {} left by an interrupted talix run",
            dir.display()
        );
    }
    let s = open(profile, &no_contract_change)?;
    let file = s.profile.workspace.secrets_file().to_path_buf();
    let secrets_err = |e: crate::secrets::SecretsError| CliError::failure(format!("error: {e}"));
    let ids = || {
        s.identities
            .get()
            .map_err(|e| CliError::failure(format!("error: {e}")))
    };
    let mut lock = s.lock.clone();
    match action {
        SecretsAction::Init {
            force,
            i_know_this_breaks_the_cluster,
            from,
            ..
        } => {
            let source = match from {
                Some(path) => crate::secrets::BundleSource::Plaintext(
                    crate::secrets::SecretBytes::new(fs_err::read(path)?),
                ),
                None => {
                    let program = crate::exec::locate(crate::derivation::Tool::Talosctl)?;
                    let talosctl_version = s
                        .tools
                        .get(crate::derivation::Tool::Talosctl)
                        .map_err(|e| CliError::failure(format!("error: {e}")))?;
                    crate::secrets::BundleSource::Talosctl {
                        program,
                        contract: s.contract.contract.to_string(),
                        talosctl_version,
                    }
                }
            };
            let bootstrapped_with = lock.bootstrap.as_ref().map(|b| b.secrets_hash);
            let identities = if *force && bootstrapped_with.is_some() {
                Some(ids()?)
            } else {
                s.identities.get().ok()
            };
            let hash = SecretsCommands::init(
                &file,
                &s.cipher.recipients,
                source,
                crate::secrets::InitOptions {
                    force: *force,
                    bootstrapped_with,
                    i_know_this_breaks_the_cluster: *i_know_this_breaks_the_cluster,
                },
                identities,
            )
            .map_err(secrets_err)?;
            s.record_secrets(&mut lock, hash)?;
            lock.save(&s.profile.workspace)?;
            realise_secrets_step(&s);
            super::outln!(
                "{}: new secrets bundle {} encrypted to {} recipient(s)",
                file.display(),
                hash.short(),
                s.cipher.recipients.len()
            );
        }
        SecretsAction::Show(_) => {
            let bundle = SecretsCommands::show(&file, ids()?).map_err(secrets_err)?;
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                eprintln!("warning: printing the plaintext secrets bundle to a terminal");
            }
            super::DataOut::lock().write_all(bundle.expose_secret())?;
        }
        SecretsAction::Rekey {
            i_know_this_locks_me_out,
            ..
        } => {
            let hash = SecretsCommands::rekey_checked(
                &file,
                ids()?,
                &s.cipher.recipients,
                *i_know_this_locks_me_out,
            )
            .map_err(secrets_err)?;
            s.record_secrets(&mut lock, hash)?;
            lock.save(&s.profile.workspace)?;
            realise_secrets_step(&s);
            super::outln!(
                "{}: re-encrypted to {} recipient(s); bundle {} unchanged",
                file.display(),
                s.cipher.recipients.len(),
                hash.short()
            );
        }
        SecretsAction::Edit {
            i_know_this_breaks_the_cluster,
            ..
        } => {
            use std::io::IsTerminal;
            let on_terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
            let editor =
                crate::secrets::choose_editor(&|name| std::env::var(name).ok(), on_terminal)
                    .map_err(secrets_err)?;
            let guard = crate::secrets::EditGuard {
                bootstrapped_with: lock.bootstrap.as_ref().map(|b| b.secrets_hash),
                i_know_this_breaks_the_cluster: *i_know_this_breaks_the_cluster,
            };
            match SecretsCommands::edit_guarded(&file, ids()?, &s.cipher.recipients, &editor, guard)
                .map_err(secrets_err)?
            {
                crate::secrets::EditOutcome::Unchanged(h) => {
                    super::outln!("{}: unchanged (bundle {})", file.display(), h.short())
                }
                crate::secrets::EditOutcome::Changed { before, after } => {
                    s.record_secrets(&mut lock, after)?;
                    lock.save(&s.profile.workspace)?;
                    realise_secrets_step(&s);
                    super::outln!(
                        "{}: bundle {} -> {}",
                        file.display(),
                        before.short(),
                        after.short()
                    );
                }
            }
        }
        SecretsAction::Verify { json, .. } => {
            let hash = SecretsCommands::verify(&file, ids()?).map_err(secrets_err)?;
            if *json {
                // The bundle's hash only, as everywhere: never a secret value.
                let doc = serde_json::json!({
                    "profile": s.profile.name,
                    "file": file.display().to_string(),
                    "valid": true,
                    "bundle_hash": hash.to_string(),
                });
                super::outln!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                super::outln!("{}: valid secrets bundle {hash}", file.display());
            }
        }
    }
    Ok(())
}

/// Realise the `secrets` step for the file as it is now, so `plan` knows its output hash without
/// decrypting (rekey: same hash, everything downstream stays cached). Best effort: an operator
/// who encrypted to others' keys only may not be able to decrypt.
fn realise_secrets_step(s: &Session) {
    let steps = s.steps();
    let builders = crate::steps::builders(&s.step_env());
    let result = s
        .store
        .lock(true)
        .map_err(|e| e.to_string())
        .and_then(|_guard| {
            // The ref written below records where the profile lives (gc roots).
            s.store
                .set_ref_source(&s.profile.name, &s.profile.source)
                .map_err(|e| e.to_string())?;
            s.engine()
                .realise(&steps[..1], &builders, |_, _| {})
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        eprintln!(
            "note: the secrets step was not recorded in the store ({e}); `talix build` will do it"
        );
    }
}
