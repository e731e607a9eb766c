//! `secrets`: decrypts the committed bundle, checks its structure and yields its identity (a
//! domain-separated blake3 of the plaintext). Nothing is stored: the plaintext never leaves
//! memory, and the hash alone is what dependants key on, so re-encryption changes nothing
//! downstream.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engine::{BuildContext, Builder, BuiltOutput, StepError};
use crate::secrets::{LazyIdentities, bundle_hash, decrypt_file, validate_bundle};

pub struct SecretsBuilder {
    pub identities: Arc<LazyIdentities>,
}

impl Builder for SecretsBuilder {
    fn build(&self, cx: &BuildContext<'_>) -> Result<BTreeMap<String, BuiltOutput>, StepError> {
        let path = cx.profile.workspace.secrets_file();
        if !path.exists() {
            return Err(cx.fail(format!(
                "{} does not exist\nhint: create it with `talix secrets init {}`",
                path.display(),
                cx.profile.source.display()
            )));
        }
        let ids = self.identities.get().map_err(|e| cx.fail(e))?;
        let bundle = decrypt_file(path, ids).map_err(|e| cx.fail(e.to_string()))?;
        validate_bundle(&bundle, &path.display().to_string())
            .map_err(|e| cx.fail(e.to_string()))?;
        Ok([(
            "bundle".to_string(),
            BuiltOutput::HashOnly(bundle_hash(&bundle)),
        )]
        .into())
    }
}
