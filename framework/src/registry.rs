//! Compile-time plugin catalog: every plugin registers its name, a one-line summary and an
//! example config with [`crate::register_plugin!`]; `latentlab plugins` prints it and the
//! conformance tests build every example.

use serde::Serialize;

/// The five plugin kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// Stage-1 model ([`crate::plugin::AutoencoderConfig`]).
    Autoencoder,
    /// Stage-2 network ([`crate::plugin::DenoiserConfig`]).
    Denoiser,
    /// Stage-2 process ([`crate::plugin::SamplerConfig`]).
    Sampler,
    /// Condition encoder ([`crate::plugin::ConditionerConfig`]).
    Conditioner,
    /// Metric family ([`crate::plugin::EvaluatorConfig`]).
    Evaluator,
}

impl PluginKind {
    /// All kinds in display order.
    pub const ALL: [PluginKind; 5] = [
        PluginKind::Autoencoder,
        PluginKind::Denoiser,
        PluginKind::Sampler,
        PluginKind::Conditioner,
        PluginKind::Evaluator,
    ];
    /// The config section this kind is chosen in.
    pub fn section(self) -> &'static str {
        match self {
            PluginKind::Autoencoder => "autoencoder",
            PluginKind::Denoiser => "denoiser",
            PluginKind::Sampler => "sampler",
            PluginKind::Conditioner => "conditioner",
            PluginKind::Evaluator => "evaluate.evaluators",
        }
    }
}

/// One catalog entry.
#[derive(Debug, Serialize)]
pub struct PluginEntry {
    /// Kind of plugin.
    pub kind: PluginKind,
    /// Public name (the config's `type`).
    pub name: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// A complete, valid config table in TOML (including `type`).
    pub example: &'static str,
}

inventory::collect!(PluginEntry);

/// All registered plugins sorted by kind then name.
pub fn catalog() -> Vec<&'static PluginEntry> {
    let mut all: Vec<_> = inventory::iter::<PluginEntry>.into_iter().collect();
    all.sort_by_key(|e| (e.kind, e.name));
    all
}

/// Registered plugins of one kind.
pub fn of_kind(kind: PluginKind) -> Vec<&'static PluginEntry> {
    catalog().into_iter().filter(|e| e.kind == kind).collect()
}

/// Names of registered plugins of one kind, for error messages.
pub fn names(kind: PluginKind) -> Vec<&'static str> {
    of_kind(kind).into_iter().map(|e| e.name).collect()
}

/// Registers a plugin in the catalog.
///
/// ```ignore
/// latentlab_framework::register_plugin!(Sampler, "ddim", "Deterministic DDIM sampling", "type = \"ddim\"\nsteps = 50");
/// ```
#[macro_export]
macro_rules! register_plugin {
    ($kind:ident, $name:expr, $summary:expr, $example:expr) => {
        $crate::inventory::submit! {
            $crate::registry::PluginEntry {
                kind: $crate::registry::PluginKind::$kind,
                name: $name,
                summary: $summary,
                example: $example,
            }
        }
    };
}
