//! Secrets at rest: age recipients and identities, encryption of the secrets bundle and of every
//! store object derived from it, and private scratch space that never hits a persistent disk.

mod bundle;
mod commands;
mod crypt;
mod error;
mod identities;
mod object_cipher;
mod pipe;
mod private_dir;
mod recipients;
mod secret_bytes;
mod talosctl_gen;

pub use bundle::{BundleCa, bundle_ca, bundle_hash, validate_bundle};
pub use commands::{
    BundleSource, EditGuard, EditOutcome, InitOptions, SecretsCommands, choose_editor,
};
pub use crypt::{
    decrypt, decrypt_file, encrypt_armored, encrypt_binary, write_encrypted_atomically,
};
pub use error::SecretsError;
pub use identities::{
    ENV_SOPS_KEY, ENV_SOPS_KEY_FILE, ENV_TALIX_KEY_FILE, Identities, IdentitySource,
    generate_identity_file,
};
pub use object_cipher::{AgeObjectCipher, LazyIdentities};
pub use pipe::{PipeFeeder, SecretPipe};
pub use private_dir::{ENV_PRIVATE_TMP, PrivateDir, filesystem_magic, sweep_orphans};
pub use recipients::{
    MAX_RECIPIENTS_FILE_BYTES, Recipients, check_recipient, check_recipients_file,
    read_recipients_file,
};
pub use secret_bytes::SecretBytes;
pub use talosctl_gen::{generate_bundle_with_talosctl, parse_major_minor};
