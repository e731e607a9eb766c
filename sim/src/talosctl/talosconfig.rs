//! The talosctl client config file (talosconfig): where it is found (talosctl-cli.md §1), how it
//! reads and writes (formats.md §2, 4-space YAML), and the current-context lookup that every
//! node-facing command needs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::machineconfig::yaml::{self, Yaml};

/// Errors reading or writing a talosconfig.
#[derive(Debug, thiserror::Error)]
pub enum TalosconfigError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("failed to parse talosconfig {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("no context is set")]
    NoContext,
    #[error("context \"{0}\" is not defined")]
    UndefinedContext(String),
    #[error("context \"{0}\" not found in config")]
    ContextNotFound(String),
}

/// One context of a talosconfig. `Debug` hides the key.
#[derive(Clone, Default, PartialEq)]
pub struct TalosContext {
    pub endpoints: Vec<String>,
    pub nodes: Vec<String>,
    /// base64 of the Talos CA certificate PEM.
    pub ca: String,
    /// base64 of the client certificate PEM.
    pub crt: String,
    /// base64 of the client key PEM.
    pub key: String,
    /// Keys this simulator does not interpret (`auth`, `cluster`), kept verbatim.
    pub extra: Vec<(String, Yaml)>,
}

impl fmt::Debug for TalosContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TalosContext")
            .field("endpoints", &self.endpoints)
            .field("nodes", &self.nodes)
            .field("has_key", &!self.key.is_empty())
            .finish_non_exhaustive()
    }
}

/// A whole talosconfig.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Talosconfig {
    pub context: String,
    pub contexts: BTreeMap<String, TalosContext>,
}

fn string_list(node: Option<&Yaml>) -> Vec<String> {
    node.and_then(Yaml::as_seq)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| match v {
            Yaml::Str(s) => Some(s.clone()),
            Yaml::Int(i) => Some(i.to_string()),
            _ => None,
        })
        .collect()
}

impl Talosconfig {
    /// Parses talosconfig text.
    pub fn parse(text: &str, path_for_errors: &Path) -> Result<Talosconfig, TalosconfigError> {
        let doc = yaml::parse_one(text).map_err(|e| TalosconfigError::Parse {
            path: path_for_errors.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut config = Talosconfig {
            context: doc
                .get("context")
                .and_then(Yaml::as_str)
                .unwrap_or_default()
                .to_string(),
            contexts: BTreeMap::new(),
        };
        for (name, ctx) in doc
            .get("contexts")
            .and_then(Yaml::as_map)
            .unwrap_or_default()
        {
            let text_of = |k: &str| {
                ctx.get(k)
                    .and_then(Yaml::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut context = TalosContext {
                endpoints: string_list(ctx.get("endpoints")),
                nodes: string_list(ctx.get("nodes")),
                ca: text_of("ca"),
                crt: text_of("crt"),
                key: text_of("key"),
                extra: Vec::new(),
            };
            for (k, v) in ctx.as_map().unwrap_or_default() {
                if !["endpoints", "nodes", "ca", "crt", "key"].contains(&k.as_str()) {
                    context.extra.push((k.clone(), v.clone()));
                }
            }
            // Deprecated `target` is appended to endpoints and dropped on load (upstream
            // `Context.upgrade`).
            if let Some(index) = context.extra.iter().position(|(k, _)| k == "target") {
                let (_, target) = context.extra.remove(index);
                if let Some(target) = target.as_str().filter(|t| !t.is_empty()) {
                    context.endpoints.push(target.to_string());
                }
            }
            config.contexts.insert(name.clone(), context);
        }
        Ok(config)
    }

    /// Reads a talosconfig file.
    pub fn load(path: &Path) -> Result<Talosconfig, TalosconfigError> {
        let text = fs_err::read_to_string(path)?;
        Talosconfig::parse(&text, path)
    }

    /// Encodes as talosctl does (4-space YAML, Go field order, contexts sorted by name).
    pub fn to_yaml(&self) -> String {
        let contexts: Vec<(String, Yaml)> = self
            .contexts
            .iter()
            .map(|(name, c)| {
                let mut entries: Vec<(String, Yaml)> = Vec::new();
                entries.push((
                    "endpoints".to_string(),
                    Yaml::Seq(c.endpoints.iter().map(Yaml::str).collect()),
                ));
                if !c.nodes.is_empty() {
                    entries.push((
                        "nodes".to_string(),
                        Yaml::Seq(c.nodes.iter().map(Yaml::str).collect()),
                    ));
                }
                for (k, v) in [("ca", &c.ca), ("crt", &c.crt), ("key", &c.key)] {
                    if !v.is_empty() {
                        entries.push((k.to_string(), Yaml::str(v)));
                    }
                }
                entries.extend(c.extra.iter().cloned());
                (name.clone(), Yaml::Map(entries))
            })
            .collect();
        yaml::emit(&Yaml::from_pairs([
            ("context", Yaml::str(&self.context)),
            ("contexts", Yaml::Map(contexts)),
        ]))
    }

    /// Writes the file with mode `mode`, creating the parent directory (0700) if needed.
    pub fn save(&self, path: &Path, mode: u32) -> Result<(), TalosconfigError> {
        write_private(path, self.to_yaml().as_bytes(), mode)?;
        Ok(())
    }

    /// The context selected by `--context` or the file's `context`, for node-facing commands
    /// (error texts of the client: `context "x" not found in config`).
    pub fn current_context(
        &self,
        override_name: Option<&str>,
    ) -> Result<(&str, &TalosContext), TalosconfigError> {
        let name = override_name.unwrap_or(&self.context);
        if name.is_empty() {
            return Err(TalosconfigError::NoContext);
        }
        self.contexts
            .get_key_value(name)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| TalosconfigError::ContextNotFound(name.to_string()))
    }
}

/// Writes bytes with the given mode (applied even when the file existed), parent dir 0700.
pub fn write_private(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{e} ({})", parent.display())))?;
    }
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Finds the talosconfig per talosctl-cli.md §1, creating an empty one where talosctl would.
pub fn resolve_path(explicit: Option<&str>) -> Result<PathBuf, TalosconfigError> {
    let empty = Talosconfig::default();
    if let Some(path) = explicit.filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.exists() {
            empty.save(&path, 0o600)?;
        }
        return Ok(path);
    }
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    if let Some(env) = std::env::var_os("TALOSCONFIG").filter(|v| !v.is_empty()) {
        candidates.push((PathBuf::from(env), true));
    }
    let talos_home = std::env::var_os("TALOS_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let home_config = match talos_home {
        Some(dir) => Some(dir.join("config")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".talos").join("config")),
    };
    if let Some(p) = home_config {
        candidates.push((p, true));
    }
    candidates.push((PathBuf::from("/var/run/secrets/talos.dev/config"), false));
    if let Some((path, _)) = candidates.iter().find(|(p, _)| p.exists()) {
        return Ok(path.clone());
    }
    let (path, _) = candidates
        .into_iter()
        .find(|(_, writable)| *writable)
        .ok_or_else(|| std::io::Error::other("no talosconfig path candidate"))?;
    empty.save(&path, 0o600)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_documented_layout() {
        let text = "context: demo\ncontexts:\n    demo:\n        endpoints: []\n        ca: Y2E=\n        crt: Y3J0\n        key: a2V5\n";
        let config = Talosconfig::parse(text, Path::new("x")).unwrap();
        assert_eq!(config.context, "demo");
        assert_eq!(config.to_yaml(), text);
        let mut with_nodes = config.clone();
        with_nodes.contexts.get_mut("demo").unwrap().nodes = vec!["10.5.0.2".to_string()];
        assert!(
            with_nodes
                .to_yaml()
                .contains("        nodes:\n            - 10.5.0.2\n")
        );
        assert!(!format!("{config:?}").contains("a2V5"));
    }

    #[test]
    fn deprecated_target_becomes_an_endpoint() {
        let text =
            "context: a\ncontexts:\n    a:\n        target: 10.5.0.2\n        endpoints: []\n";
        let config = Talosconfig::parse(text, Path::new("x")).unwrap();
        assert_eq!(config.contexts["a"].endpoints, ["10.5.0.2"]);
        assert_eq!(
            config.to_yaml(),
            "context: a\ncontexts:\n    a:\n        endpoints:\n            - 10.5.0.2\n"
        );
    }

    #[test]
    fn empty_config_encodes_like_talosctl() {
        assert_eq!(
            Talosconfig::default().to_yaml(),
            "context: \"\"\ncontexts: {}\n"
        );
    }
}
