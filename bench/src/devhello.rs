//! `devhello`: a copy of the `hello` sample as a crate of its own, for what exercises
//! `wasmkube dev` (`pod-bench hot-reload`, `tests/dev.rs`). It builds into the samples' target
//! directory, so the dependencies the samples compiled are reused and only the copy itself is
//! rebuilt; its package name keeps its binary apart from the samples' own `hello.wasm`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct Project {
    /// The crate's directory (its `src/` is what dev watches).
    pub dir: PathBuf,
    pub main: PathBuf,
    /// The build command, for `sh -c` in `dir`.
    pub build: String,
    /// Where the build puts the component.
    pub wasm: PathBuf,
}

impl Project {
    /// Copies `samples/hello` to `root/devhello`.
    pub fn create(samples: &Path, root: &Path) -> Result<Self> {
        let samples = samples.canonicalize().with_context(|| format!("the samples at {}", samples.display()))?;
        let dir = root.join("devhello");
        std::fs::create_dir_all(dir.join("src"))?;
        let manifest = std::fs::read_to_string(samples.join("hello/Cargo.toml"))?
            .replace("name = \"hello\"", "name = \"devhello\"")
            .replace("edition.workspace = true", "edition = \"2024\"")
            .replace("license.workspace = true", "license = \"Apache-2.0\"");
        // The samples' release profile, so the shared dependencies match.
        let workspace = "\n[workspace]\n\n[profile.release]\nopt-level = \"s\"\nlto = true\nstrip = true\n";
        std::fs::write(dir.join("Cargo.toml"), manifest + workspace)?;
        std::fs::copy(samples.join("Cargo.lock"), dir.join("Cargo.lock"))?;
        let main = dir.join("src/main.rs");
        std::fs::copy(samples.join("hello/src/main.rs"), &main)?;
        let target = samples.join("target");
        let build =
            format!("CARGO_TARGET_DIR={} cargo build --release --target wasm32-wasip2 --offline", target.display());
        Ok(Self { dir, main, build, wasm: target.join("wasm32-wasip2/release/devhello.wasm") })
    }

    /// Runs the build; how long it took.
    pub fn build_now(&self) -> Result<Duration> {
        let started = Instant::now();
        let out = std::process::Command::new("sh").arg("-c").arg(&self.build).current_dir(&self.dir).output()?;
        if !out.status.success() {
            bail!("building devhello: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(started.elapsed())
    }

    /// Rewrites the source: `edit` gets the current text.
    pub fn edit(&self, edit: impl FnOnce(String) -> String) -> Result<()> {
        let text = std::fs::read_to_string(&self.main)?;
        std::fs::write(&self.main, edit(text))?;
        Ok(())
    }

    /// Sets the version the service reports (hello's `VERSION`).
    pub fn set_version(&self, version: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.main)?;
        let start = text.find("const VERSION: &str = \"").context("hello's VERSION constant")?;
        let end = start + text[start..].find(";\n").context("the end of VERSION")?;
        self.edit(|text| format!("{}const VERSION: &str = \"{version}\"{}", &text[..start], &text[end..]))
    }
}
