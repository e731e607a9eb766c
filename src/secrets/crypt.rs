//! Whole-file age encryption of secrets: ASCII-armored output (so git treats it as text),
//! decryption of armored or binary input with one precise error per failure mode, and an
//! atomic write that leaves the previous file intact on any error.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use secrecy::zeroize::Zeroizing;

use super::error::SecretsError;
use super::identities::Identities;
use super::recipients::Recipients;
use super::secret_bytes::SecretBytes;

const ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
const ARMOR_END: &[u8] = b"-----END AGE ENCRYPTED FILE-----";
const BINARY_MAGIC: &[u8] = b"age-encryption.org/";

/// Encrypt `plaintext` to every recipient, ASCII-armored (`-----BEGIN AGE ENCRYPTED FILE-----`).
pub fn encrypt_armored(
    plaintext: &SecretBytes,
    recipients: &Recipients,
) -> Result<Vec<u8>, SecretsError> {
    let encrypt_err = |detail: String| SecretsError::Encrypt { detail };
    let encryptor = age::Encryptor::with_recipients(recipients.as_age())
        .map_err(|e| encrypt_err(e.to_string()))?;
    let mut out = Vec::with_capacity(plaintext.len() * 4 / 3 + 1024);
    let armored = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| encrypt_err(e.to_string()))?;
    let mut writer = encryptor
        .wrap_output(armored)
        .map_err(|e| encrypt_err(e.to_string()))?;
    writer
        .write_all(plaintext.expose_secret())
        .and_then(|()| writer.finish())
        .and_then(|armored| armored.finish())
        .map_err(|e| encrypt_err(e.to_string()))?;
    Ok(out)
}

/// Encrypt `plaintext` to every recipient as binary age (for store objects, where armor only
/// costs space). [`decrypt`] reads both forms.
pub fn encrypt_binary(
    plaintext: &SecretBytes,
    recipients: &Recipients,
) -> Result<Vec<u8>, SecretsError> {
    let encrypt_err = |detail: String| SecretsError::Encrypt { detail };
    let encryptor = age::Encryptor::with_recipients(recipients.as_age())
        .map_err(|e| encrypt_err(e.to_string()))?;
    let mut out = Vec::with_capacity(plaintext.len() + 1024);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| encrypt_err(e.to_string()))?;
    writer
        .write_all(plaintext.expose_secret())
        .and_then(|()| writer.finish().map(|_| ()))
        .map_err(|e| encrypt_err(e.to_string()))?;
    Ok(out)
}

/// Decrypt an age file (armored or binary). `file_label` names the file in errors.
///
/// Distinct errors: [`SecretsError::NotAgeFile`], [`SecretsError::Truncated`],
/// [`SecretsError::Tampered`], [`SecretsError::NoMatchingIdentity`] and
/// [`SecretsError::UnsupportedAgeFile`] (passphrase-encrypted or a newer format).
pub fn decrypt(
    ciphertext: &[u8],
    identities: &Identities,
    file_label: &str,
) -> Result<SecretBytes, SecretsError> {
    let file = || file_label.to_string();
    let start = ciphertext
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(ciphertext.len());
    let body = &ciphertext[start..];
    let armored = body.starts_with(ARMOR_BEGIN);
    if armored {
        if find(body, ARMOR_END).is_none() {
            return Err(SecretsError::Truncated { file: file() });
        }
    } else if !body.starts_with(BINARY_MAGIC) {
        return Err(SecretsError::NotAgeFile { file: file() });
    } else if find(body, b"\n--- ").is_none() {
        // The header's MAC line never arrived.
        return Err(SecretsError::Truncated { file: file() });
    }

    let header_error = |e: age::DecryptError| match e {
        age::DecryptError::UnknownFormat => SecretsError::UnsupportedAgeFile {
            file: file(),
            what: "this age format version",
            hint: "it was written by a newer age; decrypt it with that tool and re-import",
        },
        age::DecryptError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            SecretsError::Truncated { file: file() }
        }
        // A damaged armor body is damaged ciphertext.
        _ => SecretsError::Tampered { file: file() },
    };
    let decryptor =
        age::Decryptor::new_buffered(age::armor::ArmoredReader::new(body)).map_err(header_error)?;
    if decryptor.is_scrypt() {
        return Err(SecretsError::UnsupportedAgeFile {
            file: file(),
            what: "a passphrase-encrypted (scrypt) age file",
            hint: "re-encrypt it to age recipients (`age -d` then `talix secrets init --from`)",
        });
    }
    let mut reader = decryptor
        .decrypt(identities.as_age())
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SecretsError::NoMatchingIdentity {
                file: file(),
                origin: identities.source().to_string(),
                count: identities.len(),
            },
            other => header_error(other),
        })?;
    let mut plaintext = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut plaintext).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SecretsError::Truncated { file: file() }
        } else {
            SecretsError::Tampered { file: file() }
        }
    })?;
    Ok(SecretBytes::new(std::mem::take(&mut *plaintext)))
}

/// Read and decrypt `path`.
pub fn decrypt_file(path: &Path, identities: &Identities) -> Result<SecretBytes, SecretsError> {
    let ciphertext =
        fs_err::read(path).map_err(|e| SecretsError::io("read encrypted secrets", e))?;
    decrypt(&ciphertext, identities, &path.display().to_string())
}

/// Encrypt `plaintext` (armored) and replace `path` atomically: a temp file in the same
/// directory, fsync, rename, fsync of the directory. On any error the existing file is untouched
/// and the temp file is removed. A replaced file keeps its permission bits; a new one is 0644
/// (ciphertext, meant for version control).
pub fn write_encrypted_atomically(
    path: &Path,
    plaintext: &SecretBytes,
    recipients: &Recipients,
) -> Result<(), SecretsError> {
    let ciphertext = encrypt_armored(plaintext, recipients)?;
    write_atomically(path, &ciphertext)
}

/// Replace `path` with `contents` atomically (see [`write_encrypted_atomically`]).
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), SecretsError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "secrets".into());
    let mode = match fs_err::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => 0o644,
    };
    let context = format!("write {}", path.display());
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| {
            SecretsError::io(
                format!("{context}: create temp file in {}", dir.display()),
                e,
            )
        })?;
    temp.write_all(contents)
        .and_then(|()| {
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| SecretsError::io(format!("{context}: write temp file"), e))?;
    temp.persist(path)
        .map_err(|e| SecretsError::io(format!("{context}: rename temp file"), e.error))?;
    if let Ok(dir_handle) = std::fs::File::open(dir) {
        let _ = dir_handle.sync_all();
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipients_and_ids(dir: &Path) -> (Recipients, Identities) {
        let key = dir.join("key.txt");
        let public = super::super::identities::generate_identity_file(&key).unwrap();
        let recipients =
            Recipients::from_sources(&[public], "test: secrets.recipients", None).unwrap();
        let ids = Identities::from_file(
            &key,
            super::super::identities::IdentitySource::Explicit(key.clone()),
        )
        .unwrap();
        (recipients, ids)
    }

    #[test]
    fn new_file_is_0644_and_replaced_file_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (recipients, ids) = recipients_and_ids(dir.path());
        let path = dir.path().join("s.age");
        let secret = SecretBytes::new(b"bundle".to_vec());
        write_encrypted_atomically(&path, &secret, &recipients).unwrap();
        let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o644);
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_encrypted_atomically(&path, &secret, &recipients).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(decrypt_file(&path, &ids).unwrap(), secret);
    }

    #[test]
    fn failed_rename_leaves_target_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let (recipients, _ids) = recipients_and_ids(dir.path());
        // The target is a non-empty directory: rename(2) over it fails.
        let target = dir.path().join("occupied");
        fs_err::create_dir(&target).unwrap();
        fs_err::write(target.join("keep"), b"x").unwrap();
        let err =
            write_encrypted_atomically(&target, &SecretBytes::new(b"bundle".to_vec()), &recipients)
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with(&format!("write {}: rename temp file", target.display())),
            "{err}"
        );
        assert_eq!(fs_err::read(target.join("keep")).unwrap(), b"x");
        let names: Vec<String> = fs_err::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn binary_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (recipients, ids) = recipients_and_ids(dir.path());
        let secret = SecretBytes::new(vec![0u8, 1, 2, 255]);
        let ct = encrypt_binary(&secret, &recipients).unwrap();
        assert!(ct.starts_with(b"age-encryption.org/v1\n"));
        assert_eq!(decrypt(&ct, &ids, "f").unwrap(), secret);
    }

    #[test]
    fn crlf_armor_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (recipients, ids) = recipients_and_ids(dir.path());
        let secret = SecretBytes::new(b"bundle".to_vec());
        let armored = encrypt_armored(&secret, &recipients).unwrap();
        let crlf = String::from_utf8(armored).unwrap().replace('\n', "\r\n");
        assert_eq!(decrypt(crlf.as_bytes(), &ids, "f").unwrap(), secret);
    }
}
