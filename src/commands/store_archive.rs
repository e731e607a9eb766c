//! `talix store export` and `talix store import`: a profile's closure as a tar archive that
//! travels between machines (see `store::archive` for the format and the checks).

use std::path::Path;

use super::{CliError, Result, Session, store_dir};
use crate::derivation::StepId;
use crate::store::archive::{self, ExportError, Limits};
use crate::store::local::{LocalStore, atomic_write};

pub(super) fn export(s: Session, out: &Path) -> Result<()> {
    s.profile
        .workspace
        .refuse_overwrite(out)
        .map_err(|e| CliError::input(format!("error: {e}")))?;
    if out.is_dir() {
        return Err(CliError::input(format!(
            "error: {} is a folder; name the archive file to write",
            out.display()
        )));
    }
    let ids: Vec<StepId> = s.steps().into_iter().map(|st| st.id).collect();
    let hint = format!(
        "hint: run `talix build {}` (or `talix up`) first",
        s.profile.source.display()
    );
    let closure = match archive::closure(&s.store, &s.profile.name, &ids) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(CliError {
                code: crate::exit::Exit::Failure,
                message: format!(
                    "error: nothing of {} is realised in the store {}\n{hint}",
                    s.profile.name,
                    s.store.root().display()
                ),
            });
        }
        Err(ExportError::Incomplete(why)) => {
            return Err(CliError {
                code: crate::exit::Exit::Failure,
                message: format!(
                    "error: cannot export {}: {why}\nhint: run `talix store prune`, then `talix build {}` (or `talix up`), then export again",
                    s.profile.name,
                    s.profile.source.display()
                ),
            });
        }
        Err(ExportError::Store(e)) => return Err(e.into()),
    };
    let bytes = archive::write_archive(&closure, &Limits::DEFAULT).map_err(|e| CliError {
        code: crate::exit::Exit::Failure,
        message: format!("error: cannot export {}: {e}", s.profile.name),
    })?;
    atomic_write(out, &bytes, None)?;
    let secret = closure
        .objects
        .values()
        .filter(|o| o.manifest.outputs.values().any(|i| i.encrypted && i.stored))
        .count();
    super::outln!(
        "{}: {} objects of {} ({secret} with encrypted outputs), {} refs, {} bytes",
        out.display(),
        closure.objects.len(),
        s.profile.name,
        closure.refs.len(),
        bytes.len()
    );
    Ok(())
}

pub(super) fn import(flag: Option<&Path>, path: &Path, profile: Option<&Path>) -> Result<()> {
    let limits = Limits::DEFAULT;
    let meta = fs_err::metadata(path).map_err(|e| CliError::input(format!("error: {e}")))?;
    if !meta.is_file() {
        return Err(CliError::input(format!(
            "error: {} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > limits.max_archive_bytes() {
        return Err(CliError::input(format!(
            "error: {}: {} bytes, more than an export may hold ({} bytes)\nnothing was imported",
            path.display(),
            meta.len(),
            limits.max_archive_bytes()
        )));
    }
    let file = fs_err::File::open(path)?;
    let closure = archive::read_archive(std::io::BufReader::new(file), &limits).map_err(|r| {
        CliError::input(format!(
            "error: {}: {r}\nnothing was imported",
            path.display()
        ))
    })?;
    let store = LocalStore::open(&store_dir(flag, profile))?;
    let report = archive::import(&store, &closure)?;
    super::outln!(
        "{}: imported {} objects into {} ({} added, {} already present, {} damaged replaced), {} refs of {}",
        path.display(),
        closure.objects.len(),
        store.root().display(),
        report.added.len(),
        report.kept.len(),
        report.replaced.len(),
        report.refs,
        closure.profile
    );
    Ok(())
}
