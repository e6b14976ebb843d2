//! `zoe-echo` (`assets/echo.rs`): a static HTTP and WebSocket test server,
//! compiled here with the toolchain's `rustc` (std only, `crt-static`, so
//! it runs in a busybox image with no libc), and that image.

use crate::{FixtureError, io_err};
use std::path::{Path, PathBuf};

/// Where the image puts it.
pub const PATH_IN_IMAGE: &str = "/bin/zoe-echo";

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/echo.rs");

/// Compiles the server into `dir` (once: a later call finds it) and returns
/// its path.
pub fn binary(dir: &Path) -> Result<PathBuf, FixtureError> {
    let out = dir.join("zoe-echo");
    if out.exists() {
        return Ok(out);
    }
    let tmp = dir.join(format!("zoe-echo.{}", std::process::id()));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let st = std::process::Command::new(rustc)
        .args(["-O", "-C", "target-feature=+crt-static", "-C", "strip=symbols", "--edition", "2021", SOURCE, "-o"])
        .arg(&tmp)
        .status()
        .map_err(io_err("running rustc for zoe-echo"))?;
    if !st.success() {
        return Err(FixtureError::Setup(format!("rustc could not build {SOURCE} ({st})")));
    }
    std::fs::rename(&tmp, &out).map_err(io_err(format!("moving {}", tmp.display())))?;
    Ok(out)
}

/// Busybox with `zoe-echo` in it, under `reference`.
pub fn image(dir: &Path, reference: &str) -> Result<crate::BusyboxImage, FixtureError> {
    let bin = std::fs::read(binary(dir)?).map_err(io_err("reading zoe-echo"))?;
    crate::BusyboxImage::build_with(reference, &[(PATH_IN_IMAGE, &bin)])
        .map_err(|e| FixtureError::Setup(format!("building the zoe-echo image: {e}")))
}
